package keyring

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/rs/zerolog"
	gokeyring "github.com/zalando/go-keyring"

	"github.com/blauth/blauth/ipc"
)

// Keyring defaults and limits.
const (
	// DefaultService is the keyring service name blauth's items are stored under.
	DefaultService = "blauth"
	// DefaultTimeout is the time box of one Keyring call when Keyring.Timeout is zero.
	DefaultTimeout = 3 * time.Second

	// keyringIndexUser is the user of the item that lists the workspaces, since go-keyring
	// cannot enumerate items.
	keyringIndexUser = ".index"
	// keyringItemVersion is the "v" of the item format.
	keyringItemVersion = 1
	// Upper bounds that keep an item well inside every platform's limits (the macOS Keychain
	// allows about 3000 bytes for service, user and secret together).
	maxKeyringWorkspace = 256
	maxKeyringValue     = 2048
)

var (
	// ErrNotFound means the keyring holds no blauth item for the workspace.
	ErrNotFound = errors.New("no secret in the OS keyring")
	// ErrUnavailable means the OS keyring could not be used: no D-Bus session bus, no
	// Secret Service, a locked collection, a dismissed prompt, or no answer within the time
	// box (then the error also wraps context.DeadlineExceeded). The error wraps the cause.
	ErrUnavailable = errors.New("OS keyring unavailable")
	// ErrInvalid means an argument was refused before the keyring was touched: a bad
	// workspace name, an unknown kind, or an empty, oversized or multi-line secret.
	ErrInvalid = errors.New("invalid keyring request")
	// ErrCorrupt means a blauth keyring item exists but does not hold blauth's format
	// (it was edited by hand, or written by a newer blauth).
	ErrCorrupt = errors.New("keyring item not in blauth's format")
	// ErrNoSessionBus means there is no D-Bus session bus to reach the Secret Service through:
	// DBUS_SESSION_BUS_ADDRESS is not set and $XDG_RUNTIME_DIR/bus is not a socket. Errors
	// matching it also match ErrKeyringUnavailable. blauth never launches a bus itself.
	ErrNoSessionBus = errors.New("no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is not set and $XDG_RUNTIME_DIR/bus does not exist)")
)

// sessionBusMu serialises the check and the setting of DBUS_SESSION_BUS_ADDRESS.
var sessionBusMu sync.Mutex

// ensureSessionBus makes sure the keyring library will find an existing session bus and never
// launch one. Started without a bus address (by a service manager, in CI, or spawned by the
// helper), go-keyring's D-Bus library runs dbus-launch, which leaves a dbus-daemon and a locked
// gnome-keyring-daemon running after blauthd exits. So: an address in DBUS_SESSION_BUS_ADDRESS
// is used as it is (unless it asks for autolaunch); without one, the bus at $XDG_RUNTIME_DIR/bus
// is used if it is a socket, by setting the address for the whole process (the library reads it
// once, when it first connects); otherwise ErrNoSessionBus.
func ensureSessionBus() error {
	switch runtime.GOOS {
	case "darwin", "windows":
		return nil // the Keychain and the Credential Manager need no bus
	}
	sessionBusMu.Lock()
	defer sessionBusMu.Unlock()
	if a := os.Getenv("DBUS_SESSION_BUS_ADDRESS"); a != "" && !strings.HasPrefix(a, "autolaunch:") {
		return nil
	}
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" && filepath.IsAbs(dir) {
		bus := filepath.Join(dir, "bus")
		if fi, err := os.Stat(bus); err == nil && fi.Mode()&fs.ModeSocket != 0 {
			return os.Setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path="+escapeBusAddressValue(bus))
		}
	}
	return ErrNoSessionBus
}

// escapeBusAddressValue escapes a value of a D-Bus address as the specification asks: every
// byte outside [-0-9A-Za-z_/.\\*] as %xx.
func escapeBusAddressValue(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '-' || c == '_' || c == '/' || c == '.' || c == '\\' || c == '*' ||
			'0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02x", c)
		}
	}
	return b.String()
}

