package daemon_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/internal/clock"
	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/internal/testkit/daemontest"
	"github.com/blauth/blauth/internal/testkit/memkeyring"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
	"github.com/blauth/blauth/token"
)

// apiOnFakeClock starts a fake Blaxel API that issues and judges tokens by a fake clock set to
// now (the daemon's file watcher and sockets run on real time); the API closes once the test's
// daemon has stopped.
func apiOnFakeClock(t *testing.T) (*blaxeltest.Server, *clock.Fake) {
	t.Helper()
	api := blaxeltest.New(0)
	t.Cleanup(api.Close)
	clk := clock.NewFake(time.Now())
	api.SetNow(clk.Now)
	return api, clk
}

func TestServesAPIKeyFromDaemonEnvironment(t *testing.T) {
	td := daemontest.Start(t, daemontest.Options{Env: []string{"BL_WORKSPACE=acme", "BL_API_KEY=bl_key_123"}})
	tok := td.Token(t)
	if tok.Token != "bl_key_123" || tok.Workspace != "acme" || tok.Kind != ipc.KindAPIKey || !tok.Expiry.IsZero() {
		t.Fatalf("got %+v, want the API key for acme with no expiry", tok)
	}
	if tok.Source != "daemon_env:BL_API_KEY" {
		t.Fatalf("source = %q", tok.Source)
	}
}

