//go:build reliability

package reliability

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blauth/blauth/ipc"
)

// seed is the random seed of the malformed-input case: BLAUTH_REL_SEED, else fixed, so a failure
// can be replayed.
func seed(t *testing.T) uint64 {
	s := uint64(20260601)
	if v := os.Getenv("BLAUTH_REL_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("BLAUTH_REL_SEED: %v", err)
		}
		s = n
	}
	t.Logf("seed %d (set BLAUTH_REL_SEED to replay another)", s)
	return s
}

// garbage builds the bytes of one hostile connection.
type garbage struct {
	r       *rand.Rand
	project string // a directory holding a .env, sent as cwd now and then
}

var soupKeys = []string{"action", "workspace", "version", "cwd", "min_ttl", "token", "flow", "wait", "secret", "kind",
	"env.BL_API_KEY", "env.BL_WORKSPACE", "env.BL_CLIENT_CREDENTIALS", "env.BL_FOO", "capability[]", "protocol", "host"}

// Actions, weighted toward get. login_start is rare: each one starts a device flow that polls the
// fake for ten minutes (see the report).
var soupActions = []string{"get", "get", "get", "get", "erase", "status", "ping", "reload", "keyring_set",
	"keyring_delete", "login_wait", "nope", "GET", "get ", "", "get\x00"}

func (g *garbage) randBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(g.r.UintN(256))
	}
	return b
}

func (g *garbage) randText(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=./: \t\"'#$\\[]{}é\u2028"
	rs := []rune(alphabet)
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteRune(rs[g.r.IntN(len(rs))])
	}
	return b.String()
}

func (g *garbage) value() string {
	switch g.r.IntN(12) {
	case 0:
		return ""
	case 1:
		return string(g.randBytes(g.r.IntN(40))) // CR, LF, NUL and invalid UTF-8 in a value
	case 2:
		return strconv.Itoa(g.r.IntN(1<<20) - 1000)
	case 3:
		return "/nonexistent/" + g.randText(8)
	case 4:
		return g.project
	case 5:
		return strings.Repeat("v", g.r.IntN(20000))
	default:
		return g.randText(g.r.IntN(60))
	}
}

func (g *garbage) soup() []byte {
	var b bytes.Buffer
	n := g.r.IntN(12)
	for i := 0; i < n; i++ {
		switch g.r.IntN(10) {
		case 0:
			b.WriteString(g.randText(g.r.IntN(30))) // no '='
		case 1:
			fmt.Fprintf(&b, "%s=%s", g.randText(g.r.IntN(10)), g.value())
		case 2:
			fmt.Fprintf(&b, "action=%s", soupActions[g.r.IntN(len(soupActions))])
		default:
			fmt.Fprintf(&b, "%s=%s", soupKeys[g.r.IntN(len(soupKeys))], g.value())
		}
		switch g.r.IntN(8) {
		case 0:
			b.WriteString("\r\n")
		case 1:
			b.WriteString("\n\n")
		default:
			b.WriteString("\n")
		}
	}
	if g.r.IntN(100) == 0 {
		fmt.Fprintf(&b, "action=login_start\nworkspace=ws%d\n", g.r.IntN(3))
	}
	if g.r.IntN(3) > 0 {
		b.WriteString("\n")
	}
	return b.Bytes()
}

func (g *garbage) truncated() []byte {
	msg := fmt.Sprintf("version=1\naction=get\nworkspace=in-ws\ncwd=%s\nenv.BL_WORKSPACE=in-ws\nmin_ttl=%d\n\n", g.project, g.r.IntN(100))
	if g.r.IntN(2) == 0 {
		msg = "version=1\naction=get\nworkspace=in-ws\n\n" + msg // a good request, then a cut one
	}
	return []byte(msg[:g.r.IntN(len(msg))])
}

// conn returns what one hostile connection sends, and its kind.
func (g *garbage) conn() (string, []byte) {
	switch g.r.IntN(3) {
	case 0:
		n := g.r.IntN(4096)
		if g.r.IntN(20) == 0 {
			n = 70 << 10
		}
		return "random bytes", g.randBytes(n)
	case 1:
		return "key=value soup", g.soup()
	default:
		return "truncated", g.truncated()
	}
}

