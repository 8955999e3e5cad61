package daemon

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/internal/backoff"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
)

// Clock is the wall clock, injectable for tests. Now must return a time without a monotonic
// reading (time.Now().Round(0)): token expiry is a wall-clock matter, and the monotonic clock
// stops during suspend.
type Clock interface{ Now() time.Time }

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now().Round(0) }

// Persister saves a rotated login session back where it came from, before the new access token
// is served. It returns an error when it could not.
type Persister func(c *sources.Credential, g *Grant) error

// BrokerConfig configures a Broker. Zero fields take the defaults noted.
type BrokerConfig struct {
	Exchanger Exchanger
	Clock     Clock          // wall clock
	Log       zerolog.Logger // secrets are never logged
	// RefreshLeft starts the background refresh when this fraction of the lifetime is left (0.4).
	RefreshLeft float64
	// Jitter moves each refresh earlier by up to this fraction of the lifetime (0.05), so that
	// many credentials issued together do not refresh together.
	Jitter float64
	// MinTTL is the least remaining life of a served token (30s). A request may ask for more.
	MinTTL time.Duration
	// ExchangeTimeout bounds one exchange (20s).
	ExchangeTimeout time.Duration
	// Backoff spaces retries after transient failures (1s doubling to 5m, half jitter).
	Backoff backoff.Policy
	// RetryFraction caps each wait to this fraction of the current token's remaining life (0.1).
	RetryFraction float64
	// Persist writes a refreshed login session back to its source; nil disables write-back.
	Persist Persister
	// OnPermanent is called once when a credential is refused for good, so that its source can
	// be re-read (bl may have logged in again).
	OnPermanent func(c *sources.Credential)
	// IdleTTL drops a cached credential that nobody asked for in this long (1h). Login sessions
	// and daemon-held credentials are kept fresh regardless (KeepFresh).
	IdleTTL time.Duration
}

// Broker keeps one token per credential: it exchanges once however many callers ask at once,
// serves the cached token without any network call while it is good, and refreshes it in the
// background before it expires. Safe for concurrent use.
type Broker struct {
	cfg     BrokerConfig
	ctx     context.Context // lives as long as the daemon: exchanges outlive their callers
	mu      sync.Mutex
	entries map[string]*entry
	wg      sync.WaitGroup
}

type token struct {
	value     string
	expiry    time.Time // zero: never expires (API key)
	issued    time.Time
	refreshAt time.Time
	refresh   string // the refresh token to use next (login sessions)
}

type flight struct {
	done chan struct{}
	tok  *token
	err  error
}

type entry struct {
	key         string
	cred        *sources.Credential // what exchanges use: the source's, plus rotated tokens
	seen        *sources.Credential // the source's version as last seen, to notice real changes
	keepFresh   bool
	tok         *token
	flight      *flight
	lastRefresh time.Time
	lastErr     error
	permanent   bool
	failures    int
	nextTry     time.Time
	lastUsed    time.Time
	exchanges   int
}

// NewBroker returns a broker whose exchanges run under ctx.
func NewBroker(ctx context.Context, cfg BrokerConfig) *Broker {
	if cfg.Clock == nil {
		cfg.Clock = wallClock{}
	}
	if cfg.RefreshLeft <= 0 || cfg.RefreshLeft >= 1 {
		cfg.RefreshLeft = 0.4
	}
	if cfg.Jitter < 0 || cfg.Jitter >= cfg.RefreshLeft {
		cfg.Jitter = 0.05
	}
	if cfg.MinTTL <= 0 {
		cfg.MinTTL = 30 * time.Second
	}
	if cfg.ExchangeTimeout <= 0 {
		cfg.ExchangeTimeout = 20 * time.Second
	}
	if cfg.RetryFraction <= 0 {
		cfg.RetryFraction = 0.1
	}
	if cfg.IdleTTL <= 0 {
		cfg.IdleTTL = time.Hour
	}
	return &Broker{cfg: cfg, ctx: ctx, entries: map[string]*entry{}}
}