func TestClientCredentialsOneExchangeForManyCallers(t *testing.T) {
	api := blaxeltest.New(0)
	defer api.Close()
	cc := api.AddClient("sa-1", "s3cret")
	td := daemontest.Start(t, daemontest.Options{API: api, Env: []string{"BL_WORKSPACE=acme", "BL_CLIENT_CREDENTIALS=" + cc}})

	const callers = 200
	var wg sync.WaitGroup
	tokens := make(chan string, callers)
	errs := make(chan error, callers)
	start := make(chan struct{})
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			c, err := ipc.Dial(td.Socket, 10*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			resp, err := c.Do(ipc.NewMessage(ipc.KeyAction, ipc.ActionGet))
			if err != nil {
				errs <- err
				return
			}
			tok, err := ipc.ParseToken(resp)
			if err != nil {
				errs <- err
				return
			}
			tokens <- tok.Token
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	close(tokens)
	for err := range errs {
		t.Fatalf("caller failed: %v", err)
	}
	distinct := map[string]bool{}
	for tk := range tokens {
		distinct[tk] = true
	}
	if len(distinct) != 1 {
		t.Fatalf("callers got %d different tokens, want 1", len(distinct))
	}
	if n := api.Count("client_credentials"); n != 1 {
		t.Fatalf("token endpoint saw %d client-credentials requests for %d callers, want 1", n, callers)
	}
	// Cached: no more network calls.
	for i := 0; i < 50; i++ {
		td.Token(t)
	}
	if n := api.Count(""); n != 1 {
		t.Fatalf("after 50 more gets the endpoint saw %d requests, want still 1", n)
	}
	tok := td.Token(t)
	if exp, _, ok := token.JWTTimes(tok.Token); !ok || !exp.Equal(tok.Expiry) {
		t.Fatalf("expiry %v does not match the JWT's exp %v", tok.Expiry, exp)
	}
}

func TestLoginSessionRefreshedAndWrittenBack(t *testing.T) {
	api := blaxeltest.New(0)
	defer api.Close()
	_, rt := api.NewSession("user", "dev-code")
	expired := api.TokenExpiring("user", time.Now().Add(-time.Minute), 2*time.Hour)
	cfg := "context:\n  workspace: acme\nworkspaces:\n- name: acme\n  credentials:\n    access_token: " + expired +
		"\n    refresh_token: " + rt + "\n    expires_in: 7200\n    device_code: dev-code\n- name: other\n  credentials:\n    apiKey: \"bl_other\"\ntracking: true\n"
	td := daemontest.Start(t, daemontest.Options{API: api, BLConfig: cfg})

	tok := td.Token(t)
	if tok.Token == expired || tok.Kind != ipc.KindLogin {
		t.Fatalf("served %+v; want a refreshed login token", tok)
	}
	if api.Count("refresh_token") != 1 {
		t.Fatalf("refresh requests = %d, want 1", api.Count("refresh_token"))
	}
	c, err := sources.ReadBLConfig(filepath.Join(td.Home, ".blaxel", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	w, _ := c.Workspace("acme")
	if w.Credentials.AccessToken != tok.Token {
		t.Fatalf("the bl config holds another access token than the one served")
	}
	if w.Credentials.RefreshToken == rt || w.Credentials.RefreshToken == "" {
		t.Fatalf("the rotated refresh token was not written back")
	}
	if w.Credentials.DeviceCode != "dev-code" || w.Credentials.ExpiresIn != 7200 {
		t.Fatalf("device code or expires_in lost: %+v", w.Credentials)
	}
	o, _ := c.Workspace("other")
	if o.Credentials.APIKey != "bl_other" || !c.Tracking || c.Context.Workspace != "acme" {
		t.Fatalf("the write-back lost other parts of the file: %+v", c)
	}
	fi, _ := os.Stat(filepath.Join(td.Home, ".blaxel", "config.yaml"))
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("config mode %v, want 0600", fi.Mode().Perm())
	}
	// The served token stays cached.
	if again := td.Token(t); again.Token != tok.Token || api.Count("") != 1 {
		t.Fatalf("second get exchanged again (%d requests)", api.Count(""))
	}
}

func TestFreshLoginTokenServedWithoutNetwork(t *testing.T) {
	api := blaxeltest.New(0)
	defer api.Close()
	access, rt := api.NewSession("user", "")
	cfg := sessionConfig(access, rt)
	td := daemontest.Start(t, daemontest.Options{API: api, BLConfig: cfg})
	if tok := td.Token(t); tok.Token != access {
		t.Fatal("a fresh bl login token was not served as is")
	}
	if n := api.Count(""); n != 0 {
		t.Fatalf("the endpoint saw %d requests; want none while bl's token is fresh", n)
	}
}

func TestRefusedCredentialIsAClearError(t *testing.T) {
	api := blaxeltest.New(0)
	defer api.Close()
	api.AddClient("sa-1", "right")
	bad := api.AddClient("sa-2", "x")
	api.AddClient("sa-2", "rotated") // the secret we hold is now wrong
	td := daemontest.Start(t, daemontest.Options{API: api, Env: []string{"BL_WORKSPACE=acme", "BL_CLIENT_CREDENTIALS=" + bad}})
	_, err := td.Do(t, ipc.KeyAction, ipc.ActionGet)
	if ipc.ErrorCode(err) != ipc.CodeAuthFailed {
		t.Fatalf("err = %v (code %q), want auth_failed", err, ipc.ErrorCode(err))
	}
	if !strings.Contains(err.Error(), "invalid_client") {
		t.Fatalf("message %q does not say what the server said", err)
	}
	// Not retried while the source is unchanged.
	before := api.Count("")
	for i := 0; i < 5; i++ {
		_, _ = td.Do(t, ipc.KeyAction, ipc.ActionGet)
	}
	if api.Count("") != before {
		t.Fatalf("a refused credential was retried %d times", api.Count("")-before)
	}
}

func TestEraseDropsTheCachedToken(t *testing.T) {
	api := blaxeltest.New(0)
	defer api.Close()
	cc := api.AddClient("sa-1", "s")
	td := daemontest.Start(t, daemontest.Options{API: api, Env: []string{"BL_WORKSPACE=acme", "BL_CLIENT_CREDENTIALS=" + cc}})
	first := td.Token(t)
	// An erase naming some other token leaves ours alone.
	if _, err := td.Do(t, ipc.KeyAction, ipc.ActionErase, ipc.KeyToken, "not-ours"); err != nil {
		t.Fatal(err)
	}
	if td.Token(t).Token != first.Token {
		t.Fatal("erase of another token dropped ours")
	}
	if _, err := td.Do(t, ipc.KeyAction, ipc.ActionErase, ipc.KeyToken, first.Token); err != nil {
		t.Fatal(err)
	}
	second := td.Token(t)
	if second.Token == first.Token || api.Count("client_credentials") != 2 {
		t.Fatalf("after erase: same token or %d exchanges, want a new token from a second exchange", api.Count("client_credentials"))
	}
}

func TestNoWorkspaceAndNoCredentials(t *testing.T) {
	td := daemontest.Start(t, daemontest.Options{})
	if _, err := td.Do(t, ipc.KeyAction, ipc.ActionGet); ipc.ErrorCode(err) != ipc.CodeNoWorkspace {
		t.Fatalf("err = %v, want no_workspace", err)
	}
	if _, err := td.Do(t, ipc.KeyAction, ipc.ActionGet, ipc.KeyWorkspace, "ghost"); ipc.ErrorCode(err) != ipc.CodeNoCredentials {
		t.Fatalf("err = %v, want no_credentials", err)
	}
}

func TestSocketAndDirectoryModes(t *testing.T) {
	td := daemontest.Start(t, daemontest.Options{})
	fi, err := os.Stat(filepath.Dir(td.Socket))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("socket dir mode %v (%v), want 0700", fi.Mode().Perm(), err)
	}
	fi, err = os.Lstat(td.Socket)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v (%v), want a 0600 socket", fi.Mode(), err)
	}
}

