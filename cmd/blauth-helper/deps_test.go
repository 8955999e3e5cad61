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
// this fails here, naming the package.
func TestDependencies(t *testing.T) {
	const ipcPkg = "github.com/blauth/blauth/ipc"
	for _, tc := range []struct {
		name    string
		pkg     string
		allowed []string
	}{
		{"blauth-helper", ".", []string{"github.com/blauth/blauth/cmd/blauth-helper", ipcPkg}},
		{"ipc", "../../ipc", []string{ipcPkg}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			// Without -test, go list -deps follows the non-test build only: tests may import more.
			out, err := exec.CommandContext(ctx, "go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", tc.pkg).Output()
			if err != nil {
				t.Fatalf("go list: %v", err)
			}
			deps := strings.Fields(string(out))
			if len(deps) == 0 {
				t.Fatal("go list found no package at all")
			}
			for _, d := range deps {
				ok := false
				for _, a := range tc.allowed {
					ok = ok || d == a
				}
				if !ok {
					t.Errorf("%s depends on %s; it may use only the standard library and %v", tc.name, d, tc.allowed[1:])
				}
			}
		})
	}
}
