package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The helper starts on every git push and every script call: it links the standard library and
// package ipc, nothing else, and ipc links the standard library only. A new import that breaks
// this fails here, naming the package. Nor does the helper link HTTP or TLS: the proxy's live
// in blauth-proxy (see proxy.go).
func TestDependencies(t *testing.T) {
	const ipcPkg = "github.com/blauth/blauth/ipc"
	for _, tc := range []struct {
		name      string
		pkg       string
		allowed   []string
		forbidden []string // packages of the standard library it must not link
	}{
		{"blauth-helper", ".", []string{"github.com/blauth/blauth/cmd/blauth-helper", ipcPkg}, []string{"net/http", "crypto/tls"}},
		{"ipc", "../../ipc", []string{ipcPkg}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			deps, std := goListDeps(t, tc.pkg)
			for _, d := range deps {
				ok := false
				for _, a := range tc.allowed {
					ok = ok || d == a
				}
				if !ok {
					t.Errorf("%s depends on %s; it may use only the standard library and %v", tc.name, d, tc.allowed[1:])
				}
			}
			for _, d := range std {
				for _, f := range tc.forbidden {
					if d == f {
						t.Errorf("%s links %s; HTTP belongs in blauth-proxy", tc.name, d)
					}
				}
			}
		})
	}
}

// goListDeps lists the packages pkg links, outside the standard library and in it. Without
// -test, go list -deps follows the non-test build only: tests may import more.
func goListDeps(t *testing.T, pkg string) (deps, std []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "list", "-deps", "-f", "{{.Standard}} {{.ImportPath}}", pkg).Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if isStd, path, ok := strings.Cut(line, " "); ok && isStd == "true" {
			std = append(std, path)
		} else if ok {
			deps = append(deps, path)
		}
	}
	if len(deps) == 0 {
		t.Fatal("go list found no package at all")
	}
	return deps, std
}
