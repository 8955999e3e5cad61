package token

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestCheckURLNeverQuotesTheURL(t *testing.T) {
	for _, tt := range []struct {
		url, problem string
	}{
		{"https://api.blaxel.ai/v0", ""},
		{"http://127.0.0.1:8080/v0", ""},
		{"https://me:pw-secret@host/v0/%zz", "invalid %-escape"},
		{"https://me:pw-secret@ho st/v0", "host holds a character"},
		{"https://me:pw-secret@host:port/v0", "does not parse"},
		{"ftp://me:pw-secret@host/v0", "not an http or https URL"},
		{"https:///v0", "names no host"},
		{"api.blaxel.ai/v0", "not an http or https URL"},
	} {
		err := CheckURL(tt.url)
		if tt.problem == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.url, err)
			}
			continue
		}
		if !errors.Is(err, ErrBadURL) || !strings.Contains(err.Error(), tt.problem) {
			t.Errorf("%s: %v, want ErrBadURL saying %q", tt.url, err, tt.problem)
		}
		if err != nil && (strings.Contains(err.Error(), "pw-secret") || strings.Contains(err.Error(), "me:")) {
			t.Errorf("%s: the error quotes the URL: %v", tt.url, err)
		}
	}
}

func TestRedactURLDropsUserInfo(t *testing.T) {
	for in, want := range map[string]string{
		"https://me:pw@api.example.test/v0": "https://api.example.test/v0",
		"https://api.blaxel.ai/v0":          "https://api.blaxel.ai/v0",
		"https://me:pw@host/%zz":            "(a URL that does not parse)",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// An exchange against a base that does not parse fails as a configuration error, whichever
// dialect, without quoting the base.
func TestExchangeWithABadBaseIsABadURL(t *testing.T) {
	const base = "https://me:pw-secret@api.example.test/%zz"
	for name, c := range map[string]Client{"blaxel": &Blaxel{}, "oauth2": &OAuth2{}} {
		_, err := c.ClientCredentials(context.Background(), base, "aWQ6c2VjcmV0")
		if !errors.Is(err, ErrBadURL) || !IsPermanent(err) || strings.Contains(err.Error(), "pw-secret") || strings.Contains(err.Error(), "%zz") {
			t.Errorf("%s: %v, want a permanent ErrBadURL that does not quote the base", name, err)
		}
	}
}
