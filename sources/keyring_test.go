package sources

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	gokeyring "github.com/zalando/go-keyring"

	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/ipc"
)

// fakeKeyring is an in-memory keyringBackend. It records overlapping calls (Keyring must
// serialise them), can fail or block every call, and reports each call on entered.
type fakeKeyring struct {
	mu       sync.Mutex
	items    map[string]string // service + "\x00" + user → value
	calls    int
	inflight int
	overlaps int

	fail    func(op, service, user, value string) error // when non-nil and returning non-nil
	block   chan struct{}                               // when non-nil, calls wait for it to close
	entered chan string                                 // when non-nil, receives op on each call
	panics  bool
}

func newFakeKeyring() *fakeKeyring { return &fakeKeyring{items: map[string]string{}} }

func (f *fakeKeyring) call(op, service, user, value string, do func() (string, error)) (string, error) {
	f.mu.Lock()
	f.calls++
	f.inflight++
	if f.inflight > 1 {
		f.overlaps++
	}
	block, entered, fail, panics := f.block, f.entered, f.fail, f.panics
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inflight--
		f.mu.Unlock()
	}()
	if entered != nil {
		entered <- op
	}
	if block != nil {
		<-block
	}
	if panics {
		panic("backend exploded while storing " + value)
	}
	if fail != nil {
		if err := fail(op, service, user, value); err != nil {
			return "", err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return do()
}

func (f *fakeKeyring) Get(service, user string) (string, error) {
	return f.call("get", service, user, "", func() (string, error) {
		v, ok := f.items[service+"\x00"+user]
		if !ok {
			return "", gokeyring.ErrNotFound
		}
		return v, nil
	})
}

func (f *fakeKeyring) Set(service, user, value string) error {
	_, err := f.call("set", service, user, value, func() (string, error) {
		f.items[service+"\x00"+user] = value
		return "", nil
	})
	return err
}

func (f *fakeKeyring) Delete(service, user string) error {
	_, err := f.call("delete", service, user, "", func() (string, error) {
		k := service + "\x00" + user
		if _, ok := f.items[k]; !ok {
			return "", gokeyring.ErrNotFound
		}
		delete(f.items, k)
		return "", nil
	})
	return err
}

// raw returns the stored value and whether it exists, bypassing Keyring.
func (f *fakeKeyring) raw(service, user string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.items[service+"\x00"+user]
	return v, ok
}

func (f *fakeKeyring) put(service, user, value string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.items[service+"\x00"+user] = value
}

func (f *fakeKeyring) stats() (calls, overlaps int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls, f.overlaps
}

func (f *fakeKeyring) setBlock(c chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.block = c
}

func testKeyring(t *testing.T) (*Keyring, *fakeKeyring, *testkit.SyncBuffer) {
	t.Helper()
	f := newFakeKeyring()
	logs := &testkit.SyncBuffer{}
	log := zerolog.New(io.MultiWriter(zerolog.NewTestWriter(t), logs)).Level(zerolog.DebugLevel)
	return &Keyring{Timeout: 5 * time.Second, Log: log, backend: f}, f, logs
}

// unblock lets the calls stuck in f return and waits until k has seen them return, so that
// nothing logs after the test ends.
func unblock(t *testing.T, k *Keyring, f *fakeKeyring, release chan struct{}) {
	t.Helper()
	f.mu.Lock()
	f.block, f.entered = nil, nil
	f.mu.Unlock()
	close(release)
	deadline := time.Now().Add(30 * time.Second)
	for {
		k.mu.Lock()
		idle := !k.hung && len(k.sem) == 0
		k.mu.Unlock()
		if idle {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("a stuck keyring call did not return 30s after it was released")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestKeyringRoundTrip(t *testing.T) {
	ctx := context.Background()
	k, f, _ := testKeyring(t)

	secrets := map[string]KeyringSecret{
		"acme-prod":  {Kind: ipc.KindAPIKey, Value: "bl_FAKEKEY-prod"},
		"acme-sa":    {Kind: ipc.KindClientCredentials, Value: "Y2xpZW50LWlkOmNsaWVudC1zZWNyZXQ="},
		"Ünïcode ws": {Kind: ipc.KindAPIKey, Value: `quote" back\slash <html> & é`},
	}
	for ws, s := range secrets {
		if err := k.Set(ctx, ws, s); err != nil {
			t.Fatalf("Set(%q): %v", ws, err)
		}
	}
	for ws, want := range secrets {
		got, err := k.Get(ctx, ws)
		if err != nil || got != want {
			t.Errorf("Get(%q) = %v, %v; want %v", ws, got.Value, err, want.Value)
		}
	}

	// The stored format is exactly {"v":1,"kind":…,"value":…}, under service "blauth".
	raw, ok := f.raw("blauth", "acme-prod")
	if want := `{"v":1,"kind":"api_key","value":"bl_FAKEKEY-prod"}`; !ok || raw != want {
		t.Errorf("stored item = %q, %v; want %q", raw, ok, want)
	}
	raw, _ = f.raw("blauth", "Ünïcode ws")
	if want := `{"v":1,"kind":"api_key","value":"quote\" back\\slash <html> & é"}`; raw != want {
		t.Errorf("stored item = %q; want %q", raw, want)
	}
	index, _ := f.raw("blauth", ".index")
	if want := `["acme-prod","acme-sa","Ünïcode ws"]`; index != want {
		t.Errorf("index = %q; want %q", index, want)
	}
	names, err := k.List(ctx)
	if err != nil || strings.Join(names, ",") != "acme-prod,acme-sa,Ünïcode ws" {
		t.Errorf("List = %q, %v", names, err)
	}

	// Overwrite, with the other kind.
	repl := KeyringSecret{Kind: ipc.KindClientCredentials, Value: "bmV3LWlkOm5ldy1zZWNyZXQ="}
	if err := k.Set(ctx, "acme-prod", repl); err != nil {
		t.Fatal(err)
	}
	if got, err := k.Get(ctx, "acme-prod"); err != nil || got != repl {
		t.Errorf("Get after overwrite = %v, %v; want %v", got, err, repl)
	}
	if index2, _ := f.raw("blauth", ".index"); index2 != index {
		t.Errorf("index changed on overwrite: %q", index2)
	}

	for ws := range secrets {
		if err := k.Delete(ctx, ws); err != nil {
			t.Fatalf("Delete(%q): %v", ws, err)
		}
		if _, err := k.Get(ctx, ws); !errors.Is(err, ErrKeyringNotFound) {
			t.Errorf("Get(%q) after Delete: %v; want ErrKeyringNotFound", ws, err)
		}
		if err := k.Delete(ctx, ws); !errors.Is(err, ErrKeyringNotFound) {
			t.Errorf("second Delete(%q): %v; want ErrKeyringNotFound", ws, err)
		}
	}
	if names, err := k.List(ctx); err != nil || names == nil || len(names) != 0 {
		t.Errorf("List after deleting all = %#v, %v; want an empty slice", names, err)
	}
	if _, ok := f.raw("blauth", ".index"); ok {
		t.Error("an empty index should be deleted, not kept")
	}
}

func TestKeyringDefaultsAndService(t *testing.T) {
	var zero Keyring
	if zero.service() != "blauth" || zero.timeout() != 3*time.Second {
		t.Errorf("zero Keyring: service %q, timeout %s", zero.service(), zero.timeout())
	}
	if _, ok := zero.impl().(goKeyring); !ok {
		t.Errorf("zero Keyring backend = %T, want goKeyring", zero.impl())
	}

	f := newFakeKeyring()
	k := &Keyring{Service: "blauth-test", backend: f}
	if err := k.Set(context.Background(), "ws", KeyringSecret{Kind: ipc.KindAPIKey, Value: "v"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.raw("blauth-test", "ws"); !ok {
		t.Error("item not stored under the configured service")
	}
	if _, ok := f.raw("blauth", "ws"); ok {
		t.Error("item stored under the default service")
	}
}

func TestKeyringValidation(t *testing.T) {
	const secret = "bl_SECRET-validation"
	long := strings.Repeat("x", maxKeyringValue+1)
	tests := []struct {
		name      string
		workspace string
		secret    KeyringSecret
	}{
		{"empty workspace", "", KeyringSecret{ipc.KindAPIKey, secret}},
		{"index workspace", ".index", KeyringSecret{ipc.KindAPIKey, secret}},
		{"newline in workspace", "acme\nprod", KeyringSecret{ipc.KindAPIKey, secret}},
		{"NUL in workspace", "acme\x00", KeyringSecret{ipc.KindAPIKey, secret}},
		{"DEL in workspace", "acme\x7f", KeyringSecret{ipc.KindAPIKey, secret}},
		{"C1 control in workspace", "acme\u0085", KeyringSecret{ipc.KindAPIKey, secret}},
		{"invalid UTF-8 workspace", "acme\xff", KeyringSecret{ipc.KindAPIKey, secret}},
		{"long workspace", strings.Repeat("w", maxKeyringWorkspace+1), KeyringSecret{ipc.KindAPIKey, secret}},
		{"empty kind", "ws", KeyringSecret{"", secret}},
		{"login kind", "ws", KeyringSecret{ipc.KindLogin, secret}},
		{"secret as kind", "ws", KeyringSecret{secret, secret}},
		{"empty value", "ws", KeyringSecret{ipc.KindAPIKey, ""}},
		{"LF in value", "ws", KeyringSecret{ipc.KindAPIKey, secret + "\n"}},
		{"CR in value", "ws", KeyringSecret{ipc.KindClientCredentials, "\r" + secret}},
		{"NUL in value", "ws", KeyringSecret{ipc.KindAPIKey, secret + "\x00x"}},
		{"long value", "ws", KeyringSecret{ipc.KindAPIKey, long}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, f, logs := testKeyring(t)
			err := k.Set(context.Background(), tt.workspace, tt.secret)
			if !errors.Is(err, ErrKeyringInvalid) {
				t.Fatalf("Set: %v; want ErrKeyringInvalid", err)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), long) {
				t.Errorf("error quotes the secret: %v", err)
			}
			if strings.Contains(logs.String(), secret) {
				t.Errorf("logs quote the secret: %s", logs)
			}
			if calls, _ := f.stats(); calls != 0 {
				t.Errorf("the backend was called %d times for an invalid request", calls)
			}
		})
	}

	// Workspace names are checked the same way by every method.
	k, f, _ := testKeyring(t)
	for _, ws := range []string{"", ".index", "a\tb"} {
		if _, err := k.Get(context.Background(), ws); !errors.Is(err, ErrKeyringInvalid) {
			t.Errorf("Get(%q): %v; want ErrKeyringInvalid", ws, err)
		}
		if err := k.Delete(context.Background(), ws); !errors.Is(err, ErrKeyringInvalid) {
			t.Errorf("Delete(%q): %v; want ErrKeyringInvalid", ws, err)
		}
	}
	if calls, _ := f.stats(); calls != 0 {
		t.Errorf("the backend was called %d times for invalid requests", calls)
	}
}

func TestKeyringGetCorruptItem(t *testing.T) {
	const secret = "bl_SECRET-corrupt"
	tests := map[string]string{
		"not JSON":        "plain " + secret,
		"JSON string":     `"` + secret + `"`,
		"newer version":   `{"v":2,"kind":"api_key","value":"` + secret + `"}`,
		"no version":      `{"kind":"api_key","value":"` + secret + `"}`,
		"unknown kind":    `{"v":1,"kind":"password","value":"` + secret + `"}`,
		"empty value":     `{"v":1,"kind":"api_key","value":""}`,
		"multi-line":      `{"v":1,"kind":"api_key","value":"` + secret + `\n"}`,
		"value not text":  `{"v":1,"kind":"api_key","value":["` + secret + `"]}`,
		"truncated item":  `{"v":1,"kind":"api_key","value":"` + secret,
		"wrong type of v": `{"v":"1","kind":"api_key","value":"` + secret + `"}`,
	}
	for name, raw := range tests {
		t.Run(name, func(t *testing.T) {
			k, f, logs := testKeyring(t)
			f.put("blauth", "ws", raw)
			_, err := k.Get(context.Background(), "ws")
			if !errors.Is(err, ErrKeyringCorrupt) {
				t.Fatalf("Get: %v; want ErrKeyringCorrupt", err)
			}
			assertNoSecret(t, err, logs, secret)
		})
	}
}

func TestKeyringIndexUpkeep(t *testing.T) {
	ctx := context.Background()
	api := KeyringSecret{Kind: ipc.KindAPIKey, Value: "k"}

	t.Run("stale entry dropped by Delete", func(t *testing.T) {
		k, f, _ := testKeyring(t)
		f.put("blauth", ".index", `["gone","kept"]`)
		f.put("blauth", "kept", `{"v":1,"kind":"api_key","value":"k"}`)
		if err := k.Delete(ctx, "gone"); !errors.Is(err, ErrKeyringNotFound) {
			t.Fatalf("Delete of an item removed behind our back: %v; want ErrKeyringNotFound", err)
		}
		if index, _ := f.raw("blauth", ".index"); index != `["kept"]` {
			t.Errorf("index = %q; want [\"kept\"]", index)
		}
	})

	t.Run("unsorted duplicates read clean", func(t *testing.T) {
		k, f, _ := testKeyring(t)
		f.put("blauth", ".index", `["b","a","b"]`)
		names, err := k.List(ctx)
		if err != nil || strings.Join(names, ",") != "a,b" {
			t.Errorf("List = %q, %v; want [a b]", names, err)
		}
		if err := k.Set(ctx, "c", api); err != nil {
			t.Fatal(err)
		}
		if index, _ := f.raw("blauth", ".index"); index != `["a","b","c"]` {
			t.Errorf("index = %q", index)
		}
	})

	for name, raw := range map[string]string{
		"not JSON":        "{oops",
		"object":          `{"a":1}`,
		"reserved name":   `["a",".index"]`,
		"control in name": `["a\u0007b"]`,
		"empty name":      `["a",""]`,
	} {
		t.Run("corrupt index: "+name, func(t *testing.T) {
			k, f, logs := testKeyring(t)
			f.put("blauth", ".index", raw)
			if _, err := k.List(ctx); !errors.Is(err, ErrKeyringCorrupt) {
				t.Errorf("List: %v; want ErrKeyringCorrupt", err)
			}
			// Set repairs it (with what it knows) and says so in the log.
			if err := k.Set(ctx, "fresh", api); err != nil {
				t.Fatalf("Set over a corrupt index: %v", err)
			}
			if index, _ := f.raw("blauth", ".index"); index != `["fresh"]` {
				t.Errorf("index = %q; want [\"fresh\"]", index)
			}
			if !strings.Contains(logs.String(), "index unreadable") {
				t.Errorf("no warning logged about the corrupt index: %q", logs)
			}
		})
	}

	t.Run("index write fails", func(t *testing.T) {
		k, f, _ := testKeyring(t)
		f.fail = func(op, _, user, _ string) error {
			if op == "set" && user == ".index" {
				return errors.New("org.freedesktop.DBus.Error.NoReply")
			}
			return nil
		}
		err := k.Set(ctx, "ws", api)
		if !errors.Is(err, ErrKeyringUnavailable) || !strings.Contains(err.Error(), "index") {
			t.Fatalf("Set: %v; want ErrKeyringUnavailable about the index", err)
		}
		// The item itself was saved; a retry once the keyring works repairs the index.
		f.fail = nil
		if err := k.Set(ctx, "ws", api); err != nil {
			t.Fatal(err)
		}
		if names, _ := k.List(ctx); strings.Join(names, ",") != "ws" {
			t.Errorf("List = %q after the retry", names)
		}
	})
}

func TestKeyringBackendErrors(t *testing.T) {
	ctx := context.Background()
	dbusErr := errors.New("org.freedesktop.DBus.Error.ServiceUnknown: The name org.freedesktop.secrets was not provided by any .service files")
	k, f, _ := testKeyring(t)
	f.fail = func(string, string, string, string) error { return dbusErr }

	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrKeyringUnavailable) || !errors.Is(err, dbusErr) {
			t.Errorf("%s: %v; want ErrKeyringUnavailable wrapping the cause", what, err)
		}
		if errors.Is(err, ErrKeyringNotFound) || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: %v also matches an unrelated sentinel", what, err)
		}
	}
	_, err := k.Get(ctx, "ws")
	check("Get", err)
	// A realistic secret: a short one would be cut out of the message wherever it occurs.
	check("Set", k.Set(ctx, "ws", KeyringSecret{Kind: ipc.KindAPIKey, Value: "bl_FAKEKEY-backend"}))
	check("Delete", k.Delete(ctx, "ws"))
	_, err = k.List(ctx)
	check("List", err)
	check("Probe", k.Probe(ctx))
	if err != nil && !strings.Contains(err.Error(), "gnome-keyring") {
		t.Errorf("error gives no hint: %v", err)
	}

	f.fail = func(string, string, string, string) error { return gokeyring.ErrSetDataTooBig }
	if err := k.Set(ctx, "ws", KeyringSecret{Kind: ipc.KindAPIKey, Value: "v"}); !errors.Is(err, ErrKeyringInvalid) {
		t.Errorf("Set refused as too big: %v; want ErrKeyringInvalid", err)
	}

	// Probe: a keyring without blauth's index is a working keyring.
	f.fail = nil
	if err := k.Probe(ctx); err != nil {
		t.Errorf("Probe of an empty keyring: %v", err)
	}
	f.put("blauth", ".index", `["x"]`)
	if err := k.Probe(ctx); err != nil {
		t.Errorf("Probe: %v", err)
	}
}

// assertNoSecret fails if secret appears in err, in anything err wraps, or in logs.
func assertNoSecret(t *testing.T, err error, logs *testkit.SyncBuffer, secret string) {
	t.Helper()
	var walk func(e error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if strings.Contains(e.Error(), secret) || strings.Contains(fmt.Sprintf("%+v %#v", e, e), secret) {
			t.Errorf("error chain quotes the secret: %T %q", e, e.Error())
		}
		switch u := e.(type) {
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		}
	}
	walk(err)
	if logs != nil && strings.Contains(logs.String(), secret) {
		t.Errorf("logs quote the secret:\n%s", logs)
	}
}

func TestKeyringSecretsNeverInErrorsOrLogs(t *testing.T) {
	ctx := context.Background()
	// Secrets with characters that %q and JSON escape, so that quoted forms are checked too.
	for _, secret := range []string{"bl_SECRET-plain-0123456789", `bl_SECRET"quote\back`, "bl_SECRET\ttab-é"} {
		t.Run(secret, func(t *testing.T) {
			s := KeyringSecret{Kind: ipc.KindAPIKey, Value: secret}
			for name, fail := range map[string]func(op, service, user, value string) error{
				"plain": func(op, _, _, value string) error {
					return fmt.Errorf("cannot store item %s", value)
				},
				"quoted": func(op, _, _, value string) error {
					return fmt.Errorf("cannot store item %q", value)
				},
				"wrapped": func(op, _, _, value string) error {
					return fmt.Errorf("dbus: %w", fmt.Errorf("item %v: %w", value, errors.New("NoReply")))
				},
				"not found quoting": func(op, _, _, value string) error {
					return fmt.Errorf("%w: %s", gokeyring.ErrNotFound, value)
				},
				"too big quoting": func(op, _, _, value string) error {
					return fmt.Errorf("%w: %s", gokeyring.ErrSetDataTooBig, value)
				},
			} {
				t.Run(name, func(t *testing.T) {
					k, f, logs := testKeyring(t)
					f.fail = func(op, service, user, value string) error {
						if op == "set" && value != "" {
							return fail(op, service, user, value)
						}
						return nil
					}
					err := k.Set(ctx, "ws", s)
					if err == nil {
						t.Fatal("Set succeeded against a failing backend")
					}
					assertNoSecret(t, err, logs, secret)
					if name == "not found quoting" && !errors.Is(err, ErrKeyringNotFound) ||
						name == "too big quoting" && !errors.Is(err, ErrKeyringInvalid) ||
						name == "plain" && !errors.Is(err, ErrKeyringUnavailable) {
						t.Errorf("redaction lost the classification: %v", err)
					}
				})
			}

			t.Run("panic quoting", func(t *testing.T) {
				k, f, logs := testKeyring(t)
				f.panics = true
				err := k.Set(ctx, "ws", s)
				if !errors.Is(err, ErrKeyringUnavailable) {
					t.Fatalf("Set with a panicking backend: %v; want ErrKeyringUnavailable", err)
				}
				assertNoSecret(t, err, logs, secret)
				f.panics = false
				if err := k.Set(ctx, "ws", s); err != nil {
					t.Errorf("Set after a panic: %v", err)
				}
			})

			t.Run("every path", func(t *testing.T) {
				// A full run with timeouts and a corrupt index: nothing logged or returned quotes it.
				k, f, logs := testKeyring(t)
				k.Timeout = 50 * time.Millisecond
				var errs []error
				errs = append(errs, k.Set(ctx, "ws", s))
				got, err := k.Get(ctx, "ws")
				errs = append(errs, err)
				f.put("blauth", ".index", "garbage "+secret)
				_, err = k.List(ctx)
				errs = append(errs, err, k.Set(ctx, "ws2", s))
				release := make(chan struct{})
				f.setBlock(release)
				errs = append(errs, k.Set(ctx, "ws3", s))
				errs = append(errs, k.Set(ctx, "ws4", s))
				unblock(t, k, f, release)
				for _, err := range errs {
					assertNoSecret(t, err, logs, secret)
				}
				for _, form := range []string{fmt.Sprint(got), fmt.Sprintf("%v %+v %#v %s", got, got, got, got)} {
					if strings.Contains(form, secret) {
						t.Errorf("formatting a KeyringSecret shows its value: %s", form)
					}
				}
			})
		})
	}
}

func TestKeyringTimeBox(t *testing.T) {
	ctx := context.Background()
	k, f, logs := testKeyring(t)
	k.Timeout = 100 * time.Millisecond
	if err := k.Set(ctx, "ws", KeyringSecret{Kind: ipc.KindAPIKey, Value: "v"}); err != nil {
		t.Fatal(err)
	}

	release := make(chan struct{})
	entered := make(chan string, 10)
	f.mu.Lock()
	f.block, f.entered = release, entered
	f.mu.Unlock()
	callsBefore, _ := f.stats()

	// A call that never answers returns ErrKeyringUnavailable (a timeout) when the box closes.
	start := time.Now()
	_, err := k.Get(ctx, "ws")
	elapsed := time.Since(start)
	if !errors.Is(err, ErrKeyringUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get on a stuck keyring: %v; want ErrKeyringUnavailable and DeadlineExceeded", err)
	}
	if elapsed < k.Timeout || elapsed > 10*time.Second {
		t.Errorf("Get returned after %s with a %s time box", elapsed, k.Timeout)
	}
	<-entered

	// While it is stuck, calls fail at once: they do not reach the backend and do not wait out
	// a box of their own (their error is not a timeout).
	for _, call := range []func() error{
		func() error { _, err := k.Get(ctx, "ws"); return err },
		func() error { return k.Set(ctx, "ws", KeyringSecret{Kind: ipc.KindAPIKey, Value: "v2"}) },
		func() error { return k.Delete(ctx, "ws") },
		func() error { _, err := k.List(ctx); return err },
		func() error { return k.Probe(ctx) },
	} {
		err := call()
		if !errors.Is(err, ErrKeyringUnavailable) || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("call while stuck: %v; want a fail-fast ErrKeyringUnavailable", err)
		}
		if !strings.Contains(err.Error(), "stuck") {
			t.Errorf("fail-fast error does not say why: %v", err)
		}
	}
	if calls, _ := f.stats(); calls != callsBefore+1 {
		t.Errorf("backend saw %d calls while stuck, want 1", calls-callsBefore)
	}
	if !strings.Contains(logs.String(), "timed out") {
		t.Errorf("the timeout was not logged: %q", logs)
	}

	// Once the stuck call returns, calls go through again.
	unblock(t, k, f, release)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := k.Get(ctx, "ws")
		if err == nil {
			if got.Value != "v" {
				t.Errorf("Get after recovery = %v", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("keyring still failing 30s after the stuck call returned: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "resume") {
		t.Errorf("the recovery was not logged: %q", logs)
	}
	if _, overlaps := f.stats(); overlaps != 0 {
		t.Errorf("%d backend calls overlapped", overlaps)
	}
}

func TestKeyringTimeBoxWakesWaiters(t *testing.T) {
	ctx := context.Background()
	k, f, _ := testKeyring(t)
	k.Timeout = 200 * time.Millisecond
	release := make(chan struct{})
	entered := make(chan string, 10)
	f.block, f.entered = release, entered
	defer unblock(t, k, f, release)

	first := make(chan error, 1)
	go func() { _, err := k.Get(ctx, "ws"); first <- err }()
	<-entered // the first call holds the keyring

	// Later callers queue behind it; when its box closes they give up too, without ever
	// reaching the backend.
	const waiters = 4
	errs := make(chan error, waiters)
	for range waiters {
		go func() { errs <- k.Probe(ctx) }()
	}
	for range waiters {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrKeyringUnavailable) {
				t.Errorf("waiter: %v; want ErrKeyringUnavailable", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a waiter is still blocked 30s after the time box")
		}
	}
	if err := <-first; !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("first call: %v; want a timeout", err)
	}
	if calls, _ := f.stats(); calls != 1 {
		t.Errorf("backend saw %d calls, want 1", calls)
	}
}

func TestKeyringCallerContext(t *testing.T) {
	k, f, _ := testKeyring(t)
	k.Timeout = 10 * time.Second
	release := make(chan struct{})
	entered := make(chan string, 10)
	f.block, f.entered = release, entered

	// A caller that gives up is told so (context.Canceled, not "keyring unavailable"), and the
	// keyring is not marked stuck: the next caller waits for the slot instead of failing.
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := k.Get(ctx, "ws"); errc <- err }()
	<-entered
	cancel()
	err := <-errc
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrKeyringUnavailable) {
		t.Errorf("cancelled Get: %v; want context.Canceled only", err)
	}

	next := make(chan error, 1)
	go func() { next <- k.Probe(context.Background()) }()
	time.Sleep(20 * time.Millisecond)
	unblock(t, k, f, release)
	if err := <-next; err != nil {
		t.Errorf("Probe queued behind a cancelled call: %v", err)
	}

	// A caller's own deadline shorter than the box: a timeout, but not a stuck keyring.
	release2 := make(chan struct{})
	f.setBlock(release2)
	short, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	_, err = k.Get(short, "ws")
	if !errors.Is(err, ErrKeyringUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Get past the caller's deadline: %v", err)
	}
	k.mu.Lock()
	hung := k.hung
	k.mu.Unlock()
	if hung {
		t.Error("the caller's deadline marked the keyring as stuck")
	}
	unblock(t, k, f, release2)
}

