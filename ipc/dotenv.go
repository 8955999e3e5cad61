package ipc

import (
	"fmt"
	"strings"
)

// DotenvConflict says why a command should not be run with the variables a get answered t sets
// (blauth-helper exec), or behind a proxy (exec --proxy, blauth-proxy exec), in the directory
// whose .env t describes: Blaxel's SDKs read ./.env at start and let it win over the
// environment. A .env naming another workspace would pair the token with the wrong workspace;
// one holding a credential of its own would replace the token; one setting BL_API_URL or
// BL_RUN_URL would send the command's requests, with the token (or the proxy's secret), to
// that URL instead of where the token belongs or around the proxy. It returns an *Error with
// code bad_request naming the file and line, or nil.
func DotenvConflict(t *Token, viaProxy bool) error {
	if t.Dotenv == "" {
		return nil
	}
	at := func(name string) string {
		if n := t.DotenvLines[name]; n > 0 {
			return fmt.Sprintf("%s line %d", t.Dotenv, n)
		}
		return t.Dotenv
	}
	if t.DotenvWorkspace != "" && t.DotenvWorkspace != t.Workspace {
		return &Error{Code: CodeBadRequest,
			Message: fmt.Sprintf("%s sets BL_WORKSPACE=%s, and Blaxel's SDKs let ./.env win over the environment: the command would send %s's token for workspace %s", at("BL_WORKSPACE"), t.DotenvWorkspace, t.Workspace, t.DotenvWorkspace),
			Hint:    "run it from another directory, drop -w to use the .env's workspace, or remove BL_WORKSPACE from " + t.Dotenv}
	}
	// The token served came from this .env itself: what else it sets goes with it.
	ownCredential := strings.HasPrefix(t.Source, "dotenv:"+t.Dotenv+"#")
	for _, name := range t.DotenvSets {
		var why string
		switch name {
		case "BL_API_KEY", "BL_CLIENT_CREDENTIALS":
			if !ownCredential {
				why = "the command would not use the token for " + t.Workspace + " that exec gives it"
			}
		case "BL_API_URL", "BL_RUN_URL":
			switch {
			case viaProxy:
				why = "the command would send its requests to that URL, around the proxy"
			case !ownCredential:
				why = "the command would send the token for " + t.Workspace + " to that URL, not to the API it was issued for"
			}
		}
		if why != "" {
			return &Error{Code: CodeBadRequest,
				Message: fmt.Sprintf("%s sets %s, and Blaxel's SDKs let ./.env win over the environment: %s", at(name), name, why),
				Hint:    "run it from another directory, or remove " + name + " from " + t.Dotenv + " (blauthd then serves what the rest of your sources hold)"}
		}
	}
	return nil
}
