package resolver

import (
	"errors"
	"fmt"

	"github.com/blauth/blauth/sources"
	"github.com/blauth/blauth/sources/blconfig"
	"github.com/blauth/blauth/sources/keyring"
)

// Request is what a caller sent: an optional workspace, its directory and its BL_* variables.
type Request struct {
	Workspace string
	Dir       string
	Env       map[string]string
}

// Resolution is the outcome for one request.
type Resolution struct {
	Workspace  string
	Credential *sources.Credential   // the winner; nil when there is none
	Shadowed   []*sources.Credential // lower-ranked credentials for the same workspace
	// Errors are the problems of the request's own sources (its .env: broken lines, or why it
	// cannot be read). The daemon-held sources' problems are in Resolver.SourceErrors.
	Errors []sources.SourceError
	// Dotenv is what the caller's .env sets, without secrets: its path and the names of the
	// BL_* variables it sets, with BL_WORKSPACE's value. Blaxel's SDKs let ./.env win over the
	// environment, so a command run with another workspace's variables would not get them.
	Dotenv DotenvSummary
	// Named are the workspaces the request's sources name (each BL_WORKSPACE, the bl context),
	// in rank order; Resolver.Workspaces adds those the daemon holds credentials for. A request
	// for a workspace none of them knows is probably a typo of one.
	Named []string
	// Warnings are mistakes in the chosen workspace's sources, each saying its fix: a key of its
	// bl config credentials that no Blaxel tool reads (api_key: for apiKey:). They are set even
	// when resolution fails, and may be why it did.
	Warnings []string
	// CallerBase is the API base the caller's own BL_API_URL or BL_ENV (in its environment or
	// .env) ask for, "" when they ask for none; DaemonBase is the one the daemon's own
	// credentials go to. A caller's choice never applies to a credential the daemon holds.
	CallerBase, DaemonBase string
	// WorkspaceSource is what chose Workspace: the request, a variable, a blaxel.toml, a route.
	WorkspaceSource sources.Provenance

	// Reusable says the resolution holds for the same request until Resolver.Stamp moves: the
	// caller's .env and blaxel.toml, if any, came from watched cache entries (a file whose watch
	// was refused is read on every request, and a resolution that read one is never reusable).
	Reusable bool

	// Room for the usual few candidates and named workspaces, so that a resolution is one
	// allocation.
	cands [4]*sources.Credential
	named [4]string
}

// IgnoredCallerBase is the API base the caller asked for but does not get, because what serves
// it (the winning credential, or the daemon's device login) goes to the daemon's base; "" when
// the caller asked for none or for that same base.
func (res *Resolution) IgnoredCallerBase(daemonHeld bool) string {
	if !daemonHeld || res.CallerBase == "" || res.CallerBase == res.DaemonBase {
		return ""
	}
	return res.CallerBase
}

// DotenvSummary says what a caller's .env sets, without its secrets.
type DotenvSummary struct {
	Path      string
	Workspace string         // its BL_WORKSPACE
	Names     []string       // the BL_* variables it sets, sorted
	Lines     map[string]int // the line that sets each of them
}

// DaemonHeld reports whether the winning credential lives in a source the daemon watches itself
// (its environment, the keyring, the bl config), and so is worth keeping fresh unasked.
func (res *Resolution) DaemonHeld() bool {
	if res.Credential == nil {
		return false
	}
	k := res.Credential.Source.Kind
	return k == sources.SourceDaemonEnv || k == sources.SourceKeyring || k == sources.SourceBLConfig
}

// Resolution errors.
var (
	ErrNoWorkspace   = errors.New("no workspace")
	ErrNoCredentials = errors.New("no credentials")
	// ErrSource means one of the request's own sources exists but cannot be read (a .env that is
	// unreadable, a FIFO, a device, a directory, too large, or too slow): the request fails
	// rather than being served by a lower-ranked source the caller did not mean. The error names
	// the path and the reason.
	ErrSource = errors.New("a credential source cannot be read")
)

// layer is one source, ranked, as a request sees it.
type layer struct {
	prov sources.Provenance
	// caller marks the caller's own sources: the caller's base URL applies to them, never to
	// the daemon's.
	caller bool
	// workspace is the workspace the source names (BL_WORKSPACE, the bl context), if any.
	workspace string
	// holds says where the source's credentials are (appendCreds reads them): env, ring or
	// bl; noCreds for a source that names a workspace only.
	holds int
	env   envVars // an environment-like source's
	ring  *keyring.Source
	bl    *blconfig.View
}

// Resolve decides which credential serves req. It walks the ranked sources, highest first: the
// caller's blaxel.toml workspace, its .env, its blaxel.toml [env], its environment, the route of
// its directory, the daemon's environment, the keyring, the bl config (docs/SOURCES.md).
//  1. The workspace is the request's, else the first that a source names.
//  2. The credentials that belong to it are gathered in rank order: a .env or environment
//     credential belongs to the BL_WORKSPACE beside it, or to the chosen workspace when its
//     source names none; a keyring or bl config entry to its own workspace.
//  3. The first wins; the others are what it shadows.
//
// It returns ErrNoWorkspace or ErrNoCredentials (wrapped, with the reason) when nothing can
// serve, and ErrSource when the caller's .env exists but cannot be read. The Resolution is never
// nil.
func (r *Resolver) Resolve(req Request) (*Resolution, error) {
	res := &Resolution{}
	return res, r.ResolveInto(res, req)
}

