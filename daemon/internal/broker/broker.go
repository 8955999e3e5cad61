// Package broker keeps one token per credential: it exchanges once however many callers ask at
// once, serves the cached token without a network call while it is good, refreshes it in the
// background before any Blaxel client would, retries failures with bounded backoff, and writes a
// refreshed bl login session back through a Persister. It knows nothing of sockets or the wire
// protocol beyond the status shape it reports (ipc.CachedStatus).
package broker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/daemon/internal/notify"
	"github.com/blauth/blauth/daemon/internal/token"
	"github.com/blauth/blauth/internal/backoff"
	"github.com/blauth/blauth/internal/clock"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
)

// Persister saves a rotated login session back where it came from, before the new access token
// is served. c is the credential as its source holds it. It reports whether it wrote g (false
// when write-back does not apply to c's source), or an error when it could not.
type Persister func(c *sources.Credential, t *token.Token) (saved bool, err error)

// Config configures a Broker. Zero fields take the defaults noted.
type Config struct {
	Tokens token.Client
	Clock  clock.Clock    // the wall clock (clock.Wall when nil)
	Log    zerolog.Logger // secrets are never logged
	// RefreshLeft starts the background refresh when this fraction of the lifetime is left (0.6),
	// and no later than when that fraction of the servable life (the lifetime less MinTTL) is
	// left. Blaxel's TypeScript SDK refreshes below 50 % left, bl and the Go SDK below 20 %: the
	// daemon must come first, or an SDK process spends the refresh token before it does.
	RefreshLeft float64
	// Jitter moves each refresh earlier by up to this fraction of the lifetime (0.05), so that
	// many credentials issued together do not refresh together.
	Jitter float64
	// MinTTL is the least remaining life of a served token (30s). A request may ask for more.
	MinTTL time.Duration
	// ExchangeTimeout bounds one exchange (ipc.ExchangeTimeout). A caller waits for one at most
	// ipc.GetBudget.
	ExchangeTimeout time.Duration
	// Backoff spaces retries after transient failures (1s doubling to 5m, half jitter).
	Backoff backoff.Policy
	// OnAlert, when set, is called (in a goroutine of its own) once each time a credential
	// can no longer be refreshed: refused for good, or failing with no servable token left.
	// It is called again only after the credential has been refreshed since.
	OnAlert func(Alert)
	// RetryFraction caps each wait to this fraction of the current token's remaining life (0.1).
	RetryFraction float64
	// Persist writes a refreshed login session back to its source; nil disables write-back.
	Persist Persister
	// IdleTTL drops a cached credential that nobody asked for in this long (1h). Login sessions
	// and daemon-held credentials are kept fresh regardless (KeepFresh).
	IdleTTL time.Duration
}

// Broker keeps one token per credential: it exchanges once however many callers ask at once,
// serves the cached token without any network call while it is good, and refreshes it in the
// background before it expires. Safe for concurrent use.
type Broker struct {
	cfg     Config
	ctx     context.Context // lives as long as the daemon: exchanges outlive their callers
	mu      sync.Mutex
	entries map[string]*entry
	wg      sync.WaitGroup
	refused notify.Broadcast // a credential was refused for good
	counts  Counters         // guarded by mu
}

// cached is the token a broker entry holds.
type cached struct {
	value string
	// expiry is when the issuer will call the token expired, on the daemon's clock (the
	// token's own exp moved by the measured skew); zero: never expires (API key).
	expiry    time.Time
	refreshAt time.Time
	refresh   string // the refresh token to use next (login sessions)
	// saved reports that the session this token came with was written back; saveErr is why it
	// could not be.
	saved   bool
	saveErr error
	grant   *token.Token
	// forced is set on a token that an erase brought forward, ahead of its period.
	forced bool
	// rotated is set on a session's token whose refresh issued a new refresh token.
	rotated bool
}

type flight struct {
	done chan struct{}
	tok  *cached
	err  error
}

type entry struct {
	key string
	// wakes are the watchers of this credential, called when its token is replaced or dropped
	// or its exchange failed: nobody else is woken.
	wakes map[*Hold]func()
	cred  *sources.Credential // what exchanges use: the source's, plus rotated tokens
	seen  *sources.Credential // the source's version as last seen
	// onDisk is the session as its source holds it, as far as the daemon knows: the last view
	// adopted, or the last session it wrote back. A write-back must find its refresh token there.
	onDisk *sources.Credential
	// held are the refresh tokens this entry has used or written (the newest last): a source
	// view holding one of them is the daemon's own write, or an older view, never a new login.
	held      []string
	keepFresh bool
	holds     int // watchers of this credential: kept fresh and never dropped while > 0
	// lifetime is how long the endpoint's tokens for this credential live, learned from the last
	// one; a min_ttl over what the schedule guarantees is refused without an exchange.
	lifetime time.Duration
	// notBefore is when the next exchange may start: one refresh period (the shortest the
	// schedule draws) after the last token was received. Only an erase, once per period, and
	// a change of the source bring it forward.
	notBefore time.Time
	// eraseForward is set while the next exchange is one an erase brought forward.
	eraseForward bool
	// rotates is whether the endpoint's last refresh of this session issued a new refresh token
	// (nil before the first refresh): a process holding the old one then fails on its own
	// refresh.
	rotates *bool
	// skew is how far the daemon's clock was ahead of the token endpoint's at the last
	// exchange (negative: behind), when skewKnown; skewWarned once it was logged.
	skew       time.Duration
	skewKnown  bool
	skewWarned bool
	// unsaved is a refreshed session that could not be written back to its source; saveErr says
	// why. Tick retries the write until it lands or a newer session replaces it.
	// alert is the message of the alert raised for this credential, until its next success.
	alert       string
	unsaved     *token.Token
	saveErr     error
	saving      bool
	saveTries   int
	nextSave    time.Time
	tok         *cached
	flight      *flight
	lastRefresh time.Time
	lastErr     error
	permanent   bool
	failures    int
	nextTry     time.Time
	lastUsed    time.Time
	exchanges   int
}