// noTokenMaxWait caps the wait between tries while no valid token is held.
const noTokenMaxWait = 10 * time.Second

// Errors a caller branches on. They carry an ipc code through codeOf.
var (
	ErrAuthFailed  = errors.New("credential refused")
	ErrUnavailable = errors.New("no valid token")
)

// TokenError is a failed Get, with the protocol code and a hint for the user.
type TokenError struct {
	Code string
	Msg  string
	Hint string
	Err  error
}

func (e *TokenError) Error() string { return e.Msg }
func (e *TokenError) Unwrap() error { return e.Err }

// Served is a token handed to a caller.
type Served struct {
	Token  string
	Expiry time.Time
}

// Get returns a token for c with at least minTTL (at least the configured MinTTL) of life left.
// keepFresh marks a credential the daemon holds itself (its environment, the keyring, the bl
// config): it is refreshed in the background even when nobody asks.
func (b *Broker) Get(ctx context.Context, c *sources.Credential, minTTL time.Duration, keepFresh bool) (Served, error) {
	if c.Kind == sources.KindAPIKey {
		return Served{Token: c.APIKey}, nil
	}
	if minTTL < b.cfg.MinTTL {
		minTTL = b.cfg.MinTTL
	}
	key := c.Key()
	b.mu.Lock()
	e := b.entryLocked(key, c, keepFresh)
	now := b.cfg.Clock.Now()
	e.lastUsed = now
	if t := e.tok; t != nil && t.expiry.Sub(now) >= minTTL {
		if !now.Before(t.refreshAt) {
			b.maybeStartLocked(e, now)
		}
		s := Served{Token: t.value, Expiry: t.expiry}
		b.mu.Unlock()
		return s, nil
	}
	// No token good enough: the caller has to wait for an exchange.
	if e.permanent {
		err := b.failure(e)
		b.mu.Unlock()
		return Served{}, err
	}
	if e.flight == nil && now.Before(e.nextTry) {
		err := b.failure(e)
		b.mu.Unlock()
		return Served{}, err
	}
	f := e.flight
	if f == nil {
		f = b.startLocked(e)
	}
	b.mu.Unlock()

	wait := time.NewTimer(b.cfg.ExchangeTimeout + 5*time.Second)
	defer wait.Stop()
	select {
	case <-f.done:
	case <-ctx.Done():
		return Served{}, &TokenError{Code: ipc.CodeUnavailable, Msg: "gave up waiting for a token: " + ctx.Err().Error(), Err: ctx.Err()}
	case <-wait.C:
		return Served{}, &TokenError{Code: ipc.CodeUnavailable, Msg: "gave up waiting for a token: the exchange is still running", Err: ErrUnavailable}
	}
	if f.err != nil {
		b.mu.Lock()
		err := b.failure(e)
		b.mu.Unlock()
		return Served{}, err
	}
	now = b.cfg.Clock.Now()
	if f.tok.expiry.Sub(now) < minTTL {
		return Served{}, &TokenError{Code: ipc.CodeUnavailable,
			Msg:  fmt.Sprintf("the newest token for %s has %s left, less than the %s asked for", c.Workspace, f.tok.expiry.Sub(now).Round(time.Second), minTTL),
			Hint: "ask for a shorter min_ttl; the token endpoint issues shorter tokens"}
	}
	return Served{Token: f.tok.value, Expiry: f.tok.expiry}, nil
}

