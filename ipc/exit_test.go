package ipc

import (
	"errors"
	"fmt"
	"testing"
)

// The statuses docs/HELPER.md lists for each answer code, for the helper and blauth-proxy alike.
func TestExitStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{&Error{Code: CodeNoWorkspace}, 4},
		{&Error{Code: CodeNoCredentials}, 4},
		{fmt.Errorf("get a token: %w", &Error{Code: CodeBadSource}), 4},
		{&Error{Code: CodeAuthFailed}, 5},
		{&Error{Code: CodeUnavailable}, 6},
		{&Error{Code: CodeBusy}, 6},
		{&Error{Code: CodeKeyringUnavailable}, 7},
		{&Error{Code: CodeBadRequest}, 2},
		{&Error{Code: CodeForbidden}, 1},
		{&Error{Code: "a code of a later version"}, 1},
		{fmt.Errorf("%w: /run/blauthd.sock: no such file", ErrUnreachable), 3},
		{fmt.Errorf("watch: %w", &RequestError{Message: "BL_API_KEY holds a line break"}), 2},
		{errors.New("anything else"), 1},
	} {
		if got := ExitStatus(tc.err); got != tc.want {
			t.Errorf("ExitStatus(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}