// New returns a broker whose exchanges run under ctx.
func New(ctx context.Context, cfg Config) *Broker {
	if cfg.Clock == nil {
		cfg.Clock = clock.Wall{}
	}
	if cfg.RefreshLeft <= 0 || cfg.RefreshLeft >= 1 {
		cfg.RefreshLeft = DefaultRefreshLeft
	}
	if cfg.Jitter <= 0 || cfg.Jitter >= cfg.RefreshLeft {
		cfg.Jitter = 0.05
	}
	if cfg.MinTTL <= 0 {
		cfg.MinTTL = 30 * time.Second
	}
	if cfg.ExchangeTimeout <= 0 || cfg.ExchangeTimeout >= ipc.GetBudget {
		cfg.ExchangeTimeout = ipc.ExchangeTimeout
	}
	if cfg.RetryFraction <= 0 {
		cfg.RetryFraction = 0.1
	}
	if cfg.IdleTTL <= 0 {
		cfg.IdleTTL = time.Hour
	}
	return &Broker{cfg: cfg, ctx: ctx, entries: map[string]*entry{}}
}

// DefaultRefreshLeft is the fraction of a token's lifetime left when the daemon refreshes it:
// ahead of every Blaxel client (TypeScript < 50 %, bl and Go ≤ 20 %, Python at 10 minutes) with
// a margin, jitter only ever moving it earlier.
const DefaultRefreshLeft = 0.6

// persistRetry bounds the wait between tries to save a session that could not be written back.
const (
	persistRetryMin = 5 * time.Second
	persistRetryMax = 30 * time.Second
)

// noTokenMaxWait caps the wait between tries while no valid token is held.
const noTokenMaxWait = 10 * time.Second

// Reason says why Get served no token.
type Reason int

// Reasons of an *Error.
const (
	Refused    Reason = iota + 1 // the token endpoint refused the credential for good
	Failing                      // the token endpoint fails; the broker retries (RetryIn)
	TooShort                     // the newest token has less life left than asked (Left < Asked); RetryIn says when the next is due
	Unmeetable                   // no token is guaranteed to have what was asked left (Limit < Asked)
	GaveUp                       // the caller stopped waiting for an exchange, or its budget ran out
)

// Error is a Get that served no token: why, and the facts a user needs to act on it.
type Error struct {
	Reason    Reason
	Workspace string
	Kind      string // the credential's kind (ipc.Kind*)
	Cause     error  // the token endpoint's last error, or the caller's context error
	RetryIn   time.Duration
	Left      time.Duration // TooShort: the newest token's life left
	Asked     time.Duration // TooShort, Unmeetable: the min_ttl asked for
	Lifetime  time.Duration // Unmeetable: how long the endpoint's tokens live
	Limit     time.Duration // Unmeetable: the largest min_ttl that is always met (whole seconds)
	// Skew is how far the daemon's clock was ahead of the token endpoint's (negative: behind)
	// at the last exchange, when over token.SkewTolerance (TooShort): why a token can arrive
	// with less life left than it was issued for.
	Skew time.Duration
}