// failure builds the caller-facing error for e's last failure. b.mu is held.
func (b *Broker) failure(e *entry) error {
	c := e.cred
	if e.permanent {
		hint := "check the service account's client id and secret, or create a new secret in the Blaxel console"
		if c.Kind == sources.KindLogin {
			hint = "run `bl login " + c.Workspace + "` (or `blauth-helper login " + c.Workspace + "`)"
		}
		return &TokenError{Code: ipc.CodeAuthFailed, Msg: fmt.Sprintf("the %s for workspace %s was refused: %v", describeKind(c.Kind), c.Workspace, e.lastErr), Hint: hint, Err: ErrAuthFailed}
	}
	msg := fmt.Sprintf("no valid token for workspace %s", c.Workspace)
	if e.lastErr != nil {
		msg += ": " + e.lastErr.Error()
	}
	hint := "the token endpoint could not be reached; blauthd keeps retrying"
	if !e.nextTry.IsZero() {
		hint += fmt.Sprintf(", next try in %s", e.nextTry.Sub(b.cfg.Clock.Now()).Round(time.Second))
	}
	return &TokenError{Code: ipc.CodeUnavailable, Msg: msg, Hint: hint, Err: ErrUnavailable}
}

func describeKind(k string) string {
	switch k {
	case sources.KindLogin:
		return "bl login session"
	case sources.KindClientCredentials:
		return "service account credential"
	}
	return "API key"
}

// entryLocked finds or creates the entry for c, adopting a changed source. b.mu is held.
func (b *Broker) entryLocked(k string, c *sources.Credential, keepFresh bool) *entry {
	e := b.entries[k]
	if e == nil {
		e = &entry{key: k, cred: c, seen: c}
		b.entries[k] = e
		b.adoptSourceToken(e, c)
	} else if !sameSecrets(e.seen, c) {
		// The source changed. If it now holds what we already work with (our own write-back),
		// nothing is new. Otherwise bl logged in again or a secret was replaced: forget a
		// permanent failure and take a fresher token it carries. A source that merely still
		// holds what it held before is no change at all: with write-back off, the rotated
		// refresh token we hold in memory must not be traded back for the spent one in the file.
		e.seen = c
		if !sameSecrets(e.cred, c) {
			e.cred = c
			e.permanent = false
			e.failures = 0
			e.nextTry = time.Time{}
			b.adoptSourceToken(e, c)
		}
	}
	e.keepFresh = e.keepFresh || keepFresh
	return e
}

// adoptSourceToken takes the access token a login source carries (bl writes one) when it
// lives longer than ours: no exchange is needed while bl's own token is fresh.
func (b *Broker) adoptSourceToken(e *entry, c *sources.Credential) {
	if c.Kind != sources.KindLogin || c.AccessToken == "" {
		return
	}
	exp, iat, ok := JWTTimes(c.AccessToken)
	if !ok || (e.tok != nil && !exp.After(e.tok.expiry)) {
		return
	}
	if iat.IsZero() || !iat.Before(exp) {
		iat = exp.Add(-2 * time.Hour)
	}
	e.tok = b.newToken(c.AccessToken, exp, iat)
}

func sameSecrets(a, b *sources.Credential) bool {
	return a.APIKey == b.APIKey && a.ClientCredentials == b.ClientCredentials &&
		a.AccessToken == b.AccessToken && a.RefreshToken == b.RefreshToken && a.DeviceCode == b.DeviceCode &&
		a.BaseURL == b.BaseURL
}

func (b *Broker) newToken(v string, exp, iat time.Time) *token {
	life := exp.Sub(iat)
	lead := time.Duration(float64(life) * (b.cfg.RefreshLeft + b.cfg.Jitter*rand.Float64()))
	return &token{value: v, expiry: exp, issued: iat, refreshAt: exp.Add(-lead)}
}

// maybeStartLocked starts a background refresh unless one runs, the credential was refused, or
// a backoff wait is not over. b.mu is held.
func (b *Broker) maybeStartLocked(e *entry, now time.Time) {
	if e.flight != nil || e.permanent || now.Before(e.nextTry) {
		return
	}
	b.startLocked(e)
}

