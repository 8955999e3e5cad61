package resolver

import (
	"fmt"
	"strings"

	"github.com/blauth/blauth/sources"
	"github.com/blauth/blauth/sources/blaxeltoml"
	"github.com/blauth/blauth/sources/dotenv"
)

// Per-directory workspaces: the caller's blaxel.toml, and the routes of blauth's config file.
// docs/SOURCES.md ranks them and says why.

// newTOMLCache is the cache of the callers' blaxel.toml files: the .env cache's reads (bounded
// in time and size, outside any lock, watched, dropped when idle) with blaxel.toml's parser.
func newTOMLCache(cfg Config, onChange func()) *dotenv.Cache {
	return dotenv.NewCache(dotenv.CacheConfig{
		Name: blaxeltoml.Name, Parse: parseTOML,
		Watcher: cfg.Watcher, MaxDirs: cfg.MaxDotenvDirs, Idle: cfg.DotenvIdle, ReadTimeout: cfg.FileReadTimeout,
		Clock: cfg.Clock, OnChange: onChange, Log: cfg.Log,
	})
}

// parseTOML gives the cache what blaxeltoml.Parse reads, and its error as a broken line.
func parseTOML(data []byte) (map[string]string, map[string]int, []dotenv.Error) {
	vars, err := blaxeltoml.Parse(data)
	if err != nil {
		return vars, nil, []dotenv.Error{{Line: err.Line, Msg: err.Msg + "; nothing in the file is used (bl and the SDKs then ignore it too)"}}
	}
	return vars, nil, nil
}

// tomlLayers are what the caller's blaxel.toml gives: its top-level workspace, which ranks
// above the .env (bl lets it override the workspace it resolved), and its [env] table, which
// ranks below the .env and above the environment (as the TypeScript SDK reads it). A file that
// does not parse gives neither, and an error naming its line; one that cannot be read fails the
// request, as an unreadable .env does.
func (r *Resolver) tomlLayers(dir string, res *Resolution) (top, env []layer, err error) {
	v := r.tomls.Get(dir)
	res.Reusable = res.Reusable && v.Cached
	prov := sources.Provenance{Kind: sources.SourceBlaxelTOML, Where: v.Path}
	for _, e := range v.Errs {
		res.Errors = append(res.Errors, sources.SourceError{Source: prov, Error: e.Error()})
	}
	if v.ReadErr != nil {
		res.Errors = append(res.Errors, sources.SourceError{Source: prov, Error: v.ReadErr.Error()})
		return nil, nil, fmt.Errorf("%w: %w; fix or remove it (no other source is used while the caller's blaxel.toml cannot be read)", ErrSource, v.ReadErr)
	}
	if v.Vars == nil || len(v.Errs) > 0 {
		return nil, nil, nil
	}
	switch ws := blaxeltoml.Workspace(v.Vars); {
	case strings.ContainsAny(ws, "\r\n\x00"):
		res.Errors = append(res.Errors, sources.SourceError{Source: prov, Error: "its workspace holds a line break or a NUL, which no workspace name does: it is ignored"})
	case strings.HasPrefix(ws, "$"):
		res.Errors = append(res.Errors, sources.SourceError{Source: prov,
			Error: "workspace = \"" + ws + "\" asks bl to expand a variable, which blauthd does not do: the line is ignored; name the workspace, or set BL_WORKSPACE in the .env"})
	case ws != "":
		top = []layer{{prov: sources.Provenance{Kind: sources.SourceBlaxelTOML, Where: v.Path + "#workspace"}, caller: true, workspace: ws}}
	}
	if e := blaxeltoml.Env(v.Vars); e != nil {
		env = []layer{envLayer(prov, true, e)}
	}
	return top, env, nil
}

// routeLayers is the route of blauth's config file that dir matches, if any: it names a
// workspace and holds no credential.
func (r *Resolver) routeLayers(dir string) []layer {
	if r.routes == nil || dir == "" {
		return nil
	}
	rt, ok := sources.MatchRoute(r.routes.get(), dir)
	if !ok {
		return nil
	}
	return []layer{{prov: sources.Provenance{Kind: sources.SourceRoute, Where: rt.Where(r.routes.path)}, workspace: rt.Workspace}}
}

// chooseWorkspace sets res's workspace, what named it, and the workspaces every layer names:
// the request's own, else the first a layer names.
func chooseWorkspace(req Request, ls []layer, res *Resolution) {
	res.Workspace = req.Workspace
	if req.Workspace != "" {
		res.WorkspaceSource = sources.Provenance{Kind: sources.SourceRequest, Where: "workspace"}
	}
	for _, l := range ls {
		if l.workspace == "" {
			continue
		}
		if res.Named == nil {
			res.Named = res.named[:0]
		}
		res.Named = append(res.Named, l.workspace)
		if res.Workspace == "" {
			res.Workspace, res.WorkspaceSource = l.workspace, l.workspaceSource()
		}
	}
}

// workspaceSource is where the layer names its workspace.
func (l layer) workspaceSource() sources.Provenance {
	p := l.prov
	switch {
	case p.Kind == sources.SourceBLConfig:
		p.Where += "#context.workspace"
	case l.holds == envCreds && p.Where == "":
		p.Where = sources.VarWorkspace
	case l.holds == envCreds:
		p.Where += "#" + sources.VarWorkspace
	}
	return p
}