func (e *Error) Error() string {
	switch e.Reason {
	case Refused:
		return fmt.Sprintf("the %s for workspace %s was refused: %v", describeKind(e.Kind), e.Workspace, e.Cause)
	case TooShort:
		// Truncated, not rounded: the figure shown is always below the one asked for.
		msg := fmt.Sprintf("the newest token for %s has %s left, less than the %s asked for", e.Workspace, max(e.Left, 0).Truncate(time.Second), e.Asked)
		if e.RetryIn > 0 {
			msg += fmt.Sprintf("; the next one is due in %s (one exchange per refresh period)", e.RetryIn.Round(time.Second))
		}
		if e.Skew != 0 {
			msg += "; this machine's clock is " + describeSkew(e.Skew) + " the token endpoint's"
		}
		return msg
	case Unmeetable:
		return fmt.Sprintf("the token endpoint issues tokens for %s that live %s, refreshed when %s of it is left: a min_ttl of %s cannot be met (at most %s can)", e.Workspace, e.Lifetime, e.Limit, e.Asked, e.Limit)
	case GaveUp:
		return fmt.Sprintf("gave up waiting for a token for %s: %v", e.Workspace, e.Cause)
	}
	msg := "no valid token for workspace " + e.Workspace
	if e.Cause != nil {
		msg += ": " + e.Cause.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Cause }

func describeKind(k string) string {
	switch k {
	case ipc.KindLogin:
		return "bl login session"
	case ipc.KindClientCredentials:
		return "service account credential"
	}
	return "API key"
}

// Alert says a credential can no longer be refreshed, and what to do.
type Alert struct {
	Workspace, Kind string
	// Reason is "refused" (for good) or "failing" (with no servable token left).
	Reason string
	// Expires is when the last token served expires (zero when none is held).
	Expires time.Time
	// Message is one line for the user: what happened and what to run. It holds no secret.
	Message string
}

// alertLocked raises e's alert once until its next success. b.mu is held.
func (b *Broker) alertLocked(e *entry, c *sources.Credential, reason string) {
	if e.alert != "" {
		return
	}
	a := Alert{Workspace: c.Workspace, Kind: c.Kind, Reason: reason}
	if e.tok != nil {
		a.Expires = e.tok.expiry
	}
	what := "the service account's client credentials"
	fix := "check its client credentials (BL_CLIENT_CREDENTIALS or the bl config) and restore them"
	if c.Kind == ipc.KindLogin {
		what, fix = "the bl login session", "run `bl login "+c.Workspace+"`"
	}
	if reason == "refused" {
		a.Message = fmt.Sprintf("workspace %s: %s were refused for good by the token endpoint: %s", c.Workspace, what, fix)
	} else {
		a.Message = fmt.Sprintf("workspace %s: %s cannot be refreshed and no valid token is left: %s", c.Workspace, what, fix)
	}
	if c.Kind == ipc.KindLogin {
		a.Message = strings.Replace(a.Message, "were refused", "was refused", 1)
	}
	e.alert = a.Message
	b.cfg.Log.Warn().Str("workspace", c.Workspace).Str("kind", c.Kind).Str("reason", reason).Msg(a.Message)
	if b.cfg.OnAlert != nil {
		go b.cfg.OnAlert(a)
	}
}

// Served is a token handed to a caller.
type Served struct {
	Token  string
	Expiry time.Time
	// Warning, when set, is something the caller's user should know although the token is good:
	// a refreshed session that could not be written back.
	Warning string
}

// Get returns a token for c with at least minTTL (at least the configured MinTTL) of life left.
// keepFresh marks a credential the daemon holds itself (its environment, the keyring, the bl
// config): it is refreshed in the background even when nobody asks.
func (b *Broker) Get(ctx context.Context, c *sources.Credential, minTTL time.Duration, keepFresh bool) (Served, error) {
	if c.Kind == ipc.KindAPIKey {
		return Served{Token: c.APIKey}, nil
	}
	if minTTL < b.cfg.MinTTL {
		minTTL = b.cfg.MinTTL
	}
	var kb [256]byte
	key := c.AppendKey(kb[:0])
	b.mu.Lock()
	e := b.entryLocked(key, c, keepFresh)
	now := b.cfg.Clock.Now()
	e.lastUsed = now
	if err := b.unmeetableLocked(e, minTTL); err != nil {
		// More than a token has left at its refresh point: meeting it would take an exchange
		// per request (each a refresh-token rotation and a bl config rewrite), so it is
		// refused whatever the token held now has. A new token (a background refresh, a
		// changed source) updates what is learned.
		b.mu.Unlock()
		return Served{}, err
	}
	if t := e.tok; t != nil && t.expiry.Sub(now) >= minTTL {
		if b.dueLocked(e, now) {
			b.maybeStartLocked(e, now)
		}
		s := Served{Token: t.value, Expiry: t.expiry, Warning: b.warningLocked(e)}
		b.mu.Unlock()
		return s, nil
	}
	// No token good enough: the caller has to wait for an exchange.
	if e.permanent {
		err := b.failure(e)
		b.mu.Unlock()
		return Served{}, err
	}
	if e.flight == nil && now.Before(e.notBefore) {
		err := b.tooShortLocked(e, e.tok, minTTL, now)
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

	wait := time.NewTimer(ipc.GetBudget)
	defer wait.Stop()
	select {
	case <-f.done:
	case <-ctx.Done():
		return Served{}, &Error{Reason: GaveUp, Workspace: c.Workspace, Kind: c.Kind, Cause: ctx.Err()}
	case <-wait.C:
		return Served{}, &Error{Reason: GaveUp, Workspace: c.Workspace, Kind: c.Kind, Cause: errors.New("the exchange is still running")}
	}
	if f.err != nil {
		b.mu.Lock()
		err := b.failure(e)
		b.mu.Unlock()
		return Served{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if now = b.cfg.Clock.Now(); f.tok.expiry.Sub(now) < minTTL {
		return Served{}, b.tooShortLocked(e, f.tok, minTTL, now)
	}
	if err := b.unmeetableLocked(e, minTTL); err != nil {
		return Served{}, err // the first token taught the lifetime: the answer is the same from now on
	}
	return Served{Token: f.tok.value, Expiry: f.tok.expiry, Warning: b.warningLocked(e)}, nil
}

// tooShortLocked answers a request that tok (e's newest token, nil when none is held) falls
// short of. Before e's period is over the next exchange waits for its end (RetryIn), or the
// endpoint would be asked once per request; that happens when the token arrived with less life
// left than it was issued for (the endpoint's clocks disagree, or it was issued long before it
// was handed out), and the measured skew, if any, says why. b.mu is held.
func (b *Broker) tooShortLocked(e *entry, tok *cached, minTTL time.Duration, now time.Time) error {
	err := &Error{Reason: TooShort, Workspace: e.cred.Workspace, Kind: e.cred.Kind, Asked: minTTL}
	if tok != nil {
		err.Left = tok.expiry.Sub(now)
	}
	if now.Before(e.notBefore) {
		err.RetryIn = e.notBefore.Sub(now)
	}
	if e.skewKnown && e.skew.Abs() > token.SkewTolerance {
		err.Skew = e.skew
	}
	return err
}

// unmeetableLocked refuses a min_ttl over the life a token of e's endpoint has left at its
// refresh point, once that lifetime is known. b.mu is held.
func (b *Broker) unmeetableLocked(e *entry, minTTL time.Duration) error {
	if e.lifetime <= 0 {
		return nil
	}
	limit := b.maxMinTTL(e.lifetime)
	if minTTL <= limit {
		return nil
	}
	return &Error{Reason: Unmeetable, Workspace: e.cred.Workspace, Kind: e.cred.Kind, Lifetime: e.lifetime, Asked: minTTL, Limit: limit}
}

// dueLocked reports whether e's next exchange may start now: its period is over and its token
// (if any) is at its refresh point. b.mu is held.
func (b *Broker) dueLocked(e *entry, now time.Time) bool {
	return !now.Before(e.notBefore) && (e.tok == nil || !now.Before(e.tok.refreshAt))
}

// failure builds the caller-facing error for e's last failure. b.mu is held.
func (b *Broker) failure(e *entry) error {
	c := e.cred
	if e.permanent {
		return &Error{Reason: Refused, Workspace: c.Workspace, Kind: c.Kind, Cause: e.lastErr}
	}
	err := &Error{Reason: Failing, Workspace: c.Workspace, Kind: c.Kind, Cause: e.lastErr}
	if !e.nextTry.IsZero() {
		err.RetryIn = max(e.nextTry.Sub(b.cfg.Clock.Now()), 0)
	}
	return err
}

// warningLocked is what a caller served e's token should be told. b.mu is held.
func (b *Broker) warningLocked(e *entry) string {
	if e.saveErr == nil {
		return ""
	}
	return fmt.Sprintf("the refreshed bl login session for %s could not be saved (%v); bl and SDKs reading the file hold a spent refresh token until blauthd can write it (it retries)", e.cred.Workspace, e.saveErr)
}

// entryLocked finds or creates the entry for c, adopting a changed source. b.mu is held.
func (b *Broker) entryLocked(key []byte, c *sources.Credential, keepFresh bool) *entry {
	e := b.entries[string(key)]
	if e == nil {
		k := string(key)
		e = &entry{key: k, cred: c, seen: c, onDisk: c}
		e.hold(c.RefreshToken)
		b.entries[k] = e
		b.adoptSourceToken(e, c)
	} else if !sameSecrets(e.seen, c) {
		// The source changed. If it now holds what we already work with, or a session the daemon
		// held before (its own write-back, seen late, or an older view), nothing is new. Otherwise
		// bl logged in again or a secret was replaced: forget a permanent failure and take a
		// fresher token it carries. A source that merely still holds what it held before is no
		// change at all: with write-back off, the rotated refresh token we hold in memory must
		// not be traded back for the spent one in the file.
		e.seen = c
		if !sameSecrets(e.cred, c) && !e.wasHeld(c) {
			e.cred, e.onDisk = c, c
			e.hold(c.RefreshToken)
			e.permanent = false
			e.failures = 0
			e.nextTry = time.Time{}
			e.lifetime = 0
			e.notBefore, e.eraseForward = time.Time{}, false
			e.unsaved, e.saveErr, e.saveTries = nil, nil, 0
			b.adoptSourceToken(e, c)
		}
	}
	e.keepFresh = e.keepFresh || keepFresh
	return e
}

// maxHeld bounds the refresh tokens an entry remembers.
const maxHeld = 16

func (e *entry) hold(rt string) {
	if rt == "" || slices.Contains(e.held, rt) {
		return
	}
	if len(e.held) == maxHeld {
		e.held = e.held[1:]
	}
	e.held = append(e.held, rt)
}

// wasHeld reports whether c is a login session whose refresh token this entry has held.
func (e *entry) wasHeld(c *sources.Credential) bool {
	return c.Kind == ipc.KindLogin && c.RefreshToken != "" && slices.Contains(e.held, c.RefreshToken)
}

// adoptSourceToken takes the access token a login source carries (bl writes one) when it
// lives longer than ours: no exchange is needed while bl's own token is fresh. Its exp is moved
// onto the daemon's clock by the skew measured at the endpoint, when one is known; in any case
// it cannot live longer than its lifetime from now (which bounds it when the daemon's clock is
// behind the issuer's and nothing was measured yet). b.mu is held.
func (b *Broker) adoptSourceToken(e *entry, c *sources.Credential) {
	if c.Kind != ipc.KindLogin || c.AccessToken == "" {
		return
	}
	exp, iat, ok := token.JWTTimes(c.AccessToken)
	if !ok {
		return
	}
	life := exp.Sub(iat)
	if iat.IsZero() || life <= 0 {
		life = 2 * time.Hour // what Blaxel issues
	}
	local := exp
	if skew, ok := b.knownSkewLocked(e); ok && skew.Abs() > token.SkewTolerance {
		local = exp.Add(skew)
	}
	if bound := b.cfg.Clock.Now().Add(life); bound.Before(local) {
		local = bound
	}
	if e.tok != nil && !local.After(e.tok.expiry) {
		return
	}
	e.tok = &cached{value: c.AccessToken, expiry: local, refreshAt: local.Add(-b.refreshLead(life))}
}

// knownSkewLocked is the skew measured at e's endpoint: e's own, else that of another
// credential of the same API base. b.mu is held.
func (b *Broker) knownSkewLocked(e *entry) (time.Duration, bool) {
	if e.skewKnown {
		return e.skew, true
	}
	for _, o := range b.entries {
		if o.skewKnown && o.cred.BaseURL == e.cred.BaseURL {
			return o.skew, true
		}
	}
	return 0, false
}

func sameSecrets(a, b *sources.Credential) bool {
	return a.APIKey == b.APIKey && a.ClientCredentials == b.ClientCredentials &&
		a.AccessToken == b.AccessToken && a.RefreshToken == b.RefreshToken && a.DeviceCode == b.DeviceCode &&
		a.BaseURL == b.BaseURL
}

// fromGrant is the cached form of a token the endpoint just gave. Its refresh point is drawn
// from the lifetime it was issued for and counted from its receipt (never from its exp read on
// the daemon's clock, which may be off the issuer's): when the life left on its local expiry
// is down to the drawn lead, but no sooner than the shortest period after receipt and no later
// than the drawn one.
func (b *Broker) fromGrant(g *token.Token) *cached {
	life := g.Lifetime()
	lead := b.refreshLead(life)
	expiry := g.LocalExpiry()
	at := expiry.Add(-lead)
	if latest := g.Received.Add(life - lead); at.After(latest) {
		at = latest
	}
	if earliest := g.Received.Add(b.shortestPeriod(life)); at.Before(earliest) {
		at = earliest
	}
	return &cached{value: g.AccessToken, expiry: expiry, refreshAt: at, grant: g}
}

// lead is how long before expiry a token of lifetime life is refreshed when frac of it is
// left: when frac of its life is left, and no later than when frac of its servable life (life
// less MinTTL) is left, so that a short token is renewed well before it falls under MinTTL and
// a brief outage of the endpoint has time to pass. A period (life less the lead) is never
// shorter than a twentieth of the life, nor than a second.
func (b *Broker) lead(life time.Duration, frac float64) time.Duration {
	lead := time.Duration(float64(life) * frac)
	if servable := life - b.cfg.MinTTL; servable > 0 {
		lead = max(lead, b.cfg.MinTTL+time.Duration(float64(servable)*frac))
	}
	floor := min(max(life/20, time.Second), life)
	return max(min(lead, life-floor), 0)
}

// refreshLead draws the lead of one token: RefreshLeft of its life, moved earlier (never
// later) by up to Jitter of it, so that credentials issued together do not refresh together.
func (b *Broker) refreshLead(life time.Duration) time.Duration {
	return b.lead(life, b.cfg.RefreshLeft+b.cfg.Jitter*rand.Float64())
}

// maxMinTTL is the largest min_ttl that tokens of lifetime life always meet: what one has
// left at the latest refresh point the schedule draws, in whole seconds (min_ttl is sent in
// seconds).
func (b *Broker) maxMinTTL(life time.Duration) time.Duration {
	return b.lead(life, b.cfg.RefreshLeft).Truncate(time.Second)
}

// shortestPeriod is the shortest time the schedule leaves between receiving a token of
// lifetime life and refreshing it: the refresh period that no selection and no clock can
// shorten.
func (b *Broker) shortestPeriod(life time.Duration) time.Duration {
	return life - b.lead(life, b.cfg.RefreshLeft+b.cfg.Jitter)
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
	c, saved := e.cred, e.onDisk
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		tok, err := b.exchange(c, saved)
		b.mu.Lock()
		b.finishLocked(e, c, f, tok, err)
		b.mu.Unlock()
		close(f.done)
	}()
	return f
}

// exchange runs one grant for c. saved is the credential as its source holds it now, which a
// write-back of a rotated session must find there (it differs from c when an earlier write-back
// failed).
func (b *Broker) exchange(c, saved *sources.Credential) (*cached, error) {
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.ExchangeTimeout)
	defer cancel()
	var g *token.Token
	var err error
	switch c.Kind {
	case ipc.KindClientCredentials:
		g, err = b.cfg.Tokens.ClientCredentials(ctx, c.BaseURL, c.ClientCredentials)
	case ipc.KindLogin:
		if c.RefreshToken == "" {
			return nil, &token.Error{Op: "refresh", Permanent: true, Description: "the session has no refresh token"}
		}
		g, err = b.cfg.Tokens.Refresh(ctx, c.BaseURL, c.RefreshToken, c.DeviceCode)
	default:
		return nil, fmt.Errorf("nothing to exchange for a %s", c.Kind)
	}
	if err != nil {
		return nil, err
	}
	if c.Kind == ipc.KindLogin && g.RefreshToken == "" {
		g.RefreshToken = c.RefreshToken // not rotated: the session keeps its refresh token
	}
	t := b.fromGrant(g)
	t.refresh = g.RefreshToken
	t.rotated = c.Kind == ipc.KindLogin && g.RefreshToken != c.RefreshToken
	if c.Kind == ipc.KindLogin && b.cfg.Persist != nil {
		// Persist first: the old refresh token may already be dead on the server, so the new one
		// must reach disk before anyone can act on the new access token.
		if t.saved, t.saveErr = b.cfg.Persist(saved, g); t.saveErr != nil {
			b.cfg.Log.Error().Err(t.saveErr).Str("workspace", c.Workspace).Msg("could not save the refreshed session; it is kept in memory and the write is retried")
		}
	}
	return t, nil
}

// finishLocked records an exchange's result. b.mu is held.
func (b *Broker) finishLocked(e *entry, c *sources.Credential, f *flight, tok *cached, err error) {
	now := b.cfg.Clock.Now()
	e.flight = nil
	e.exchanges++
	f.tok, f.err = tok, err
	defer e.wake()
	log := b.cfg.Log.With().Str("workspace", c.Workspace).Str("kind", c.Kind).Str("source", c.Source.String()).Logger()
	if err == nil {
		b.countLocked(c.Kind, "ok", e.tok != nil)
		if c.Kind == ipc.KindLogin && e.cred == c {
			// Later exchanges use the rotated refresh token and the new access token.
			nc := *c
			nc.AccessToken, nc.RefreshToken = tok.value, tok.refresh
			e.cred = &nc
			e.hold(tok.refresh)
		}
		if c.Kind == ipc.KindLogin {
			e.rotates = &tok.rotated
		}
		e.tok = tok
		e.lifetime = tok.grant.Lifetime()
		e.notBefore = tok.grant.Received.Add(b.shortestPeriod(e.lifetime))
		tok.forced, e.eraseForward = e.eraseForward, false
		e.lastRefresh = now
		e.lastErr = nil
		e.failures = 0
		e.nextTry = time.Time{}
		if e.alert != "" {
			log.Info().Msg("the credential can be refreshed again")
			e.alert = ""
		}
		if c.Kind == ipc.KindLogin && b.cfg.Persist != nil {
			b.recordSaveLocked(e, tok.grant, tok.saved, tok.saveErr, now)
		}
		b.recordSkewLocked(e, tok.grant, log)
		log.Info().Time("expiry", tok.expiry).Dur("lifetime", e.lifetime).Time("refresh_at", tok.refreshAt).Msg("token refreshed")
		return
	}
	e.lastErr = err
	var xe *token.Error
	if errors.As(err, &xe) && xe.Permanent {
		b.countLocked(c.Kind, "refused", false)
		first := !e.permanent
		e.permanent = true
		log.Error().Err(err).Msg("credential refused; not retrying until its source changes")
		if first {
			b.refused.Notify()
		}
		if c.Kind != ipc.KindAPIKey {
			b.alertLocked(e, c, "refused")
		}
		return
	}
	b.countLocked(c.Kind, "failed", false)
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
	if e.tok == nil || !e.tok.expiry.After(now.Add(b.cfg.MinTTL)) {
		b.alertLocked(e, c, "failing")
	}
}

// recordSkewLocked notes how far the daemon's clock is off the endpoint's, as g's answer
// showed, and says so once at warning while it is over token.SkewTolerance. b.mu is held.
func (b *Broker) recordSkewLocked(e *entry, g *token.Token, log zerolog.Logger) {
	skew, ok := g.Skew()
	if !ok {
		return
	}
	e.skew, e.skewKnown = skew, true
	if skew.Abs() <= token.SkewTolerance {
		e.skewWarned = false
		return
	}
	if e.skewWarned {
		return
	}
	e.skewWarned = true
	from := "the answer's Date header"
	if g.Date.IsZero() {
		from = "the token's iat"
	}
	log.Warn().Dur("clock_skew", skew).Str("measured_from", from).
		Msgf("the daemon's clock is %s the token endpoint's; tokens are refreshed on the lifetime they were issued for and their expiry is moved onto the daemon's clock (fix the clock: bl and the SDKs reading the bl config judge exp on their own)", describeSkew(skew))
}

// describeSkew says how far ahead or behind a skew puts the local clock: "2h0m0s ahead of",
// "45s behind". A measurement is good to a second or two, so one of an hour or more is said to
// the minute, as status says it.
func describeSkew(d time.Duration) string {
	side := " ahead of"
	if d < 0 {
		d, side = -d, " behind"
	}
	if d >= time.Hour {
		return d.Round(time.Minute).String() + side
	}
	return d.Round(time.Second).String() + side
}

// recordSaveLocked notes the outcome of writing session g back to e's source. b.mu is held.
func (b *Broker) recordSaveLocked(e *entry, g *token.Token, saved bool, err error, now time.Time) {
	if err == nil {
		e.unsaved, e.saveErr, e.saveTries = nil, nil, 0
		if !saved {
			return
		}
		// The source now holds g: a later write-back must find g's refresh token there.
		s := *e.onDisk
		s.AccessToken, s.RefreshToken = g.AccessToken, g.RefreshToken
		e.onDisk = &s
		return
	}
	e.unsaved, e.saveErr = g, err
	e.saveTries++
	e.nextSave = now.Add(min(persistRetryMin<<min(e.saveTries-1, 8), persistRetryMax))
}

// saveLocked retries writing back e's unsaved session in the background. b.mu is held.
func (b *Broker) saveLocked(e *entry) {
	e.saving = true
	g, saved := e.unsaved, e.onDisk
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		ok, err := b.cfg.Persist(saved, g)
		b.mu.Lock()
		defer b.mu.Unlock()
		e.saving = false
		if e.unsaved != g {
			return // a newer session replaced it meanwhile
		}
		log := b.cfg.Log.With().Str("workspace", e.cred.Workspace).Logger()
		if err == nil {
			log.Info().Msg("the refreshed session was saved on a retry")
		} else if e.saveTries%10 == 0 {
			log.Warn().Err(err).Int("tries", e.saveTries).Msg("still cannot save the refreshed session")
		}
		b.recordSaveLocked(e, g, ok, err, b.cfg.Clock.Now())
	}()
}

// Tick refreshes what is due and drops what is idle. The daemon calls it periodically; judging
// expiry on the wall clock here is what covers suspend, resume and clock jumps.
func (b *Broker) Tick() {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.cfg.Clock.Now()
	for k, e := range b.entries {
		idle := now.Sub(e.lastUsed) > b.cfg.IdleTTL && e.holds == 0
		if idle && !e.keepFresh && e.flight == nil {
			delete(b.entries, k)
			continue
		}
		if e.tok != nil && !e.tok.expiry.After(now) {
			e.tok = nil // never serve it again
			e.wake()
			// The tries made while it lived were spaced by its remaining life; without a token
			// the no-token cap applies from now on.
			if e.nextTry.Sub(now) > noTokenMaxWait {
				e.nextTry = now.Add(noTokenMaxWait)
			}
		}
		if b.dueLocked(e, now) && (e.keepFresh || e.holds > 0 || !idle) {
			b.maybeStartLocked(e, now)
		}
		if e.unsaved != nil && !e.saving && e.flight == nil && !now.Before(e.nextSave) {
			b.saveLocked(e)
		}
	}
}

// Track registers a credential the daemon holds itself, so that Tick keeps its token fresh
// even if nobody asks: a bl login session refreshed here is one that bl and the SDKs reading the
// same file never have to refresh. It makes no network call.
func (b *Broker) Track(c *sources.Credential) {
	if c.Kind == ipc.KindAPIKey {
		return
	}
	b.mu.Lock()
	e := b.entryLocked(c.AppendKey(nil), c, true)
	e.lastUsed = b.cfg.Clock.Now()
	b.mu.Unlock()
}

// Erase drops the cached token of c, so the next Get exchanges again (git calls erase after a
// 401). When value is not empty, only a cached token equal to it is dropped. An erase brings
// the next exchange forward once per refresh period: the token it brought is not dropped by
// another erase until its period is over (a second new token would not cure a 401 the first
// did not, and the endpoint would be asked once per erase).
func (b *Broker) Erase(c *sources.Credential, value string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entries[c.Key()]
	if e == nil || e.tok == nil || (value != "" && e.tok.value != value) {
		return false
	}
	if now := b.cfg.Clock.Now(); now.Before(e.notBefore) {
		if e.tok.forced {
			b.cfg.Log.Warn().Str("workspace", c.Workspace).Dur("next_refresh_in", e.notBefore.Sub(now)).
				Msg("erase not done: the token was fetched after an erase in this refresh period already")
			return false
		}
		e.notBefore, e.eraseForward = time.Time{}, true
	}
	e.tok = nil
	e.nextTry = time.Time{}
	e.wake()
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

// Status lists the cached credentials, sorted by workspace.
func (b *Broker) Status() []ipc.CachedStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]ipc.CachedStatus, 0, len(b.entries))
	for _, e := range b.entries {
		out = append(out, e.status())
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Workspace != out[j].Workspace {
			return out[i].Workspace < out[j].Workspace
		}
		return out[i].Source < out[j].Source
	})
	return out
}

