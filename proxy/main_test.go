package proxy

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/internal/testkit/daemontest"
)

// testEnv is a real daemon in the test's process, on a real socket, serving one workspace
// (acme) with an API key the fake Blaxel API knows, and the Tokens following it.
type testEnv struct {
	api    *blaxeltest.Server
	socket string
	tokens *Tokens
}

const testKey = "bl-key-acme-0001"

// newTestEnv starts the fake API and a daemon whose own environment holds acme's API key and
// BL_API_URL, and Tokens following that daemon until the test ends.
func newTestEnv(t testing.TB) *testEnv {
	t.Helper()
	api := blaxeltest.New(0)
	t.Cleanup(api.Close)
	api.AddAPIKey(testKey, "acme")
	socket := daemontest.Start(t, daemontest.Options{API: api, Env: []string{"BL_WORKSPACE=acme", "BL_API_KEY=" + testKey}}).Socket
	return &testEnv{api: api, socket: socket, tokens: followTokens(t, Selection{Socket: socket})}
}

// followTokens runs Tokens for sel until the test ends.
func followTokens(t testing.TB, sel Selection) *Tokens {
	t.Helper()
	tokens, err := NewTokens(sel, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = tokens.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("Tokens.Run did not return within 30 s of its context's end")
		}
	})
	return tokens
}

func TestMain(m *testing.M) {
	// Nothing of the environment of whoever runs the tests may reach the daemons they start.
	for _, k := range []string{"BL_WORKSPACE", "BL_API_KEY", "BL_CLIENT_CREDENTIALS", "BL_API_URL", "BL_ENV", "BL_RUN_URL", "BLAUTH_SOCKET"} {
		os.Unsetenv(k)
	}
	os.Exit(m.Run())
}
