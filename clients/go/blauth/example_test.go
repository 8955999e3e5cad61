package blauth_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"

	"golang.org/x/oauth2"

	"github.com/blauth/blauth/clients/go/blauth"
)

// A long-running program: one watch on blauthd, and an HTTP client whose every request carries
// the daemon's latest token and the workspace.
func ExampleNewTokenSource() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	ts, err := blauth.NewTokenSource(ctx, blauth.Options{Workspace: "my-workspace"})
	if err != nil {
		log.Fatal(err) // blauth.ErrorCode(err) says why: no_credentials, auth_failed, …
	}
	defer ts.Close()

	client := blauth.NewClient(ctx, ts)
	resp, err := client.Get("https://api.blaxel.ai/v0/models")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	fmt.Println(resp.Status)
}

// One token, for a short program.
func ExampleToken() {
	tok, err := blauth.Token(context.Background(), blauth.Options{})
	if err != nil {
		log.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "https://api.blaxel.ai/v0/models", nil)
	req.Header.Set(blauth.HeaderAuthorization, "Bearer "+tok.AccessToken)
	req.Header.Set(blauth.HeaderWorkspace, blauth.TokenWorkspace(tok))
}

// golang.org/x/oauth2's own client sets Authorization: Bearer, which Blaxel's API accepts too;
// it sets no workspace header, so give it a base transport that does.
func ExampleTokenSource_oauth2() {
	ctx := context.Background()
	ts, err := blauth.NewTokenSource(ctx, blauth.Options{Workspace: "my-workspace"})
	if err != nil {
		log.Fatal(err)
	}
	defer ts.Close()
	base := &http.Client{Transport: workspaceHeader{ts.Workspace()}}
	client := oauth2.NewClient(context.WithValue(ctx, oauth2.HTTPClient, base), ts)
	_, _ = client.Get("https://api.blaxel.ai/v0/models")
}

type workspaceHeader struct{ name string }

func (w workspaceHeader) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(blauth.HeaderWorkspace, w.name)
	return http.DefaultTransport.RoundTrip(r)
}
