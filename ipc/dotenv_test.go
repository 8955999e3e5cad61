package ipc

import (
	"reflect"
	"strings"
	"testing"
)

// What a .env sets, and on which line, survives the wire; a daemon that sends no lines still
// gets a refusal naming the file.
func TestDotenvLinesOnTheWire(t *testing.T) {
	tok := Token{Workspace: "a", Token: "t", Kind: KindAPIKey, Source: "bl_config", Dotenv: "/p/.env",
		DotenvSets: []string{"BL_API_URL", "BL_WORKSPACE"}, DotenvLines: map[string]int{"BL_API_URL": 4, "BL_WORKSPACE": 1}}
	got, err := ParseToken(tok.Message())
	if err != nil || !reflect.DeepEqual(got.DotenvLines, tok.DotenvLines) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	if err := DotenvConflict(got, false); ErrorCode(err) != CodeBadRequest || !strings.Contains(err.Error(), "/p/.env line 4 sets BL_API_URL") {
		t.Fatalf("conflict: %v", err)
	}
	got.DotenvLines = nil // an older daemon
	if err := DotenvConflict(got, true); err == nil || !strings.Contains(err.Error(), "/p/.env sets BL_API_URL") {
		t.Fatalf("conflict without lines: %v", err)
	}
}

// The run domains of blauth's config file survive the wire, and a token without them has none.
func TestRunDomainsOnTheWire(t *testing.T) {
	tok := Token{Workspace: "a", Token: "t", Kind: KindAPIKey, Source: "bl_config", RunDomains: []string{"x.example.com", "127.0.0.1"}}
	got, err := ParseToken(tok.Message())
	if err != nil || !reflect.DeepEqual(got.RunDomains, tok.RunDomains) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	tok.RunDomains = nil
	if got, err := ParseToken(tok.Message()); err != nil || got.RunDomains != nil || got.Message().Value(KeyRunDomains) != "" {
		t.Fatalf("without run domains: %+v %v", got, err)
	}
}