// TestReliabilityMalformedInput: 2000 connections of random bytes, key=value soup and truncated
// requests; the daemon keeps serving, does not balloon, and gives back its fds.
func TestReliabilityMalformedInput(t *testing.T) {
	const ws = "in-ws"
	api, d := serviceAccountDaemon(t, ws, time.Hour)
	project := filepath.Join(d.home, "project")
	if err := os.MkdirAll(project, 0o700); err != nil {
		t.Fatal(err)
	}
	key := "bl_in_dotenv_" + randHex(16)
	run.secret("API key", key)
	if err := os.WriteFile(filepath.Join(project, ".env"), []byte("BL_WORKSPACE=in-env\nBL_API_KEY="+key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.mustServe(t, api, ws, time.Minute, "")
	if _, err := d.get(ipc.KeyDir, project); err != nil {
		t.Fatalf("get with the project's .env: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	before, _ := readProc(d.pid)

	// Meanwhile a well-behaved client asks every 10ms; every one of its gets must succeed.
	stop := make(chan struct{})
	var okGets, badGets atomic.Int64
	var firstBad atomic.Value
	var bg sync.WaitGroup
	bg.Add(1)
	go func() {
		defer bg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			tok, err := d.get(ipc.KeyWorkspace, ws)
			if err == nil {
				err = api.checkToken(tok.Token, tok.Expiry, time.Now(), time.Minute)
			}
			if err != nil {
				badGets.Add(1)
				firstBad.CompareAndSwap(nil, err.Error())
			} else {
				okGets.Add(1)
			}
		}
	}()

	const total, workers = 2000, 16
	rng := rand.New(rand.NewPCG(seed(t), 1))
	type job struct {
		kind string
		data []byte
		read bool
	}
	jobs := make(chan job)
	var mu sync.Mutex
	kinds := map[string]int{}
	answers := map[string]int{}
	var peak procStats
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				c, err := net.DialTimeout("unix", d.socket, 5*time.Second)
				if err != nil {
					t.Errorf("dial: %v", err)
					continue
				}
				_ = c.SetDeadline(time.Now().Add(40 * time.Second))
				_, _ = c.Write(j.data)
				ans := "closed without reading"
				if j.read {
					_ = c.(*net.UnixConn).CloseWrite()
					out, err := io.ReadAll(io.LimitReader(c, 1<<20))
					switch {
					case err != nil && !isReset(err):
						t.Errorf("%s: reading the answer: %v", j.kind, err)
					case bytes.Contains(out, []byte("code=")):
						i := bytes.Index(out, []byte("code="))
						ans = "code=" + string(bytes.SplitN(out[i+5:], []byte("\n"), 2)[0])
					case bytes.Contains(out, []byte("status=ok")):
						ans = "status=ok"
					default:
						ans = "closed"
					}
				}
				c.Close()
				mu.Lock()
				kinds[j.kind]++
				answers[ans]++
				mu.Unlock()
			}
		}()
	}
	g := &garbage{r: rng, project: project}
	for i := 0; i < total; i++ {
		kind, data := g.conn()
		jobs <- job{kind, data, rng.IntN(10) > 0}
		if i%250 == 0 {
			if s, err := readProc(d.pid); err == nil && s.RSSKiB > peak.RSSKiB {
				peak = s
			}
		}
	}
	close(jobs)
	wg.Wait()
	close(stop)
	bg.Wait()

	if d.exited() {
		t.Fatalf("the daemon died: %v", d.exitErr)
	}
	// Once every connection is gone, the fds are given back.
	var after procStats
	if !waitFor(15*time.Second, 100*time.Millisecond, func() bool {
		after, _ = readProc(d.pid)
		return after.FDs <= before.FDs+3
	}) {
		t.Errorf("fds: %d before, %d after every hostile connection closed", before.FDs, after.FDs)
	}
	t.Logf("FIGURE malformed: %d connections by kind %v; answers %v", total, kinds, answers)
	t.Logf("FIGURE malformed: daemon before %s, peak rss %s, after %s", before, mib(peak.RSSKiB), after)
	t.Logf("FIGURE malformed: the well-behaved client got %d tokens, %d failures", okGets.Load(), badGets.Load())
	if n := badGets.Load(); n > 0 {
		t.Errorf("%d gets of the well-behaved client failed during the barrage, first: %v", n, firstBad.Load())
	}
	if okGets.Load() == 0 {
		t.Error("the well-behaved client was never served")
	}
	if limit := before.RSSKiB*2 + 32<<10; after.RSSKiB > limit || peak.RSSKiB > limit {
		t.Errorf("RSS ballooned: %s before, peak %s, %s after (limit 2x + 32MiB)", mib(before.RSSKiB), mib(peak.RSSKiB), mib(after.RSSKiB))
	}
	d.mustServe(t, api, ws, time.Minute, "")
	tok, err := d.get(ipc.KeyDir, project)
	if err != nil || tok.Token != key {
		t.Fatalf("the project's .env is no longer served: %v", err)
	}
	d.stop()
}