// startLocked starts the one exchange for e. b.mu is held.
func (b *Broker) startLocked(e *entry) *flight {
	f := &flight{done: make(chan struct{})}
	e.flight = f
	c := e.cred
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		tok, err := b.exchange(c)
		b.mu.Lock()
		b.finishLocked(e, c, f, tok, err)
		b.mu.Unlock()
		close(f.done)
	}()
	return f
}

func (b *Broker) exchange(c *sources.Credential) (*token, error) {
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.ExchangeTimeout)
	defer cancel()
	var g *Grant
	var err error
	switch c.Kind {
	case sources.KindClientCredentials:
		g, err = b.cfg.Exchanger.ClientCredentials(ctx, c.BaseURL, c.ClientCredentials)
	case sources.KindLogin:
		if c.RefreshToken == "" {
			return nil, &ExchangeError{Op: "refresh", Permanent: true, Description: "the session has no refresh token"}
		}
		g, err = b.cfg.Exchanger.Refresh(ctx, c.BaseURL, c.RefreshToken, c.DeviceCode)
	default:
		return nil, fmt.Errorf("nothing to exchange for a %s", c.Kind)
	}
	if err != nil {
		return nil, err
	}
	if c.Kind == sources.KindLogin {
		// Persist first: the old refresh token may already be dead on the server, so the new one
		// must reach disk before anyone can act on the new access token.
		if g.RefreshToken == "" {
			g.RefreshToken = c.RefreshToken
		}
		if b.cfg.Persist != nil {
			if perr := b.cfg.Persist(c, g); perr != nil {
				b.cfg.Log.Error().Err(perr).Str("workspace", c.Workspace).Msg("could not save the refreshed session; it is kept in memory")
			}
		}
	}
	t := b.newToken(g.AccessToken, g.Expiry, g.IssuedAt)
	t.refresh = g.RefreshToken
	return t, nil
}

// finishLocked records an exchange's result. b.mu is held.
func (b *Broker) finishLocked(e *entry, c *sources.Credential, f *flight, tok *token, err error) {
	now := b.cfg.Clock.Now()
	e.flight = nil
	e.exchanges++
	f.tok, f.err = tok, err
	log := b.cfg.Log.With().Str("workspace", c.Workspace).Str("kind", c.Kind).Str("source", c.Source.String()).Logger()
	if err == nil {
		if c.Kind == sources.KindLogin && e.cred == c {
			// Later exchanges use the rotated refresh token and the new access token.
			nc := *c
			nc.AccessToken, nc.RefreshToken = tok.value, tok.refresh
			e.cred = &nc
		}
		e.tok = tok
		e.lastRefresh = now
		e.lastErr = nil
		e.failures = 0
		e.nextTry = time.Time{}
		log.Info().Time("expiry", tok.expiry).Msg("token refreshed")
		return
	}
	e.lastErr = err
	var xe *ExchangeError
	if errors.As(err, &xe) && xe.Permanent {
		first := !e.permanent
		e.permanent = true
		log.Error().Err(err).Msg("credential refused; not retrying until its source changes")
		if first && b.cfg.OnPermanent != nil {
			go b.cfg.OnPermanent(c)
		}
		return
	}
	e.failures++
	d := b.cfg.Backoff.Delay(e.failures)
	if xe != nil && xe.RetryAfter > d {
		d = xe.RetryAfter
	}
	var left time.Duration
	if e.tok != nil {
		left = e.tok.expiry.Sub(now) - b.cfg.MinTTL
		if left <= 0 {
			left = time.Nanosecond
		}
	}
	d = backoff.Bound(d, left, b.cfg.RetryFraction, 500*time.Millisecond)
	if e.tok == nil && d > noTokenMaxWait {
		// Callers are failing now: try at least this often, so service resumes promptly once
		// the endpoint is back. That is still only one request per credential per interval.
		d = noTokenMaxWait
	}
	e.nextTry = now.Add(d)
	log.Warn().Err(err).Int("failures", e.failures).Dur("retry_in", d).Msg("token exchange failed")
}

