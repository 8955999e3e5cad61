package server

import (
	"context"
	"time"

	"github.com/blauth/blauth/daemon/internal/broker"
	"github.com/blauth/blauth/daemon/internal/resolver"
	"github.com/blauth/blauth/daemon/internal/token"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
)

// What a Server asks of the daemon's other parts: the daemon passes its resolver, broker and
// login flows; a test passes whatever answers the same questions.

// Resolver says which credential serves a request, and what the sources hold.
type Resolver interface {
	// ResolveInto resolves req into res, replacing what res held (resolver.Resolver.Resolve).
	ResolveInto(res *resolver.Resolution, req resolver.Request) error
	// Changed returns a channel closed at the next change of any source.
	Changed() <-chan struct{}
	// Stamp moves whenever a resolution may come out otherwise; a Reusable resolution holds for
	// the same request while it stays (resolver.Resolver.Stamp).
	Stamp() uint64
	Workspaces() []string
	SourceErrors() []sources.SourceError
	WatchedDotenvs() int
	DaemonBaseURL(workspace string) string
	ReloadKeyring(ctx context.Context)
}

// Broker holds one token per credential.
type Broker interface {
	Get(ctx context.Context, c *sources.Credential, minTTL time.Duration, keepFresh bool) (broker.Served, error)
	// Hold keeps c fresh while a watcher follows it, and calls wake (without blocking, and
	// never under the server's locks) when its token changes.
	Hold(c *sources.Credential, wake func()) broker.Holder
	Erase(c *sources.Credential, value string) bool
	Lookup(c *sources.Credential) (ipc.CachedStatus, bool)
	Status() []ipc.CachedStatus
	MinTTL() time.Duration
}

// Logins runs device logins.
type Logins interface {
	Start(ctx context.Context, workspace, base string) (id string, da *token.DeviceAuth, err error)
	Wait(ctx context.Context, id string, d time.Duration) (workspace string, err error)
}
