package main

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/blauth/blauth/ipc"
)

// The daemon's error codes end blauth-proxy with blauth-helper's exit statuses (docs/HELPER.md),
// so a script branches the same way on either.
func TestDaemonErrorsExitAsTheHelpers(t *testing.T) {
	for code, want := range map[string]int{
		ipc.CodeNoWorkspace:        4,
		ipc.CodeNoCredentials:      4,
		ipc.CodeBadSource:          4,
		ipc.CodeAuthFailed:         5,
		ipc.CodeUnavailable:        6,
		ipc.CodeBusy:               6,
		ipc.CodeKeyringUnavailable: 7,
		ipc.CodeBadRequest:         2,
	} {
		var stderr bytes.Buffer
		err := fmt.Errorf("getting a token: %w", &ipc.Error{Code: code, Message: "what went wrong", Hint: "what to do"})
		if got := fail(env{stderr: &stderr}, err); got != want {
			t.Errorf("%s: exit status %d, want %d", code, got, want)
		}
		if want := "blauth: error: getting a token: what went wrong\nblauth: hint: what to do\n"; stderr.String() != want {
			t.Errorf("%s: stderr %q, want %q", code, stderr.String(), want)
		}
	}
}
