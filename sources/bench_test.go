package sources

import (
	"testing"
)

// benchDotenv is a project .env as people write them: comments, export prefixes, quotes, an
// inline comment, blank lines, and the Blaxel variables among others.
const benchDotenv = `# Project settings
export NODE_ENV=development
APP_NAME="my agent"
APP_PORT=8080 # the dev server
DATABASE_URL='postgres://app:app@localhost:5432/app?sslmode=disable'

# Blaxel
BL_WORKSPACE=acme-prod
BL_API_KEY="bl_aaaabbbbccccddddeeeeffff00001111"
BL_ENV=prod

OPENAI_API_KEY=sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx
LOG_LEVEL=debug
FEATURE_FLAGS="a,b,c"
MULTILINE="line one\nline two"
EMPTY=
`

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

func BenchmarkParseDotenv(b *testing.B) {
	data := []byte(benchDotenv)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		vars, errs := ParseDotenv(data)
		if len(errs) != 0 || vars[VarAPIKey] == "" {
			b.Fatalf("parse: %v %v", vars, errs)
		}
	}
}

func BenchmarkParseBLConfig(b *testing.B) {
	data := []byte(benchBLConfig)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		c, err := ParseBLConfig(data)
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
	old, err := ParseBLConfig(data)
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
