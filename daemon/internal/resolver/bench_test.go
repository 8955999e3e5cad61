package resolver

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
	"github.com/blauth/blauth/sources/blconfig"
	"github.com/blauth/blauth/sources/dotenv"
)

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

// benchResolver is a resolver with a running watcher, so that a caller's .env is read once and
// then served from the cache, as in the daemon.
func benchResolver(b *testing.B) (*Resolver, string) {
	b.Helper()
	w := startWatcher(b, zerolog.Nop(), 0)
	home := b.TempDir()
	blPath := blconfig.DefaultPath(home)
	if err := os.MkdirAll(filepath.Dir(blPath), 0o700); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(blPath, []byte(benchBLConfig), 0o600); err != nil {
		b.Fatal(err)
	}
	r := New(context.Background(), Config{
		Environ:      []string{"BL_WORKSPACE=acme-prod", "BL_CLIENT_CREDENTIALS=Y2xpZW50LWlkOmNsaWVudC1zZWNyZXQ=", "HOME=" + home},
		BLConfigPath: blPath,
		Watcher:      w,
		Log:          zerolog.Nop(),
	})
	b.Cleanup(r.Close)
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, dotenv.Name), []byte(benchDotenv), 0o600); err != nil {
		b.Fatal(err)
	}
	return r, dir
}

// BenchmarkResolveCachedDotenv is the resolution of a helper's request from a project
// directory whose .env is already cached and watched: the .env wins over the daemon's own
// environment and the bl config.
func BenchmarkResolveCachedDotenv(b *testing.B) {
	r, dir := benchResolver(b)
	req := Request{Dir: dir, Env: map[string]string{sources.VarWorkspace: "acme-prod"}}
	if res, err := r.Resolve(req); err != nil || res.Credential.Source.Kind != sources.SourceDotenv {
		b.Fatalf("warm-up resolve: %v", err)
	}
	b.ReportAllocs()
	for b.Loop() {
		res, err := r.Resolve(req)
		if err != nil || res.Credential.Kind != ipc.KindAPIKey {
			b.Fatalf("resolve: %v", err)
		}
	}
	b.StopTimer()
	if n := r.WatchedDotenvs(); n != 1 {
		b.Fatalf("%d .env files cached, want 1", n)
	}
}

// BenchmarkResolveCachedDotenvParallel is the same resolution from every core at once: the
// resolver's lock is on this path.
func BenchmarkResolveCachedDotenvParallel(b *testing.B) {
	r, dir := benchResolver(b)
	req := Request{Dir: dir, Env: map[string]string{sources.VarWorkspace: "acme-prod"}}
	if _, err := r.Resolve(req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.Resolve(req); err != nil {
				b.Errorf("resolve: %v", err)
				return
			}
		}
	})
}

// BenchmarkResolveDaemonEnv is the reference: a request without a directory, answered from
// the daemon's own environment.
func BenchmarkResolveDaemonEnv(b *testing.B) {
	r, _ := benchResolver(b)
	req := Request{}
	b.ReportAllocs()
	for b.Loop() {
		res, err := r.Resolve(req)
		if err != nil || res.Credential.Source.Kind != sources.SourceDaemonEnv {
			b.Fatalf("resolve: %v", err)
		}
	}
}