// Lookup returns the state of c's cached token, if the broker holds one.
func (b *Broker) Lookup(c *sources.Credential) (ipc.CachedStatus, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entries[c.Key()]
	if e == nil {
		return ipc.CachedStatus{}, false
	}
	return e.status(), true
}

// status describes e without secrets. The broker's mutex is held.
func (e *entry) status() ipc.CachedStatus {
	s := ipc.CachedStatus{Workspace: e.cred.Workspace, Kind: e.cred.Kind, Source: e.cred.Source.String(),
		LastRefresh: e.lastRefresh, Refused: e.permanent, NextTry: e.nextTry, Exchanges: e.exchanges, KeptFresh: e.keepFresh || e.holds > 0}
	if e.tok != nil {
		s.Expiry, s.RefreshAt = e.tok.expiry, e.tok.refreshAt
	}
	s.Lifetime = int64(e.lifetime / time.Second)
	if e.skewKnown && e.skew.Abs() > token.SkewTolerance {
		s.ClockSkew = int64(e.skew.Round(time.Second) / time.Second)
	}
	if e.lastErr != nil {
		s.LastError = e.lastErr.Error()
	}
	if e.saveErr != nil {
		s.WriteBackError = e.saveErr.Error()
	}
	if e.rotates != nil {
		s.RefreshTokenRotates = new(*e.rotates)
	}
	s.Alert = e.alert
	return s
}

