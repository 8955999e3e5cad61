package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// blauth-proxy links the standard library, package proxy, ipc and internal/backoff: nothing of
// the daemon (sources, the keyring, YAML, zerolog). A new import that breaks this fails here.
func TestDependencies(t *testing.T) {
	allowed := map[string]bool{
		"github.com/blauth/blauth/cmd/blauth-proxy":                true,
		"github.com/blauth/blauth/cmd/blauth-proxy/internal/proxy": true,
		"github.com/blauth/blauth/ipc":                             true,
		"github.com/blauth/blauth/internal/backoff":                true,
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatal("go list found no package at all")
	}
	for _, d := range deps {
		if !allowed[d] {
			t.Errorf("blauth-proxy depends on %s; it may use only the standard library, proxy, ipc and internal/backoff", d)
		}
	}
}