func TestRefusesAnOpenSocketDirectory(t *testing.T) {
	dir := testkit.ShortTempDir(t, "bd")
	open := filepath.Join(dir, "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := daemon.New(t.Context(), daemon.Config{SocketPath: filepath.Join(open, "s.sock")})
	if err == nil || !strings.Contains(err.Error(), "0700") {
		t.Fatalf("err = %v, want a refusal naming mode 0700", err)
	}
	if fi, _ := os.Stat(open); fi.Mode().Perm() != 0o755 {
		t.Fatal("the daemon changed the mode of a directory it did not create")
	}
}

// listCountingKeyring counts how often the keyring is listed: the daemon reads it as a source.
type listCountingKeyring struct {
	*memkeyring.Keyring
	lists atomic.Int32
}

func (k *listCountingKeyring) List(ctx context.Context) ([]string, error) {
	k.lists.Add(1)
	return k.Keyring.List(ctx)
}

// A metrics address in use fails the start before any source is read, and leaves the socket
// free for the next daemon.
func TestMetricsAddressInUseFailsTheStartAtOnce(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	sock := filepath.Join(testkit.ShortTempDir(t, "bd"), "run", "s.sock")
	ring := &listCountingKeyring{Keyring: memkeyring.New(nil)}
	_, err = daemon.New(t.Context(), daemon.Config{SocketPath: sock, MetricsListen: busy.Addr().String(), Keyring: ring})
	if err == nil || !strings.Contains(err.Error(), "metrics") {
		t.Fatalf("err = %v, want the metrics address refused", err)
	}
	if n := ring.lists.Load(); n != 0 {
		t.Fatalf("the keyring was read %d times by a daemon that could not start", n)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the socket was left behind: %v", err)
	}
	td := daemontest.Start(t, daemontest.Options{Socket: sock, Env: []string{"BL_WORKSPACE=a", "BL_API_KEY=k"},
		Mutate: func(c *daemon.Config) { c.MetricsListen = "127.0.0.1:0" }})
	if td.Token(t).Token != "k" {
		t.Fatal("the next daemon on the same socket does not serve")
	}
}

func TestSecondDaemonExitsAndStaleSocketIsReplaced(t *testing.T) {
	td := daemontest.Start(t, daemontest.Options{Env: []string{"BL_WORKSPACE=a", "BL_API_KEY=k"}})
	_, err := daemon.New(t.Context(), daemon.Config{SocketPath: td.Socket})
	if want := fmt.Sprintf("already running as pid %d", os.Getpid()); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("second daemon: err = %v, want %q", err, want)
	}
	if td.Token(t).Token != "k" {
		t.Fatal("the first daemon stopped serving")
	}

	// A stale socket (nobody listening) is replaced.
	dir := testkit.ShortTempDir(t, "bd")
	sock := filepath.Join(dir, "d", "s.sock")
	_ = os.Mkdir(filepath.Dir(sock), 0o700)
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Lstat(sock); err != nil {
		t.Fatal("stale socket not left behind for the test")
	}
	td2 := daemontest.Start(t, daemontest.Options{Env: []string{"BL_WORKSPACE=a", "BL_API_KEY=k2"}, Mutate: func(c *daemon.Config) { c.SocketPath = sock }})
	if td2.Token(t).Token != "k2" {
		t.Fatal("daemon on a replaced stale socket does not serve")
	}
}

