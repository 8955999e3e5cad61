package proxy

import (
	"errors"
	"strings"
	"testing"

	"github.com/blauth/blauth/ipc"
)

// The proxy builds its watch request as every client does: a directory longer than blauthd
// accepts is refused before anything is sent, as the helper refuses it.
func TestNewTokensRefusesWhatCannotBeSent(t *testing.T) {
	for name, sel := range map[string]Selection{
		"directory over MaxCwd":      {Dir: "/" + strings.Repeat("d", ipc.MaxCwd)},
		"variable with a line break": {Dir: "/", Environ: []string{"BL_API_KEY=a\nb"}},
	} {
		sel.Socket = "/nonexistent/blauthd.sock"
		var re *ipc.RequestError
		if _, err := NewTokens(sel, nil); !errors.As(err, &re) {
			t.Errorf("%s: NewTokens = %v, want an ipc.RequestError", name, err)
		}
	}
}