// Counters count what the broker did since it started, for metrics.
type Counters struct {
	// Exchanges counts requests to token endpoints by credential kind, then by result: "ok",
	// "failed" (transient) or "refused" (permanent).
	Exchanges map[string]map[string]int
	// Refreshes counts exchanges that replaced a token still held (refreshes before expiry).
	Refreshes int
}

// Counters returns a copy of the broker's counters.
func (b *Broker) Counters() Counters {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := Counters{Refreshes: b.counts.Refreshes, Exchanges: map[string]map[string]int{}}
	for k, m := range b.counts.Exchanges {
		c.Exchanges[k] = map[string]int{}
		for r, n := range m {
			c.Exchanges[k][r] = n
		}
	}
	return c
}

// countLocked records one exchange's result. b.mu is held.
func (b *Broker) countLocked(kind, result string, replaced bool) {
	if b.counts.Exchanges == nil {
		b.counts.Exchanges = map[string]map[string]int{}
	}
	if b.counts.Exchanges[kind] == nil {
		b.counts.Exchanges[kind] = map[string]int{}
	}
	b.counts.Exchanges[kind][result]++
	if replaced {
		b.counts.Refreshes++
	}
}

// Refused returns a channel closed the next time a credential is refused for good: its source
// may be worth reading again (bl may have logged in since).
func (b *Broker) Refused() <-chan struct{} { return b.refused.Wait() }