func TestShutdownRemovesSocketAndFinishesInFlight(t *testing.T) {
	api := blaxeltest.New(0)
	defer api.Close()
	cc := api.AddClient("sa", "s")
	api.SetHang(300 * time.Millisecond)
	api.SetFault(blaxeltest.FaultHang, 1) // the first exchange is slow
	td := daemontest.Start(t, daemontest.Options{API: api, Env: []string{"BL_WORKSPACE=a", "BL_CLIENT_CREDENTIALS=" + cc}})
	c, err := ipc.Dial(td.Socket, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make(chan error, 1)
	go func() {
		resp, err := c.Do(ipc.NewMessage(ipc.KeyAction, ipc.ActionGet))
		if err == nil {
			_, err = ipc.ParseToken(resp)
		}
		got <- err
	}()
	// Wait until the request is in flight: the exchange it caused has reached the API.
	testkit.WaitFor(t, 30*time.Second, "the request to reach the token endpoint", func() bool { return api.Count("client_credentials") > 0 })
	stopped := make(chan error, 1)
	go func() { stopped <- td.Stop() }()
	if err := <-got; err != nil {
		t.Fatalf("the request in flight at shutdown got no token: %v", err)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("daemon.Run returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not stop")
	}
	if _, err := os.Lstat(td.Socket); !os.IsNotExist(err) {
		t.Fatalf("socket still there after shutdown: %v", err)
	}
}

func TestBadInputNeverStallsTheDaemon(t *testing.T) {
	td := daemontest.Start(t, daemontest.Options{Env: []string{"BL_WORKSPACE=a", "BL_API_KEY=k"}, Mutate: func(c *daemon.Config) {
		c.RequestTimeout = 300 * time.Millisecond
	}})
	cases := []struct {
		name     string
		input    string
		code     string // expected error code, "" = a success answer
		closeOut bool   // the client shuts its side down after the input
	}{
		{"no equals sign", "action\n\n", ipc.CodeBadRequest, false},
		{"binary", "\x00\x01\x02\xff=\x00\n\n", ipc.CodeBadRequest, false},
		{"oversized line", strings.Repeat("a", ipc.MaxLineSize+10) + "\n\n", ipc.CodeBadRequest, false},
		{"oversized message", strings.Repeat("k=v\n", ipc.MaxMessageSize/4+10) + "\n", ipc.CodeBadRequest, false},
		{"unknown action", "action=launch\n\n", ipc.CodeUnknownAction, false},
		{"no action", "workspace=a\n\n", ipc.CodeBadRequest, false},
		{"version that is not a number", "version=two\naction=get\n\n", ipc.CodeUnsupportedVersion, false},
		{"future version served at ours", "version=9\naction=get\n\n", "", false},
		{"bad min_ttl", "action=get\nmin_ttl=-5\n\n", ipc.CodeBadRequest, false},
		{"relative cwd", "action=get\ncwd=project\n\n", ipc.CodeBadRequest, false},
		{"cwd longer than a path can be", "action=get\ncwd=/" + strings.Repeat("d/", 2100) + "\n\n", ipc.CodeBadRequest, false},
		{"half a request then silence", "action=ge", ipc.CodeBadRequest, false},
		{"a request cut short", "version=2\naction=get\n", ipc.CodeBadRequest, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("unix", td.Socket)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			go func() {
				_, _ = c.Write([]byte(tc.input))
				if tc.closeOut {
					_ = c.(*net.UnixConn).CloseWrite()
				}
			}()
			r := bufio.NewReader(c)
			resp, err := ipc.ReadAnswer(r)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			if got := ipc.ErrorCode(ipc.AsError(resp)); got != tc.code {
				t.Fatalf("code = %q (%s), want %q", got, resp.Value(ipc.KeyMessage), tc.code)
			}
			if v := resp.Value(ipc.KeyVersion); strings.HasPrefix(tc.input, "version=9") && v != ipc.Version {
				t.Fatalf("a version 9 request was answered in version %q, want this daemon's %s", v, ipc.Version)
			}
			if tc.code == ipc.CodeBadRequest && !strings.HasPrefix(tc.input, "action=get\n") {
				// After a framing error the stream is out of step: the daemon closes it.
				if _, err := ipc.ReadAnswer(r); err == nil {
					t.Fatal("the connection stayed open after a framing error")
				}
			}
		})
	}
	if td.Token(t).Token != "k" {
		t.Fatal("daemon no longer serves after bad input")
	}
}