// Tick refreshes what is due and drops what is idle. The daemon calls it periodically; judging
// expiry on the wall clock here is what covers suspend, resume and clock jumps.
func (b *Broker) Tick() {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.cfg.Clock.Now()
	for k, e := range b.entries {
		idle := now.Sub(e.lastUsed) > b.cfg.IdleTTL
		if idle && !e.keepFresh && e.flight == nil {
			delete(b.entries, k)
			continue
		}
		if e.tok != nil && !e.tok.expiry.After(now) {
			e.tok = nil // never serve it again
			// The tries made while it lived were spaced by its remaining life; without a token
			// the no-token cap applies from now on.
			if e.nextTry.Sub(now) > noTokenMaxWait {
				e.nextTry = now.Add(noTokenMaxWait)
			}
		}
		due := e.tok == nil || !now.Before(e.tok.refreshAt)
		if due && (e.keepFresh || !idle) {
			b.maybeStartLocked(e, now)
		}
	}
}

// Track registers a credential the daemon holds itself, so that Tick keeps its token fresh
// even if nobody asks: a bl login session refreshed here is one that bl and the SDKs reading the
// same file never have to refresh. It makes no network call.
func (b *Broker) Track(c *sources.Credential) {
	if c.Kind == sources.KindAPIKey {
		return
	}
	key := c.Key()
	b.mu.Lock()
	e := b.entryLocked(key, c, true)
	e.lastUsed = b.cfg.Clock.Now()
	b.mu.Unlock()
}

// Erase drops the cached token of c, so the next Get exchanges again (git calls erase after a
// 401). When value is not empty, only a cached token equal to it is dropped.
func (b *Broker) Erase(c *sources.Credential, value string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entries[c.Key()]
	if e == nil || e.tok == nil || (value != "" && e.tok.value != value) {
		return false
	}
	e.tok = nil
	e.nextTry = time.Time{}
	return true
}

// Untrack stops keeping fresh, unasked, the credentials that no daemon-held source holds any
// more (a keyring logout, a workspace removed from the bl config): they are then refreshed only
// while callers use them, and dropped once idle.
func (b *Broker) Untrack(held func(key string) bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, e := range b.entries {
		if e.keepFresh && !held(k) {
			e.keepFresh = false
		}
	}
}

// EntryStatus describes one cached credential, without secrets.
type EntryStatus struct {
	Workspace   string    `json:"workspace"`
	Kind        string    `json:"kind"`
	Source      string    `json:"source"`
	Expiry      time.Time `json:"expiry,omitzero"`
	RefreshAt   time.Time `json:"refresh_at,omitzero"`
	LastRefresh time.Time `json:"last_refresh,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	Refused     bool      `json:"refused,omitempty"`
	NextTry     time.Time `json:"next_try,omitzero"`
	Exchanges   int       `json:"exchanges"`
	key         string
}

// Status lists the cached credentials, sorted by workspace.
func (b *Broker) Status() []EntryStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []EntryStatus
	for _, e := range b.entries {
		s := EntryStatus{Workspace: e.cred.Workspace, Kind: e.cred.Kind, Source: e.cred.Source.String(),
			LastRefresh: e.lastRefresh, Refused: e.permanent, NextTry: e.nextTry, Exchanges: e.exchanges, key: e.key}
		if e.tok != nil {
			s.Expiry, s.RefreshAt = e.tok.expiry, e.tok.refreshAt
		}
		if e.lastErr != nil {
			s.LastError = e.lastErr.Error()
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Workspace != out[j].Workspace {
			return out[i].Workspace < out[j].Workspace
		}
		return out[i].Source < out[j].Source
	})
	return out
}

// Wait waits for exchanges in flight to finish (after the daemon's context is cancelled they
// end promptly).
func (b *Broker) Wait() { b.wg.Wait() }
