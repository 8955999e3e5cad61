package blconfig

import (
	"testing"
)

// benchBLConfig is a bl config in the current writer's format with a login session, an API key
// and a service account, as BLAXEL.md shows it, plus two more workspaces.
const benchBLConfig = `context:
  workspace: acme-prod
workspaces:
- name: acme-prod
  id: 8b1d6c1e-0000-4000-8000-00000000abcd
  credentials:
    access_token: eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyIiwiZXhwIjoxOTAwMDA3MjAwLCJpYXQiOjE5MDAwMDAwMDB9.c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJl
    refresh_token: rt-0123456789abcdef01234567
    expires_in: 7200
    device_code: dc-0123456789abcdef01234567
- name: acme-ci
  credentials:
    apiKey: "bl_aaaabbbbccccddddeeeeffff00001111"
- name: acme-sa
  credentials:
    client_credentials: "Y2xpZW50LWlkOmNsaWVudC1zZWNyZXQ="
  env: "dev"
- name: acme-staging
  id: 8b1d6c1e-0000-4000-8000-00000000abce
  credentials:
    apiKey: "bl_00001111222233334444555566667777"
- name: acme-dev
  credentials:
    client_credentials: "ZGV2LWlkOmRldi1zZWNyZXQ="
  env: "dev"
tracking: false
`

func BenchmarkParseBLConfig(b *testing.B) {
	data := []byte(benchBLConfig)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		c, err := Parse(data)
		if err != nil || len(c.Workspaces) != 5 {
			b.Fatalf("parse: %v", err)
		}
	}
}

// BenchmarkEditBLConfig is the surgical write-back of a refreshed session into benchBLConfig:
// locating the fields, editing them, and checking that the result reads back as intended (two
// config parses and two generic decodes). The file write itself is not included.
func BenchmarkEditBLConfig(b *testing.B) {
	data := []byte(benchBLConfig)
	old, err := Parse(data)
	if err != nil {
		b.Fatal(err)
	}
	w, _ := old.Workspace("acme-prod")
	next := w.Credentials
	next.AccessToken, next.RefreshToken = "eyJhbGciOi.new", "rt-rotated"
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		out, err := editBLConfig(data, old, false, "acme-prod", next)
		if err != nil || len(out) == 0 {
			b.Fatalf("edit: %v", err)
		}
	}
}