// MinTTL is the least life a token the broker serves has left.
func (b *Broker) MinTTL() time.Duration { return b.cfg.MinTTL }

// A Hold keeps a credential's token fresh while a watcher follows it, even when nobody asks
// with a get, keeps its entry from being dropped as idle, and wakes its watcher when the token
// changes. The zero Hold (of an API key, or of a credential no Get has made an entry for)
// holds nothing and never wakes anyone.
type Hold struct {
	b    *Broker
	e    *entry
	once sync.Once
}

// Holder is what Hold returns.
type Holder interface{ Release() }

// Hold starts holding c's entry and calls wake at each change of its token, with the broker's
// lock held: wake must not block (a watcher moves a read deadline). Release ends it.
func (b *Broker) Hold(c *sources.Credential, wake func()) Holder {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entries[c.Key()]
	if e == nil || c.Kind == ipc.KindAPIKey {
		return &Hold{}
	}
	h := &Hold{b: b, e: e}
	e.holds++
	if e.wakes == nil {
		e.wakes = map[*Hold]func(){}
	}
	e.wakes[h] = wake
	return h
}

// wake calls the wakes of e's watchers. b.mu is held.
func (e *entry) wake() {
	for _, w := range e.wakes {
		w()
	}
}

// Release ends the hold; later calls do nothing.
func (h *Hold) Release() {
	if h == nil || h.e == nil {
		return
	}
	h.once.Do(func() {
		h.b.mu.Lock()
		h.e.holds--
		delete(h.e.wakes, h)
		h.b.mu.Unlock()
	})
}

// Wait waits for exchanges in flight to finish (after the daemon's context is cancelled they
// end promptly).
func (b *Broker) Wait() { b.wg.Wait() }
