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
	return layer{prov: prov, caller: caller, workspace: vars[sources.VarWorkspace], holds: envCreds, env: envVars{
		apiKey: vars[sources.VarAPIKey], clientCredentials: vars[sources.VarClientCredentials],
		apiURL: vars[sources.VarAPIURL], blEnv: vars[sources.VarEnv]}}
}

// envVars are the variables of an environment-like source that resolving reads, read out of
// it once (the daemon's own environment, once for good).
type envVars struct{ apiKey, clientCredentials, apiURL, blEnv string }

// keyringLayer holds the secrets saved with blauth-helper login, one per workspace.
func keyringLayer(ring *keyring.Source) layer {
	return layer{prov: sources.Provenance{Kind: sources.SourceKeyring, Where: keyring.DefaultService}, ring: ring, holds: keyringCreds}
}

// blLayer is the bl config: its context names a workspace, and each entry holds its own
// workspace's credentials, in the SDKs' order: API key, login session, client credentials.
func blLayer(bl *blconfig.View, path string) layer {
	return layer{prov: sources.Provenance{Kind: sources.SourceBLConfig, Where: path}, workspace: bl.Context.Workspace, bl: bl, holds: blCreds}
}

// What a layer holds credentials in.
const (
	noCreds = iota
	envCreds
	keyringCreds
	blCreds
)

// appendCreds appends the credentials l holds for ws, in Blaxel's order within one source, each
// going to base.
func (r *Resolver) appendCreds(cs []*sources.Credential, l *layer, ws, base string) []*sources.Credential {
	// A credential equal, field by field, to one served recently is that one: most requests are
	// served by the same few credentials, so most resolutions make none.
	add := func(c sources.Credential) { cs = append(cs, r.creds.Get(c, newCredential)) }
	switch l.holds {
	case envCreds:
		if owner := l.workspace; owner != "" && owner != ws {
			return cs
		}
		where := func(v string) string {
			if l.prov.Where == "" {
				return v
			}
			return l.prov.Where + "#" + v
		}
		if k := l.env.apiKey; k != "" {
			add(sources.Credential{Workspace: ws, Kind: ipc.KindAPIKey, APIKey: k, BaseURL: base,
				Source: sources.Provenance{Kind: l.prov.Kind, Where: where(sources.VarAPIKey)}})
		}
		if cc := l.env.clientCredentials; cc != "" {
			add(sources.Credential{Workspace: ws, Kind: ipc.KindClientCredentials, ClientCredentials: cc, BaseURL: base,
				Source: sources.Provenance{Kind: l.prov.Kind, Where: where(sources.VarClientCredentials)}})
		}
	case keyringCreds:
		s, ok := l.ring.Secret(ws)
		if !ok {
			return cs
		}
		c := sources.Credential{Workspace: ws, Kind: ipc.KindAPIKey, APIKey: s.Value, BaseURL: base,
			Source: sources.Provenance{Kind: sources.SourceKeyring, Where: keyring.DefaultService + "/" + ws}}
		if s.Kind == ipc.KindClientCredentials {
			c.Kind, c.APIKey, c.ClientCredentials = ipc.KindClientCredentials, "", s.Value
		}
		add(c)
	case blCreds:
		w, ok := l.bl.Workspace(ws)
		if !ok {
			return cs
		}
		cr, prov := w.Credentials, l.prov
		if cr.APIKey != "" {
			add(sources.Credential{Workspace: ws, Kind: ipc.KindAPIKey, APIKey: cr.APIKey, BaseURL: base, Source: prov})
		}
		if cr.AccessToken != "" || cr.RefreshToken != "" {
			add(sources.Credential{Workspace: ws, Kind: ipc.KindLogin, AccessToken: cr.AccessToken,
				RefreshToken: cr.RefreshToken, DeviceCode: cr.DeviceCode, BaseURL: base, Source: prov})
		}
		if cr.ClientCredentials != "" {
			add(sources.Credential{Workspace: ws, Kind: ipc.KindClientCredentials, ClientCredentials: cr.ClientCredentials, BaseURL: base, Source: prov})
		}
	}
	return cs
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

func newCredential(c sources.Credential) *sources.Credential { return &c }
