package server

import (
	"testing"

	"github.com/blauth/blauth/ipc"
)

// What a scoped socket answers names sources by kind, drops what a .env sets, strips user info
// from the API base, and replaces a token's hint (which may name a local path).
func TestScopeRedactsWhatIsLocal(t *testing.T) {
	tok := ipc.Token{Workspace: "a", Token: "t", Kind: ipc.KindLogin, Source: "bl_config:/home/me/.blaxel/config.yaml",
		APIURL: "https://me:pw@api.example.test/v0", Hint: "could not save /home/me/.blaxel/config.yaml",
		Dotenv: "/home/me/proj/.env", DotenvWorkspace: "a", DotenvSets: []string{"BL_WORKSPACE"}}
	m := tok.Message()
	NewScope([]string{"a"}).redact(m)
	got, err := ipc.ParseToken(m)
	if err != nil {
		t.Fatal(err)
	}
	if got.Source != "bl_config" || got.APIURL != "https://api.example.test/v0" || got.Dotenv != "" || got.DotenvSets != nil || got.Token != "t" {
		t.Fatalf("redacted: %+v", got)
	}
	for _, f := range m.Fields {
		if f.Key == ipc.KeyHint && (f.Value == tok.Hint || len(f.Value) == 0) {
			t.Fatalf("hint kept as is: %q", f.Value)
		}
	}
}
