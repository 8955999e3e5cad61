//go:build reliability

package reliability

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources/blconfig"
)

// soakDuration is BLAUTH_SOAK, else 2 minutes: the gate's soak (`make soak` runs the long one).
func soakDuration(t *testing.T) time.Duration {
	if v := os.Getenv("BLAUTH_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("BLAUTH_SOAK=%q: want a duration such as 10m", v)
		}
		return d
	}
	return 2 * time.Minute
}

// keySet is a set of API keys a workspace may be served.
type keySet struct {
	mu   sync.Mutex
	keys map[string]bool
}

func (k *keySet) add(s string) { k.mu.Lock(); k.keys[s] = true; k.mu.Unlock() }
func (k *keySet) has(s string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys[s]
}

// rewriteInPlace rewrites the bl config as bl does: truncate and write the same file, no rename,
// no lock. It reads and writes through one descriptor, so a write-back that renamed a new file in
// meanwhile is not undone (the edit lands in the replaced inode and is lost, as with bl).
func rewriteInPlace(path string, edit func(*blconfig.Config)) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	c, err := blconfig.Parse(data)
	if err != nil {
		return err
	}
	edit(c)
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err = f.WriteAt(c.Marshal(), 0)
	return err
}

// TestReliabilitySoak: mixed load for BLAUTH_SOAK with 20s tokens (so refreshes never stop), a
// .env edited every second and the bl config rewritten in place now and then. No request fails,
// every token is valid, and the daemon's memory, threads and fds stay flat.
func TestReliabilitySoak(t *testing.T) {
	dur := soakDuration(t)
	const (
		ttl      = 20 * time.Second
		minTTL   = 2 * time.Second
		clients  = 6
		sampleDt = 10 * time.Second
	)
	api := newFakeAPI(t, ttl)
	ccSA := api.addClient("sa-soak", "secret-soak-sa-"+randHex(12))
	ccEnv := api.addClient("sa-soak-env", "secret-soak-env-"+randHex(12))
	device := "dc-" + randHex(12)
	access, rt := api.newSession("soak-user", device)
	keyBL := "bl_soak_cfg_" + randHex(16)
	run.secret("API key", keyBL)
	extra := &keySet{keys: map[string]bool{}}
	envKeys := &keySet{keys: map[string]bool{}}
	newKey := func(ks *keySet, prefix string) string {
		k := prefix + randHex(16)
		run.secret("API key", k)
		ks.add(k)
		return k
	}
	extraKey := newKey(extra, "bl_soak_extra_")

	base := shortDir(t)
	home := filepath.Join(base, "home")
	project := filepath.Join(base, "project")
	for _, d := range []string{home, project} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	cfgPath := blconfig.DefaultPath(home)
	if err := os.MkdirAll(filepath.Dir(cfgPath), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := &blconfig.Config{
		Context: blconfig.Context{Workspace: "soak-login"},
		Workspaces: []blconfig.Workspace{
			{Name: "soak-login", Credentials: blconfig.Credentials{AccessToken: access, RefreshToken: rt, ExpiresIn: int(ttl.Seconds()), DeviceCode: device}},
			{Name: "soak-key", Credentials: blconfig.Credentials{APIKey: keyBL}},
			{Name: "soak-extra", Credentials: blconfig.Credentials{APIKey: extraKey}},
		},
	}
	if err := os.WriteFile(cfgPath, cfg.Marshal(), 0o600); err != nil {
		t.Fatal(err)
	}
	dotenv := filepath.Join(project, ".env")
	writeDotenv := func(i int) {
		var body string
		if i%3 == 2 {
			body = "BL_WORKSPACE=soak-env\nBL_CLIENT_CREDENTIALS=" + ccEnv + "\n"
		} else {
			body = "# edit " + fmt.Sprint(i) + "\nBL_WORKSPACE=soak-env\nBL_API_KEY=" + newKey(envKeys, "bl_soak_env_") + "\n"
		}
		if i%2 == 0 { // as an editor does: a new file renamed over
			tmp := dotenv + ".tmp"
			if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
				t.Error(err)
			}
			if err := os.Rename(tmp, dotenv); err != nil {
				t.Error(err)
			}
		} else if err := os.WriteFile(dotenv, []byte(body), 0o600); err != nil { // in place
			t.Error(err)
		}
	}
	writeDotenv(0)

	d := startDaemon(t, daemonOpts{api: api, home: home, args: []string{"--min-ttl", minTTL.String()},
		env: []string{"BL_WORKSPACE=soak-sa", "BL_CLIENT_CREDENTIALS=" + ccSA}})

	var (
		gets, helpers, failures atomic.Int64
		errMu                   sync.Mutex
		errs                    []string
	)
	failf := func(format string, a ...any) {
		failures.Add(1)
		errMu.Lock()
		if len(errs) < 20 {
			errs = append(errs, time.Now().Format("15:04:05.000 ")+fmt.Sprintf(format, a...))
		}
		errMu.Unlock()
	}
	var otherWorkspace atomic.Int64
	check := func(ws string, tok *ipc.Token, at time.Time) {
		if tok.Workspace != "" && tok.Workspace != ws {
			if ws != "soak-env" {
				failf("%s: served workspace %s", ws, tok.Workspace)
				return
			}
			// A .env caught empty in the middle of its in-place rewrite names no workspace, and
			// the daemon's own BL_WORKSPACE answers: bl-style writes allow it. Counted, not failed.
			otherWorkspace.Add(1)
			ws = tok.Workspace
		}
		switch ws {
		case "soak-key":
			if tok.Token != keyBL {
				failf("%s: served another key", ws)
			}
		case "soak-extra":
			if !extra.has(tok.Token) {
				failf("%s: served a key never written", ws)
			}
		case "soak-env":
			if strings.HasPrefix(tok.Token, "bl_") {
				if !envKeys.has(tok.Token) {
					failf("%s: served a key never written", ws)
				}
				return
			}
			fallthrough
		default:
			if err := api.checkToken(tok.Token, tok.Expiry, at, minTTL-time.Second); err != nil {
				failf("%s: %v", ws, err)
			}
		}
	}
	workspaces := []string{"soak-sa", "soak-login", "soak-key", "soak-extra", "soak-env"}
	request := func(ws string) []string {
		if ws == "soak-env" {
			return []string{ipc.KeyDir, project}
		}
		return []string{ipc.KeyWorkspace, ws}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(c), 7))
			var conn *ipc.Client
			defer func() {
				if conn != nil {
					conn.Close()
				}
			}()
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Duration(10+r.IntN(40)) * time.Millisecond):
				}
				ws := workspaces[r.IntN(len(workspaces))]
				// Half the clients keep one connection for many requests, half dial each time.
				if conn == nil || c%2 == 1 || r.IntN(100) == 0 {
					if conn != nil {
						conn.Close()
					}
					var err error
					if conn, err = ipc.Dial(d.socket, 5*time.Second); err != nil {
						failf("dial: %v", err)
						conn = nil
						continue
					}
				}
				tok, err := doGet(conn, 35*time.Second, request(ws)...)
				gets.Add(1)
				if err != nil {
					failf("%s: %v (code %s)", ws, err, ipc.ErrorCode(err))
					conn.Close()
					conn = nil
					continue
				}
				check(ws, tok, time.Now())
			}
		}()
	}
	// Helper processes now and then.
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(99, 7))
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(500+r.IntN(1500)) * time.Millisecond):
			}
			ws := workspaces[r.IntN(len(workspaces))]
			args := []string{"token"}
			if ws != "soak-env" {
				args = append(args, ws)
			}
			start := time.Now()
			res, err := tryHelper(d.socket, project, nil, nil, helperBin, args...)
			helpers.Add(1)
			if err != nil {
				failf("helper token %s: %v", ws, err)
				continue
			}
			if res.code != 0 {
				failf("helper token %s: exit %d: %s", ws, res.code, firstLine(res.stderr))
				continue
			}
			check(ws, &ipc.Token{Token: strings.TrimSpace(res.stdout)}, start)
		}
	}()
	// The .env edited every second; the bl config rewritten in place every 7 seconds.
	var dotenvEdits, blEdits atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
			writeDotenv(i)
			dotenvEdits.Add(1)
			if i%7 == 0 {
				k := newKey(extra, "bl_soak_extra_")
				err := rewriteInPlace(cfgPath, func(c *blconfig.Config) {
					if w, ok := c.Workspace("soak-extra"); ok {
						w.Credentials.APIKey = k
					}
					c.Tracking = !c.Tracking
				})
				if err != nil {
					failf("rewrite the bl config in place: %v", err)
				}
				blEdits.Add(1)
			}
		}
	}()

	// Samples every 10s.
	var samples []procStats
	start := time.Now()
	tick := time.NewTicker(sampleDt)
	for time.Since(start) < dur {
		<-tick.C
		s, err := readProc(d.pid)
		if err != nil {
			t.Fatalf("the daemon is gone: %v", err)
		}
		samples = append(samples, s)
		t.Logf("FIGURE soak sample %3ds: %s; gets %d, helper runs %d, failures %d, refresh grants %d, client grants %d",
			int(time.Since(start).Seconds()), s, gets.Load(), helpers.Load(), failures.Load(), api.Count("refresh_token"), api.Count("client_credentials"))
	}
	tick.Stop()
	close(stop)
	wg.Wait()

	t.Logf("FIGURE soak: %s: %d gets, %d helper runs, %d .env edits, %d in-place bl config rewrites, %d refresh grants, %d client grants; %d failures",
		dur, gets.Load(), helpers.Load(), dotenvEdits.Load(), blEdits.Load(), api.Count("refresh_token"), api.Count("client_credentials"), failures.Load())
	if n := otherWorkspace.Load(); n > 0 {
		t.Logf("FIGURE soak: %d .env gets answered for another workspace (the .env read mid-rewrite)", n)
	}
	errMu.Lock()
	for _, e := range errs {
		t.Errorf("request error: %s", e)
	}
	errMu.Unlock()
	if gets.Load() == 0 {
		t.Fatal("no requests were made")
	}

	// Flat: the last third's average within 1.5x the first third's, plus a small constant.
	if len(samples) >= 3 {
		n := len(samples) / 3
		avg := func(ss []procStats, f func(procStats) int) float64 {
			sum := 0
			for _, s := range ss {
				sum += f(s)
			}
			return float64(sum) / float64(len(ss))
		}
		for _, m := range []struct {
			name  string
			f     func(procStats) int
			slack float64
		}{
			{"RSS KiB", func(s procStats) int { return s.RSSKiB }, 4096},
			{"threads", func(s procStats) int { return s.Threads }, 4},
			{"fds", func(s procStats) int { return s.FDs }, 8},
		} {
			first, last := avg(samples[:n], m.f), avg(samples[len(samples)-n:], m.f)
			t.Logf("FIGURE soak flat: %s first third %.0f, last third %.0f", m.name, first, last)
			if last > 1.5*first+m.slack {
				t.Errorf("%s grew: first third %.0f, last third %.0f", m.name, first, last)
			}
		}
	} else {
		t.Logf("only %d samples: too short to judge growth", len(samples))
	}

	for _, ws := range workspaces {
		tok, err := d.get(request(ws)...)
		if err != nil {
			t.Errorf("after the soak, %s: %v", ws, err)
			continue
		}
		check(ws, tok, time.Now())
	}
	d.stop()

	// Nothing lost: once the daemon has stopped, the session in the file is the live one.
	c, err := blconfig.Read(cfgPath)
	if err != nil {
		t.Fatalf("the bl config does not parse after the soak: %v", err)
	}
	w, _ := c.Workspace("soak-login")
	if w == nil {
		t.Fatal("the soak-login session is gone from the bl config")
	}
	if _, rotated := api.rotatedFrom(w.Credentials.RefreshToken); rotated {
		t.Errorf("the bl config holds a refresh token the API already rotated: the session on disk is dead")
	}
	if _, ok := c.Workspace("soak-key"); !ok {
		t.Errorf("the soak-key workspace is gone from the bl config")
	}
}