func TestSeveralRequestsOnOneConnection(t *testing.T) {
	td := daemontest.Start(t, daemontest.Options{Env: []string{"BL_WORKSPACE=a", "BL_API_KEY=k"}})
	c, err := ipc.Dial(td.Socket, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 3; i++ {
		resp, err := c.Do(ipc.NewMessage(ipc.KeyAction, ipc.ActionGet))
		if err != nil || resp.Value(ipc.KeyToken) != "k" {
			t.Fatalf("request %d: %v %v", i, resp, err)
		}
	}
	if _, err := c.Do(ipc.NewMessage(ipc.KeyAction, ipc.ActionPing)); err != nil {
		t.Fatal(err)
	}
}

func TestWriteBackCausesNoReloadLoopAndCanBeTurnedOff(t *testing.T) {
	for _, writeBack := range []bool{true, false} {
		api := blaxeltest.New(0)
		_, rt := api.NewSession("user", "")
		expired := api.TokenExpiring("user", time.Now().Add(-time.Minute), 2*time.Hour)
		cfg := sessionConfig(expired, rt)
		td := daemontest.Start(t, daemontest.Options{API: api, BLConfig: cfg, Mutate: func(c *daemon.Config) { c.WriteBack = writeBack }})
		path := filepath.Join(td.Home, ".blaxel", "config.yaml")
		td.Token(t)
		time.Sleep(150 * time.Millisecond) // let the watcher see our own write
		fi1, _ := os.Stat(path)
		data1, _ := os.ReadFile(path)
		time.Sleep(400 * time.Millisecond)
		fi2, _ := os.Stat(path)
		if !fi1.ModTime().Equal(fi2.ModTime()) {
			t.Fatalf("write-back=%v: the file kept changing after our write (a reload loop)", writeBack)
		}
		if n := api.Count(""); n != 1 {
			t.Fatalf("write-back=%v: %d exchanges, want 1", writeBack, n)
		}
		if got := string(data1) == cfg; got == writeBack {
			t.Fatalf("write-back=%v: file unchanged=%v", writeBack, got)
		}
		td.Stop()
		api.Close()
	}
}

func TestDaemonKeepsBLSessionsFreshUnasked(t *testing.T) {
	api, clock := apiOnFakeClock(t)
	access, rt := api.NewSession("user", "")
	cfg := sessionConfig(access, rt)
	td := daemontest.Start(t, daemontest.Options{API: api, BLConfig: cfg, Clock: clock, Mutate: func(c *daemon.Config) { c.Tick = 20 * time.Millisecond }})
	clock.Add(90 * time.Minute) // past the refresh point; nobody has asked blauthd for anything
	testkit.Eventually(30*time.Second, func() bool { return api.Count("refresh_token") > 0 })
	if api.Count("refresh_token") != 1 {
		t.Fatalf("the bl session was not refreshed in the background (%d refreshes)", api.Count("refresh_token"))
	}
	testkit.WaitFor(t, 30*time.Second, "the refreshed session in the bl config", func() bool {
		c, err := sources.ReadBLConfig(filepath.Join(td.Home, ".blaxel", "config.yaml"))
		if err != nil {
			return false
		}
		w, _ := c.Workspace("acme")
		return w.Credentials.AccessToken != access
	})
}

func TestReloadRereadsSources(t *testing.T) {
	ring := memkeyring.New(nil)
	reload := make(chan struct{})
	td := daemontest.Start(t, daemontest.Options{Mutate: func(c *daemon.Config) { c.Keyring, c.Reload, c.Tick = ring, reload, 10*time.Millisecond }})
	if _, err := td.Do(t, ipc.KeyAction, ipc.ActionGet, ipc.KeyWorkspace, "w"); ipc.ErrorCode(err) != ipc.CodeNoCredentials {
		t.Fatalf("before: %v", err)
	}
	_ = ring.Set(context.Background(), "w", sources.KeyringSecret{Kind: ipc.KindAPIKey, Value: "added-elsewhere"})
	reload <- struct{}{} // what SIGHUP does
	testkit.WaitFor(t, 30*time.Second, "the keyring's new secret after a reload", func() bool {
		resp, err := td.Do(t, ipc.KeyAction, ipc.ActionGet, ipc.KeyWorkspace, "w")
		return err == nil && resp.Value(ipc.KeyToken) == "added-elsewhere"
	})
	// action=reload does the same over the socket.
	_ = ring.Delete(context.Background(), "w")
	if _, err := td.Do(t, ipc.KeyAction, ipc.ActionReload); err != nil {
		t.Fatal(err)
	}
	if _, err := td.Do(t, ipc.KeyAction, ipc.ActionGet, ipc.KeyWorkspace, "w"); ipc.ErrorCode(err) != ipc.CodeNoCredentials {
		t.Fatalf("after action=reload: %v", err)
	}
}

func TestRotatedRefreshTokenKeptWhenWriteBackIsOff(t *testing.T) {
	api, clock := apiOnFakeClock(t)
	_, rt := api.NewSession("user", "")
	expired := api.TokenExpiring("user", clock.Now().Add(-time.Minute), 2*time.Hour)
	cfg := sessionConfig(expired, rt)
	td := daemontest.Start(t, daemontest.Options{API: api, BLConfig: cfg, Clock: clock, Mutate: func(c *daemon.Config) { c.WriteBack = false }})
	first := td.Token(t)
	// Two more refresh periods: each must use the refresh token the server rotated to, which
	// only the daemon's memory holds (the file still has the spent one).
	for i := 0; i < 2; i++ {
		clock.Add(125 * time.Minute) // past expiry: the get waits for the refresh
		tok := td.Token(t)
		if tok.Token == first.Token {
			t.Fatalf("refresh %d: no new token", i+2)
		}
		first = tok
	}
	if n := api.Count("refresh_token"); n != 3 {
		t.Fatalf("%d refreshes, want 3 (all accepted)", n)
	}
	data, _ := os.ReadFile(filepath.Join(td.Home, ".blaxel", "config.yaml"))
	if string(data) != cfg {
		t.Fatal("the config was written although write-back is off")
	}
}

func TestLoggedOutCredentialIsNoLongerKeptFresh(t *testing.T) {
	api := blaxeltest.New(0)
	defer api.Close()
	cc := api.AddClient("sa", "s")
	ring := memkeyring.New(map[string]sources.KeyringSecret{"w": {Kind: ipc.KindClientCredentials, Value: cc}})
	td := daemontest.Start(t, daemontest.Options{API: api, Mutate: func(c *daemon.Config) { c.Keyring = ring }})
	td.Token(t, ipc.KeyWorkspace, "w")
	if _, err := td.Do(t, ipc.KeyAction, ipc.ActionKeyringDelete, ipc.KeyWorkspace, "w"); err != nil {
		t.Fatal(err)
	}
	// The logout is an event the daemon's loop reacts to: wait for it, bounded.
	keptFresh := func() bool {
		for _, e := range td.Broker().Status() {
			if e.Workspace == "w" && e.KeptFresh {
				return true
			}
		}
		return false
	}
	testkit.WaitFor(t, 30*time.Second, "the logged-out credential to stop being kept fresh", func() bool { return !keptFresh() })
}

// sessionConfig is a bl config, in the current writer's format, holding one bl login session for
// workspace acme.
func sessionConfig(access, refresh string) string {
	return "context:\n  workspace: acme\nworkspaces:\n- name: acme\n  credentials:\n    access_token: " + access +
		"\n    refresh_token: " + refresh + "\n    expires_in: 7200\ntracking: false\n"
}