// checkBus is ensureSessionBus for the real backend (a test's fake needs no bus), as an error
// matching ErrKeyringUnavailable and ErrNoSessionBus.
func (k *Keyring) checkBus() error {
	if k.backend != nil {
		return nil
	}
	if err := ensureSessionBus(); err != nil {
		if errors.Is(err, ErrNoSessionBus) {
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return fmt.Errorf("%w: setting DBUS_SESSION_BUS_ADDRESS: %w", ErrUnavailable, err)
	}
	return nil
}

// keyringHint is appended to ErrKeyringUnavailable errors: what the user can check.
func keyringHint() string {
	switch runtime.GOOS {
	case "darwin":
		return "is the login Keychain unlocked?"
	case "windows":
		return "is the Credential Manager available in this session?"
	}
	return "is a Secret Service (such as gnome-keyring) running on the session bus, with its collection unlocked?"
}

// Secret is what one keyring item holds.
type Secret struct {
	// Kind is ipc.KindAPIKey or ipc.KindClientCredentials.
	Kind string `json:"kind"`
	// Value is the API key, or BL_CLIENT_CREDENTIALS as given (base64 of "id:secret").
	Value string `json:"value"`
}

// String describes s without its value, so that printing a KeyringSecret cannot leak it.
func (s Secret) String() string { return s.Kind + " secret" }

// GoString shows the kind only, for %#v.
func (s Secret) GoString() string {
	return fmt.Sprintf("sources.KeyringSecret{Kind:%q, Value:<redacted>}", s.Kind)
}

// keyringItem is the stored form of a KeyringSecret: {"v":1,"kind":…,"value":…}.
type keyringItem struct {
	V     int    `json:"v"`
	Kind  string `json:"kind"`
	Value string `json:"value"`
}

// keyringBackend is the OS keyring as go-keyring exposes it. A missing item is reported as an
// error that errors.Is matches against gokeyring.ErrNotFound.
type keyringBackend interface {
	Get(service, user string) (string, error)
	Set(service, user, value string) error
	Delete(service, user string) error
}

// goKeyring is the real backend: the Secret Service on Linux and BSD, the Keychain on macOS,
// the Credential Manager on Windows.
type goKeyring struct{}

func (goKeyring) Get(service, user string) (string, error) { return gokeyring.Get(service, user) }
func (goKeyring) Set(service, user, value string) error    { return gokeyring.Set(service, user, value) }
func (goKeyring) Delete(service, user string) error        { return gokeyring.Delete(service, user) }

// Keyring stores Blaxel secrets in the OS keyring, one item per workspace under service Service
// (user = the workspace name), plus an index item (user ".index", a sorted JSON array of the
// workspace names) that List reads, because the keyring API cannot enumerate items. docs/KEYRING.md
// describes the stored format.
//
// Every call, index upkeep included, is time-boxed by Timeout (or the caller's context deadline,
// if sooner): an absent or locked Secret Service never blocks the caller for longer, and the
// call returns an error matching ErrKeyringUnavailable and context.DeadlineExceeded. Calls are
// serialised; after a call overruns its time box, later calls fail at once with
// ErrKeyringUnavailable until the stuck call returns. A caller that cancels its context gets
// context.Canceled. Errors and logs never contain a secret value.
//
// The zero value is ready to use with the defaults. A Keyring is safe for concurrent use; it must
// not be copied after first use.
type Keyring struct {
	// Service is the keyring service name; DefaultKeyringService ("blauth") when empty.
	Service string
	// Timeout is the time box of each call; DefaultKeyringTimeout (3s) when zero or negative.
	Timeout time.Duration
	// Log receives timeouts, recoveries and index repairs, never secrets. The zero value logs
	// nothing.
	Log zerolog.Logger

	backend keyringBackend // go-keyring when nil; tests inject a fake

	mu         sync.Mutex    // guards the fields below
	sem        chan struct{} // capacity 1: held while a backend call runs, even past its time box
	hung       bool          // a call overran its time box and has not returned yet
	hungSince  time.Time
	becameHung chan struct{} // closed (and replaced) when a call is marked hung, to wake waiters
}

func (k *Keyring) service() string { return cmp.Or(k.Service, DefaultService) }

func (k *Keyring) timeout() time.Duration {
	if k.Timeout <= 0 {
		return DefaultTimeout
	}
	return k.Timeout
}

func (k *Keyring) impl() keyringBackend { return cmp.Or[keyringBackend](k.backend, goKeyring{}) }

// Get returns the secret stored for workspace. It returns an error matching ErrKeyringNotFound
// when there is none, ErrKeyringUnavailable when the keyring cannot be used, ErrKeyringCorrupt
// when the item is not in blauth's format.
func (k *Keyring) Get(ctx context.Context, workspace string) (Secret, error) {
	op := fmt.Sprintf("keyring: reading the secret of workspace %q", workspace)
	if err := validKeyringWorkspace(workspace); err != nil {
		return Secret{}, fmt.Errorf("%s: %w", op, err)
	}
	raw, err := keyringCall(ctx, k, op, func(b keyringBackend) (string, error) {
		return b.Get(k.service(), workspace)
	})
	if err != nil {
		return Secret{}, err
	}
	s, err := decodeKeyringItem(raw)
	if err != nil {
		return Secret{}, fmt.Errorf("%s: %w: %s; save it again with `blauth-helper login %s`", op, ErrCorrupt, err, workspace)
	}
	return s, nil
}

// Set stores s for workspace, replacing any earlier secret, and adds workspace to the index. If
// the item is written but the index is not, the error says so; calling Set again repairs it.
func (k *Keyring) Set(ctx context.Context, workspace string, s Secret) error {
	op := fmt.Sprintf("keyring: saving the secret of workspace %q", workspace)
	if err := validKeyringWorkspace(workspace); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := validKeyringSecret(s); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	item := encodeKeyringItem(s)
	_, err := keyringCall(ctx, k, op, func(b keyringBackend) (struct{}, error) {
		if err := b.Set(k.service(), workspace, item); err != nil {
			return struct{}{}, redactError(err, item, s.Value)
		}
		return struct{}{}, k.updateIndex(b, func(names []string) []string {
			if i, found := slices.BinarySearch(names, workspace); !found {
				names = slices.Insert(names, i, workspace)
			}
			return names
		})
	})
	return err
}

// Delete removes the secret of workspace and drops workspace from the index. It returns an error
// matching ErrKeyringNotFound when there was no item (a stale index entry is dropped all the
// same).
func (k *Keyring) Delete(ctx context.Context, workspace string) error {
	op := fmt.Sprintf("keyring: deleting the secret of workspace %q", workspace)
	if err := validKeyringWorkspace(workspace); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	_, err := keyringCall(ctx, k, op, func(b keyringBackend) (struct{}, error) {
		delErr := b.Delete(k.service(), workspace)
		if delErr != nil && !errors.Is(delErr, gokeyring.ErrNotFound) {
			return struct{}{}, delErr
		}
		if err := k.updateIndex(b, func(names []string) []string {
			if i, found := slices.BinarySearch(names, workspace); found {
				names = slices.Delete(names, i, i+1)
			}
			return names
		}); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, delErr
	})
	return err
}

// List returns the workspaces that have a secret, sorted, as recorded in the index (an empty,
// non-nil slice when there are none). An item added or removed behind blauth's back (with
// secret-tool, say) is not reflected: Get of a listed workspace may then report ErrKeyringNotFound.
func (k *Keyring) List(ctx context.Context) ([]string, error) {
	return keyringCall(ctx, k, "keyring: listing workspaces", k.readIndex)
}

// Probe checks, within the time box, that the keyring answers: it reads the index item, which
// exercises the session bus, the Secret Service and the unlocking of its collection. A missing
// index is success. Without a session bus it fails at once with an error matching
// ErrKeyringUnavailable and ErrNoSessionBus, without touching the keyring library (blauthd
// checks for a bus at start, with CheckSessionBus, and runs without the keyring when there is
// none).
func (k *Keyring) Probe(ctx context.Context) error {
	_, err := keyringCall(ctx, k, "keyring: probing", func(b keyringBackend) (struct{}, error) {
		_, err := b.Get(k.service(), keyringIndexUser)
		if errors.Is(err, gokeyring.ErrNotFound) {
			err = nil
		}
		return struct{}{}, err
	})
	return err
}

// classify turns a backend error into one of the package's sentinels. Errors that already carry
// one (time box, corrupt index) pass through with op prepended.
func (k *Keyring) classify(op string, err error) error {
	switch {
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrCorrupt),
		errors.Is(err, ErrInvalid), errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: %w", op, err)
	case errors.Is(err, gokeyring.ErrNotFound):
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	case errors.Is(err, gokeyring.ErrSetDataTooBig):
		return fmt.Errorf("%s: %w: the keyring refused the secret as too large", op, ErrInvalid)
	default:
		return fmt.Errorf("%s: %w: %w; %s", op, ErrUnavailable, err, keyringHint())
	}
}

