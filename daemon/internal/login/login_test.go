package login

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/daemon/internal/token"
)

// deviceEndpoint answers device logins: every poll says pending until deny is set, then the
// user's refusal (a permanent error), so a test decides when logins end.
type deviceEndpoint struct {
	token.Client
	starts atomic.Int32
	deny   atomic.Bool
}

func (e *deviceEndpoint) DeviceAuth(context.Context, string) (*token.DeviceAuth, error) {
	n := e.starts.Add(1)
	return &token.DeviceAuth{DeviceCode: fmt.Sprint("dc", n), UserCode: "ABCD", Interval: 1, ExpiresIn: 60}, nil
}

func (e *deviceEndpoint) DeviceToken(context.Context, string, *token.DeviceAuth) (*token.Token, error) {
	if e.deny.Load() {
		return nil, &token.Error{Op: "device login", Status: 400, Code: "access_denied", Permanent: true}
	}
	return nil, &token.Error{Op: "device login", Status: 400, Code: token.CodeAuthorizationPending}
}

func newFlows(t *testing.T, e *deviceEndpoint) *Flows {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return New(ctx, Config{Tokens: e, Log: zerolog.Nop(),
		Save: func(string, string, *token.Token) error { return errors.New("not expected") }})
}

// MaxFlows bounds the logins in progress: a ninth is refused without asking the endpoint, and
// once the eight have ended (their outcomes still kept for keepEnded) new logins start again.
func TestMaxFlowsCountsOnlyLoginsInProgress(t *testing.T) {
	e := &deviceEndpoint{}
	l := newFlows(t, e)
	ctx := context.Background()
	var ids []string
	for i := range MaxFlows {
		id, _, err := l.Start(ctx, fmt.Sprint("ws", i), "http://127.0.0.1:1/v0")
		if err != nil {
			t.Fatalf("login %d: %v", i, err)
		}
		ids = append(ids, id)
	}
	if _, _, err := l.Start(ctx, "ws-extra", "http://127.0.0.1:1/v0"); !errors.Is(err, ErrTooMany) {
		t.Fatalf("a login beyond %d in progress: %v, want ErrTooMany", MaxFlows, err)
	}
	if n := e.starts.Load(); n != MaxFlows {
		t.Errorf("the refused login asked the endpoint: %d device-auth requests, want %d", n, MaxFlows)
	}
	// A login for a workspace already logging in replaces that one: not refused.
	if _, _, err := l.Start(ctx, "ws0", "http://127.0.0.1:1/v0"); err != nil {
		t.Fatalf("restarting ws0's login: %v", err)
	}

	e.deny.Store(true)
	for _, id := range ids[1:] {
		if _, err := l.Wait(ctx, id, 10*time.Second); err == nil || errors.Is(err, ErrPending) {
			t.Fatalf("flow %s: %v, want the user's refusal", id, err)
		}
	}
	if _, _, err := l.Start(ctx, "ws-next", "http://127.0.0.1:1/v0"); err != nil {
		t.Fatalf("after the logins ended (kept for %s) a new one was refused: %v", keepEnded, err)
	}
}