func TestKeyringConcurrent(t *testing.T) {
	ctx := context.Background()
	k, f, _ := testKeyring(t)
	const workers, rounds = 8, 25
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ws := fmt.Sprintf("ws-%d", w)
			for i := range rounds {
				s := KeyringSecret{Kind: ipc.KindAPIKey, Value: fmt.Sprintf("key-%d-%d", w, i)}
				if err := k.Set(ctx, ws, s); err != nil {
					t.Errorf("Set: %v", err)
					return
				}
				if got, err := k.Get(ctx, ws); err != nil || got != s {
					t.Errorf("Get(%s) = %v, %v", ws, got, err)
				}
				if _, err := k.List(ctx); err != nil {
					t.Errorf("List: %v", err)
				}
				if err := k.Probe(ctx); err != nil {
					t.Errorf("Probe: %v", err)
				}
				if i%5 == 0 {
					if err := k.Delete(ctx, ws); err != nil {
						t.Errorf("Delete: %v", err)
					}
				}
			}
			// Leave every other workspace deleted.
			if w%2 == 1 {
				if err := k.Delete(ctx, ws); err != nil {
					t.Errorf("Delete: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	names, err := k.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(names, ","), "ws-0,ws-2,ws-4,ws-6"; got != want {
		t.Errorf("List = %s; want %s (an index update was lost)", got, want)
	}
	var index []string
	raw, _ := f.raw("blauth", ".index")
	if err := json.Unmarshal([]byte(raw), &index); err != nil || len(index) != 4 {
		t.Errorf("index item = %q", raw)
	}
	if _, overlaps := f.stats(); overlaps != 0 {
		t.Errorf("%d backend calls overlapped: calls are not serialised", overlaps)
	}
}
