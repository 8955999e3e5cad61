package resolver

import (
	"sort"
	"strings"

	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
	"github.com/blauth/blauth/sources/blconfig"
	"github.com/blauth/blauth/sources/dotenv"
	"github.com/blauth/blauth/sources/keyring"
)

// envLayer is an environment-like source: a .env, the caller's or the daemon's environment. Its
// credentials belong to the BL_WORKSPACE beside them, or to the chosen workspace when it names
// none; an API key ranks before client credentials.
func envLayer(prov sources.Provenance, caller bool, vars map[string]string) layer {
	where := func(v string) string {
		if prov.Where == "" {
			return v
		}
		return prov.Where + "#" + v
	}
	return layer{prov: prov, caller: caller, workspace: vars[sources.VarWorkspace], vars: vars,
		creds: func(ws, base string) []*sources.Credential {
			if owner := vars[sources.VarWorkspace]; owner != "" && owner != ws {
				return nil
			}
			var cs []*sources.Credential
			if k := vars[sources.VarAPIKey]; k != "" {
				cs = append(cs, &sources.Credential{Workspace: ws, Kind: ipc.KindAPIKey, APIKey: k, BaseURL: base,
					Source: sources.Provenance{Kind: prov.Kind, Where: where(sources.VarAPIKey)}})
			}
			if cc := vars[sources.VarClientCredentials]; cc != "" {
				cs = append(cs, &sources.Credential{Workspace: ws, Kind: ipc.KindClientCredentials, ClientCredentials: cc, BaseURL: base,
					Source: sources.Provenance{Kind: prov.Kind, Where: where(sources.VarClientCredentials)}})
			}
			return cs
		}}
}

// keyringLayer holds the secrets saved with blauth-helper login, one per workspace.
func keyringLayer(ring *keyring.Source) layer {
	return layer{prov: sources.Provenance{Kind: sources.SourceKeyring, Where: keyring.DefaultService},
		creds: func(ws, base string) []*sources.Credential {
			s, ok := ring.Secret(ws)
			if !ok {
				return nil
			}
			c := &sources.Credential{Workspace: ws, Kind: ipc.KindAPIKey, APIKey: s.Value, BaseURL: base,
				Source: sources.Provenance{Kind: sources.SourceKeyring, Where: keyring.DefaultService + "/" + ws}}
			if s.Kind == ipc.KindClientCredentials {
				c.Kind, c.APIKey, c.ClientCredentials = ipc.KindClientCredentials, "", s.Value
			}
			return []*sources.Credential{c}
		}}
}

// blLayer is the bl config: its context names a workspace, and each entry holds its own
// workspace's credentials, in the SDKs' order: API key, login session, client credentials.
func blLayer(bl *blconfig.Config, path string) layer {
	prov := sources.Provenance{Kind: sources.SourceBLConfig, Where: path}
	return layer{prov: prov, workspace: bl.Context.Workspace,
		creds: func(ws, base string) []*sources.Credential {
			w, ok := bl.Workspace(ws)
			if !ok {
				return nil
			}
			cr := w.Credentials
			var cs []*sources.Credential
			if cr.APIKey != "" {
				cs = append(cs, &sources.Credential{Workspace: ws, Kind: ipc.KindAPIKey, APIKey: cr.APIKey, BaseURL: base, Source: prov})
			}
			if cr.AccessToken != "" || cr.RefreshToken != "" {
				cs = append(cs, &sources.Credential{Workspace: ws, Kind: ipc.KindLogin, AccessToken: cr.AccessToken,
					RefreshToken: cr.RefreshToken, DeviceCode: cr.DeviceCode, BaseURL: base, Source: prov})
			}
			if cr.ClientCredentials != "" {
				cs = append(cs, &sources.Credential{Workspace: ws, Kind: ipc.KindClientCredentials, ClientCredentials: cr.ClientCredentials, BaseURL: base, Source: prov})
			}
			return cs
		}}
}

// summarize says what a .env sets, without its secrets.
func summarize(v dotenv.View) DotenvSummary {
	s := DotenvSummary{Path: v.Path, Workspace: v.Vars[sources.VarWorkspace], Lines: map[string]int{}}
	for k := range v.Vars {
		if strings.HasPrefix(k, "BL_") {
			s.Names = append(s.Names, k)
			s.Lines[k] = v.Lines[k]
		}
	}
	sort.Strings(s.Names)
	return s
}