// readIndex returns the names in the index item, sorted and without duplicates.
func (k *Keyring) readIndex(b keyringBackend) ([]string, error) {
	raw, err := b.Get(k.service(), keyringIndexUser)
	if errors.Is(err, gokeyring.ErrNotFound) {
		return []string{}, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	if err := json.Unmarshal([]byte(raw), &names); err != nil {
		return nil, fmt.Errorf("%w: the index item (user %q) is not a JSON array of names", ErrCorrupt, keyringIndexUser)
	}
	for _, n := range names {
		if validKeyringWorkspace(n) != nil {
			return nil, fmt.Errorf("%w: the index item (user %q) holds an invalid workspace name", ErrCorrupt, keyringIndexUser)
		}
	}
	if names == nil {
		names = []string{}
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// updateIndex applies edit to the index and writes it back if it changed; an empty index is
// deleted. A corrupt index is replaced (go-keyring cannot list items to rebuild it), with a
// warning.
func (k *Keyring) updateIndex(b keyringBackend, edit func([]string) []string) error {
	names, err := k.readIndex(b)
	corrupt := errors.Is(err, ErrCorrupt)
	switch {
	case corrupt:
		k.Log.Warn().Str("service", k.service()).Err(err).Msg("keyring index unreadable; replacing it, workspaces saved earlier are no longer listed until saved again")
		names = []string{}
	case err != nil:
		return fmt.Errorf("updating the index: %w", err)
	}
	old := slices.Clone(names)
	names = edit(names)
	if !corrupt && slices.Equal(old, names) {
		return nil
	}
	if len(names) == 0 {
		err = b.Delete(k.service(), keyringIndexUser)
		if errors.Is(err, gokeyring.ErrNotFound) {
			err = nil
		}
	} else {
		data, _ := json.Marshal(names) // a []string always marshals
		err = b.Set(k.service(), keyringIndexUser, string(data))
	}
	if err != nil {
		return fmt.Errorf("updating the index: %w", err)
	}
	return nil
}

// keyringResult carries a backend call's outcome out of its goroutine.
type keyringResult[T any] struct {
	v   T
	err error
}

// keyringCall runs fn against the backend in its own goroutine, one call at a time, and waits at
// most the time box (or until ctx is done). Without a session bus it fails at once (checkBus),
// before the keyring library is touched. When the box expires first it returns an error
// matching ErrKeyringUnavailable and context.DeadlineExceeded and marks the keyring hung: later
// calls fail at once, without queueing behind the stuck one, until it returns. fn's goroutine
// holds the call slot until the backend returns, so the backend never sees two calls at once.
// Its errors are classified (classify) and name op.
func keyringCall[T any](ctx context.Context, k *Keyring, op string, fn func(keyringBackend) (T, error)) (_ T, err error) {
	defer func() {
		if err != nil {
			err = k.classify(op, err)
		}
	}()
	var zero T
	if err := k.checkBus(); err != nil {
		return zero, err
	}
	timeout := k.timeout()
	boxErr := fmt.Errorf("no answer within %s: %w", timeout, context.DeadlineExceeded)
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, boxErr)
	defer cancel()

	if ctx.Err() != nil { // the caller gave up already: do not start a call nobody waits for
		return zero, k.doneError(ctx, "")
	}
	sem, err := k.acquire(ctx)
	if err != nil {
		return zero, err
	}
	start := time.Now()
	done := make(chan keyringResult[T], 1)
	b := k.impl()
	go func() {
		var r keyringResult[T]
		func() {
			defer func() {
				if p := recover(); p != nil {
					// The panic value is not reported: it could quote a secret.
					r = keyringResult[T]{err: errors.New("the keyring library panicked")}
				}
			}()
			r.v, r.err = fn(b)
		}()
		k.mu.Lock()
		if k.hung {
			k.hung = false
			k.Log.Info().Str("service", k.service()).Str("call", op).Dur("after", time.Since(start)).
				Msg("stuck keyring call returned; keyring calls resume")
		}
		<-sem
		done <- r // buffered: never blocks, and sent under mu so the timeout path below sees it
		k.mu.Unlock()
	}()

	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	select {
	case r := <-done: // it returned just as the box closed
		return r.v, r.err
	default:
	}
	if context.Cause(ctx) == boxErr {
		// Later calls fail at once until this one returns.
		k.hung, k.hungSince = true, start
		close(k.becameHung)
		k.becameHung = make(chan struct{})
		k.Log.Warn().Str("service", k.service()).Str("call", op).Dur("timeout", timeout).
			Msg("keyring call timed out; keyring calls fail at once until it returns")
	}
	return zero, k.doneError(ctx, "")
}

// acquire takes the keyring's one call slot (sem, which the call releases), unless a call is
// stuck past its time box or ctx ends first.
func (k *Keyring) acquire(ctx context.Context) (chan struct{}, error) {
	k.mu.Lock()
	if k.sem == nil {
		k.sem = make(chan struct{}, 1)
		k.becameHung = make(chan struct{})
	}
	if k.hung {
		err := k.hungError()
		k.mu.Unlock()
		return nil, err
	}
	sem, wake := k.sem, k.becameHung
	k.mu.Unlock()
	select {
	case sem <- struct{}{}:
		return sem, nil
	case <-wake:
		k.mu.Lock()
		defer k.mu.Unlock()
		return nil, k.hungError()
	case <-ctx.Done():
		return nil, k.doneError(ctx, "waiting for an earlier keyring call")
	}
}

// doneError reports why ctx ended: the time box (or a caller's deadline) is ErrKeyringUnavailable,
// a cancellation by the caller is just that.
func (k *Keyring) doneError(ctx context.Context, what string) error {
	cause := context.Cause(ctx)
	if what != "" {
		cause = fmt.Errorf("%s: %w", what, cause)
	}
	if errors.Is(cause, context.Canceled) {
		return cause
	}
	return fmt.Errorf("%w: %w; %s", ErrUnavailable, cause, keyringHint())
}

// hungError is the fail-fast error while a timed-out call is still stuck. k.mu is held.
func (k *Keyring) hungError() error {
	return fmt.Errorf("%w: a keyring call has been stuck for %s (no answer within %s); %s",
		ErrUnavailable, time.Since(k.hungSince).Round(time.Millisecond), k.timeout(), keyringHint())
}

// validKeyringWorkspace checks a workspace name used as a keyring user.
func validKeyringWorkspace(w string) error {
	switch {
	case w == "":
		return fmt.Errorf("%w: empty workspace name", ErrInvalid)
	case w == keyringIndexUser:
		return fmt.Errorf("%w: workspace name %q is reserved", ErrInvalid, w)
	case len(w) > maxKeyringWorkspace:
		return fmt.Errorf("%w: workspace name longer than %d bytes", ErrInvalid, maxKeyringWorkspace)
	case !utf8.ValidString(w):
		return fmt.Errorf("%w: workspace name %q is not valid UTF-8", ErrInvalid, w)
	case strings.IndexFunc(w, unicode.IsControl) >= 0:
		return fmt.Errorf("%w: workspace name %q contains a control character", ErrInvalid, w)
	}
	return nil
}

// validKeyringSecret checks a secret before it is stored or after it is read. Its errors never
// quote the value.
func validKeyringSecret(s Secret) error {
	switch {
	case s.Kind != ipc.KindAPIKey && s.Kind != ipc.KindClientCredentials:
		return fmt.Errorf("%w: kind must be %q or %q", ErrInvalid, ipc.KindAPIKey, ipc.KindClientCredentials)
	case s.Value == "":
		return fmt.Errorf("%w: empty %s", ErrInvalid, s.Kind)
	case len(s.Value) > maxKeyringValue:
		return fmt.Errorf("%w: %s longer than %d bytes", ErrInvalid, s.Kind, maxKeyringValue)
	case strings.ContainsAny(s.Value, "\r\n\x00"):
		return fmt.Errorf("%w: %s contains CR, LF or NUL", ErrInvalid, s.Kind)
	}
	return nil
}

func encodeKeyringItem(s Secret) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(keyringItem{V: keyringItemVersion, Kind: s.Kind, Value: s.Value}) // strings always encode
	return strings.TrimSuffix(buf.String(), "\n")
}

// decodeKeyringItem parses a stored item. Its errors never quote the item.
func decodeKeyringItem(raw string) (Secret, error) {
	var it keyringItem
	if err := json.Unmarshal([]byte(raw), &it); err != nil {
		return Secret{}, errors.New("not a JSON object")
	}
	if it.V != keyringItemVersion {
		return Secret{}, fmt.Errorf("format version %d, this blauth reads version %d", it.V, keyringItemVersion)
	}
	s := Secret{Kind: it.Kind, Value: it.Value}
	if err := validKeyringSecret(s); err != nil {
		return Secret{}, errors.New("unknown kind, or an empty, oversized or multi-line value")
	}
	return s, nil
}

// redactError returns err, or, when its text quotes one of secrets, an error with the same
// classification and the secrets cut out. The original chain is dropped so that unwrapping
// cannot reach the secret either.
func redactError(err error, secrets ...string) error {
	msg := err.Error()
	leaks := false
	for _, s := range secrets {
		// The secret as is, and as %q or JSON would have quoted it.
		quoted := strconv.Quote(s)
		jsoned, _ := json.Marshal(s)
		for _, form := range []string{quoted[1 : len(quoted)-1], string(jsoned[1 : len(jsoned)-1]), s} {
			if form != "" && strings.Contains(msg, form) {
				leaks = true
				msg = strings.ReplaceAll(msg, form, "[redacted]")
			}
		}
	}
	if !leaks {
		return err
	}
	switch {
	case errors.Is(err, gokeyring.ErrNotFound):
		return fmt.Errorf("%w (%s)", gokeyring.ErrNotFound, msg)
	case errors.Is(err, gokeyring.ErrSetDataTooBig):
		return fmt.Errorf("%w (%s)", gokeyring.ErrSetDataTooBig, msg)
	}
	return errors.New(msg)
}