// ResolveInto is Resolve into res, whose previous content it replaces: a server resolving
// request after request on a connection reuses one Resolution. The resolution res held before
// must no longer be in use (its Shadowed and Named are overwritten); the credentials it pointed
// to stay valid.
func (r *Resolver) ResolveInto(res *Resolution, req Request) error {
	*res = Resolution{Reusable: true}
	var stack [8]layer
	layers, bl, err := r.layers(stack[:0], req, res)
	if err != nil {
		return err
	}
	chooseWorkspace(req, layers, res)
	if res.Workspace == "" {
		return fmt.Errorf("%w: none was asked for, and no BL_WORKSPACE nor bl context names one", ErrNoWorkspace)
	}
	res.Warnings = blWarnings(r.bl, res.Workspace)
	daemonBase, callerBase, callerAsks := r.bases(layers, workspaceEnv(bl, res.Workspace))
	res.DaemonBase = daemonBase
	if callerAsks {
		res.CallerBase = callerBase
	}
	cands := res.cands[:0]
	for i := range layers {
		base := daemonBase
		if layers[i].caller {
			base = callerBase
		}
		cands = r.appendCreds(cands, &layers[i], res.Workspace, base)
	}
	if len(cands) == 0 {
		return fmt.Errorf("%w for workspace %s in any source", ErrNoCredentials, res.Workspace)
	}
	res.Credential, res.Shadowed = cands[0], cands[1:]
	return nil
}

// layers lists the sources req sees, highest rank first, and the view of the bl config it used
// (nil when there is none), read after the caller's .env.
func (r *Resolver) layers(ls []layer, req Request, res *Resolution) ([]layer, *blconfig.View, error) {
	var tomlEnv []layer
	if req.Dir != "" {
		top, env, err := r.tomlLayers(req.Dir, res)
		if err != nil {
			return nil, nil, err
		}
		ls, tomlEnv = append(ls, top...), env
		v := r.dotenvs.Get(req.Dir)
		res.Reusable = res.Reusable && v.Cached
		prov := sources.Provenance{Kind: sources.SourceDotenv, Where: v.Path}
		for _, e := range v.Errs {
			res.Errors = append(res.Errors, sources.SourceError{Source: prov, Error: e.Error()})
		}
		if v.ReadErr != nil {
			res.Errors = append(res.Errors, sources.SourceError{Source: prov, Error: v.ReadErr.Error()})
			return nil, nil, fmt.Errorf("%w: %w; fix or remove it (no other source is used while the caller's .env cannot be read)", ErrSource, v.ReadErr)
		}
		if v.Vars != nil {
			ls = append(ls, envLayer(prov, true, v.Vars))
			res.Dotenv = summarize(v)
		}
	}
	ls = append(ls, tomlEnv...)
	if len(req.Env) > 0 {
		ls = append(ls, envLayer(sources.Provenance{Kind: sources.SourceCallerEnv}, true, req.Env))
	}
	ls = append(ls, r.routeLayers(req.Dir)...)
	ls = append(ls, r.daemonLayer)
	if r.ring != nil {
		ls = append(ls, keyringLayer(r.ring))
	}
	bl := r.blView()
	if bl != nil {
		ls = append(ls, blLayer(bl, r.bl.Path()))
	}
	return ls, bl, nil
}

// bases returns the API base of daemon-held credentials, and of the caller's own, and whether the
// caller's sources set BL_API_URL or BL_ENV (when they set neither, the caller's base is the
// daemon's). A caller's BL_API_URL or BL_ENV applies only to credentials the caller supplied: a
// .env in a cloned repository must never redirect a daemon-held secret to another host.
func (r *Resolver) bases(ls []layer, wsEnv string) (daemonBase, callerBase string, callerAsks bool) {
	daemonBase = r.daemonBase(wsEnv)
	var url, env string
	for _, l := range ls {
		if !l.caller {
			continue
		}
		url = first(url, l.env.apiURL)
		env = first(env, l.env.blEnv)
	}
	if url == "" && env == "" {
		return daemonBase, daemonBase, false
	}
	return daemonBase, sources.BaseURL(url, env, wsEnv), true
}

// blWarnings are the mistakes in ws's entry of the bl config: credentials keys no Blaxel tool
// reads, each with the spelling bl expects.
func blWarnings(src *blconfig.Source, ws string) []string {
	if src == nil {
		return nil
	}
	var out []string
	for _, u := range src.UnknownKeys(ws) {
		out = append(out, fmt.Sprintf("%s, workspace %s: %s", src.Path(), ws, u))
	}
	return out
}

func first(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
