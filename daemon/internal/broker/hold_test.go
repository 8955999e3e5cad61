package broker

import (
	"context"
	"testing"
	"time"

	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
)

// TestRefreshWakesOnlyThatCredentialsWatchers: two service accounts, each held by a watcher;
// a refresh of one closes its holder's channel and leaves the other's open.
func TestRefreshWakesOnlyThatCredentialsWatchers(t *testing.T) {
	f := newBrokerFixture(t, nil)
	other := &sources.Credential{Workspace: "other", Kind: ipc.KindClientCredentials, ClientCredentials: f.api.AddClient("sa2", "secret2"),
		BaseURL: f.api.Base, Source: sources.Provenance{Kind: sources.SourceDaemonEnv, Where: "BL_CLIENT_CREDENTIALS"}}
	first := f.mustGet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The second credential's token is half an hour younger, so that the first is due alone
	// (the refresh point is drawn between 35 % and 40 % of the 2-hour life).
	f.clock.Add(30 * time.Minute)
	if _, err := f.b.Get(ctx, other, 0, true); err != nil {
		t.Fatal(err)
	}
	c1, c2 := make(chan struct{}, 100), make(chan struct{}, 100)
	h1 := f.b.Hold(f.cred, func() { c1 <- struct{}{} })
	h2 := f.b.Hold(other, func() { c2 <- struct{}{} })
	defer h1.Release()
	defer h2.Release()

	// Step to just past the first token's refresh point (at most 65 % of its life left).
	for i := 0; i < 200; i++ {
		f.clock.Add(30 * time.Second)
		f.tick()
		select {
		case <-c1:
			select {
			case <-c2:
				t.Fatal("the refresh of one credential woke the watcher of another")
			default:
			}
			if got := f.mustGet(t); got.Token == first.Token {
				t.Fatal("woken, but the token is the old one")
			}
			return
		default:
		}
	}
	t.Fatal("the held credential's watcher was never woken by its refresh")
}

// TestReleasedHoldIsNotWoken: once released, a watcher's wake is not called again.
func TestReleasedHoldIsNotWoken(t *testing.T) {
	f := newBrokerFixture(t, nil)
	f.mustGet(t)
	woken := make(chan struct{}, 100)
	h := f.b.Hold(f.cred, func() { woken <- struct{}{} })
	h.Release()
	h.Release()
	if !f.b.Erase(f.cred, "") {
		t.Fatal("erase did nothing")
	}
	select {
	case <-woken:
		t.Fatal("a released hold was woken")
	default:
	}
	api := f.b.Hold(&sources.Credential{Workspace: "k", Kind: ipc.KindAPIKey, APIKey: "bl_x"}, func() {})
	api.Release() // an API key's hold holds nothing
}

// TestStatusSaysWhetherTheSessionRotates: after a refresh, a session's status says whether the
// endpoint issued a new refresh token; before any refresh it says nothing.
func TestStatusSaysWhetherTheSessionRotates(t *testing.T) {
	for _, rotate := range []bool{true, false} {
		f := newBrokerFixture(t, nil)
		f.api.SetRotate(rotate)
		access, refresh := f.api.NewSession("alice", "dc")
		cred := &sources.Credential{Workspace: "acme", Kind: ipc.KindLogin, AccessToken: access, RefreshToken: refresh, DeviceCode: "dc",
			BaseURL: f.api.Base, Source: sources.Provenance{Kind: sources.SourceBLConfig, Where: "config.yaml"}}
		ctx := context.Background()
		if _, err := f.b.Get(ctx, cred, 0, true); err != nil {
			t.Fatal(err)
		}
		if st, _ := f.b.Lookup(cred); st.RefreshTokenRotates != nil {
			t.Fatalf("rotation reported before any refresh: %v", *st.RefreshTokenRotates)
		}
		for i := 0; i < 400 && f.api.Count("refresh_token") == 0; i++ {
			f.clock.Add(30 * time.Second)
			f.tick()
		}
		st, _ := f.b.Lookup(cred)
		if st.RefreshTokenRotates == nil || *st.RefreshTokenRotates != rotate {
			t.Errorf("endpoint rotating %v: status says %v", rotate, st.RefreshTokenRotates)
		}
	}
}
