package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blauth/blauth/ipc"
)

// proxyBody is what the loopback upstream answers every request with: the size of a short
// Blaxel API answer.
var proxyBody = []byte(`{"data":[{"metadata":{"name":"sandbox-openai","workspace":"bench"},"spec":{"enabled":true}}],"meta":{"hasMore":false,"total":1}}` + "\n")

// proxyBench measures the real blauth-proxy (`blauth-proxy exec`, as `blauth-helper exec
// --proxy` starts it) against direct requests to the same loopback upstream: the latency of one
// request at a time, and requests per second at 64 connections.
func (b *bench) proxyBench() error {
	proxyBin, _ := filepath.Abs(filepath.Join(b.cfg.bin, "blauth-proxy"))
	if _, err := os.Stat(proxyBin); err != nil {
		return fmt.Errorf("%w (run make build first)", err)
	}
	token, err := b.daemonToken()
	if err != nil {
		return err
	}
	var mismatched, served atomic.Int64
	want := "Bearer " + token
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		if r.Header.Get("X-Blaxel-Authorization") != want || r.Header.Get("X-Blaxel-Workspace") != "bench" {
			mismatched.Add(1)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(proxyBody)
	}))
	defer up.Close()

	p, runURL, secret, err := b.startProxy(proxyBin, up.URL)
	if err != nil {
		return err
	}
	defer p.stop()
	direct := request{url: up.URL + "/bench/functions/f/mcp", auth: want}
	proxied := request{url: runURL + "/bench/functions/f/mcp", auth: "Bearer " + secret}

	s := b.section("Proxy overhead and throughput")
	s.printf("The real `bin/blauth-proxy`, started as `blauth-helper exec --proxy` starts it (`blauth-proxy -w bench exec -- sh -c …`, ")
	s.printf("with `BLAUTH_SOCKET` and `BL_RUN_URL` pointing at the upstream; the child only hands benchreport its `BL_RUN_URL` and ")
	s.printf("`BL_API_KEY` on a pipe and waits), against the same upstream called directly. The upstream is an `httptest` server on 127.0.0.1 ")
	s.printf("inside benchreport that answers every request with the same %d-byte JSON body and checks that it carries the daemon's token ", len(proxyBody))
	s.printf("in `X-Blaxel-Authorization` and `X-Blaxel-Workspace: bench`. Direct requests send that token themselves; proxied ones send ")
	s.printf("the run's secret to `{proxy}/run/…`, which the proxy replaces with the token it follows from `bin/blauthd` (a `watch`). ")
	s.printf("Both clients are Go `net/http` clients in benchreport with keep-alive connections, so no figure includes a TCP handshake. ")
	s.printf("Load, proxy, upstream and daemon share the machine's %d cores.\n\n", numCPU())

	// Latency: one request at a time, in rounds that alternate between the two paths.
	rounds, per, warm := 20, 100, 200
	if b.cfg.quick {
		rounds, per, warm = 4, 50, 50
	}
	dc, pc := newBenchClient(1), newBenchClient(1)
	defer dc.CloseIdleConnections()
	defer pc.CloseIdleConnections()
	for range warm {
		if err := errors.Join(get(dc, direct), get(pc, proxied)); err != nil {
			return err
		}
	}
	var dt, pt []float64
	for range rounds {
		for _, c := range []struct {
			cl  *http.Client
			req request
			out *[]float64
		}{{dc, direct, &dt}, {pc, proxied, &pt}} {
			for range per {
				if b.ctx.Err() != nil {
					return b.ctx.Err()
				}
				start := time.Now()
				if err := get(c.cl, c.req); err != nil {
					return err
				}
				*c.out = append(*c.out, float64(time.Since(start))/float64(time.Millisecond))
			}
		}
	}
	slices.Sort(dt)
	slices.Sort(pt)
	s.printf("**Latency, one request at a time** on one connection each: %d warm-up requests per path, then %d rounds of %d requests, ", warm, rounds, per)
	s.printf("alternating direct and proxied so that other work on the machine weighs on both alike; client-side wall time from sending ")
	s.printf("the request to reading the whole body. Quantiles are nearest-rank.\n\n")
	s.printf("| Path | requests | p50 | p90 | p99 | mean | max |\n|---|---|---|---|---|---|---|\n")
	for _, r := range []struct {
		name string
		t    []float64
	}{{"direct", dt}, {"through blauth-proxy", pt}} {
		s.printf("| %s | %d | %s | %s | %s | %s | %s |\n", r.name, len(r.t), ms(quantile(r.t, 0.5)), ms(quantile(r.t, 0.9)), ms(quantile(r.t, 0.99)), ms(mean(r.t)), ms(r.t[len(r.t)-1]))
	}
	over50, over99 := quantile(pt, 0.5)-quantile(dt, 0.5), quantile(pt, 0.99)-quantile(dt, 0.99)
	s.printf("\nOverhead of the proxy: %s at p50, %s at p99.\n\n", ms(over50), ms(over99))
	progress("   latency: direct p50 %s p99 %s; proxied p50 %s p99 %s", ms(quantile(dt, 0.5)), ms(quantile(dt, 0.99)), ms(quantile(pt, 0.5)), ms(quantile(pt, 0.99)))
	b.add(row{What: "Proxy overhead per request, p50 (p99), 1 connection", Figure: fmt.Sprintf("+%s (+%s)", ms(over50), ms(over99)),
		Ref: fmt.Sprintf("direct %s (%s)", ms(quantile(dt, 0.5)), ms(quantile(dt, 0.99))), Ratio: ratio(quantile(pt, 0.5), quantile(dt, 0.5)), Target: "(information)"})

	// Throughput: 64 connections, back to back.
	const conns = 64
	trounds, twarm, tdur := 3, 300*time.Millisecond, time.Second
	if b.cfg.quick {
		trounds, twarm, tdur = 1, 200*time.Millisecond, 500*time.Millisecond
	}
	var dl, pl loadResult
	for range trounds {
		x, err := b.httpLoad(nil, direct, conns, twarm, tdur)
		if err != nil {
			return fmt.Errorf("direct, %d connections: %w", conns, err)
		}
		dl.add(x)
		if x, err = b.httpLoad(p, proxied, conns, twarm, tdur); err != nil {
			return fmt.Errorf("through blauth-proxy, %d connections: %w", conns, err)
		}
		pl.add(x)
	}
	s.printf("**Throughput at %d connections**: %d goroutines in benchreport, each on its own keep-alive connection, send GETs back to back, ", conns, conns)
	s.printf("reading each whole answer before the next; %d rounds of %s measured after %s of warm-up, alternating direct and proxied. ", trounds, tdur, twarm)
	s.printf("The proxy's CPU is blauth-proxy's user+system time over the measured windows (`/proc/PID/stat`, 10 ms resolution).\n\n")
	s.printf("| Path | req/s | blauth-proxy CPU µs/req |\n|---|---|---|\n")
	s.printf("| direct | %s | – |\n| through blauth-proxy | %s | %.1f |\n\n", thousands(dl.rps), thousands(pl.rps), perReq(pl))
	progress("   %d connections: direct %.0f req/s, proxied %.0f req/s (%.1f µs proxy CPU/req)", conns, dl.rps, pl.rps, perReq(pl))
	b.add(row{What: fmt.Sprintf("Proxy throughput, %d connections", conns), Figure: thousands(pl.rps) + " req/s",
		Ref: "direct " + thousands(dl.rps) + " req/s", Ratio: ratio(pl.rps, dl.rps), Target: "(information)"})

	if n := mismatched.Load(); n != 0 {
		return fmt.Errorf("%d of %d requests reached the upstream without the daemon's token and workspace", n, served.Load())
	}
	s.printf("Every one of the %d requests the upstream served carried the daemon's token and workspace.\n", served.Load())
	return nil
}

// daemonToken asks blauthd for the bench workspace's token, as direct requests send it.
func (b *bench) daemonToken() (string, error) {
	c, err := ipc.Dial(b.socket, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	resp, err := c.Do(ipc.NewMessage(ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionGet, ipc.KeyWorkspace, "bench"))
	if err != nil {
		return "", err
	}
	t, err := ipc.ParseToken(resp)
	if err != nil {
		return "", err
	}
	return t.Token, nil
}

// startProxy starts blauth-proxy exec with a child that writes its BL_RUN_URL and BL_API_KEY
// to benchreport on a pipe and waits for the end of its stdin. The proxy is stopped (SIGTERM,
// which it passes on to the child) by bench.close if not before.
func (b *bench) startProxy(bin, upstream string) (*proc, string, string, error) {
	logPath := filepath.Join(b.tmp, "blauth-proxy.log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, "", "", err
	}
	cmd := exec.Command(bin, "-w", "bench", "exec", "--", "sh", "-c", `printf '%s\n%s\n' "$BL_RUN_URL" "$BL_API_KEY"; exec cat >/dev/null`)
	cmd.Env = append(slices.Clone(b.clientEnv), "BL_RUN_URL="+upstream)
	cmd.Dir, cmd.Stderr = b.work, lf
	cmd.SysProcAttr = childAttr()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		lf.Close()
		return nil, "", "", err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		lf.Close()
		return nil, "", "", err
	}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, "", "", fmt.Errorf("start blauth-proxy: %w", err)
	}
	p := &proc{name: "blauth-proxy", cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	b.procs.add(p)
	lines := make(chan []string, 1)
	go func() {
		br := bufio.NewReader(stdout)
		var got []string
		for range 2 {
			l, err := br.ReadString('\n')
			if err != nil {
				break
			}
			got = append(got, strings.TrimSpace(l))
		}
		lines <- got
		_, _ = io.Copy(io.Discard, br)
	}()
	// stdin stays open until the proxy is stopped; closing it ends the child, and the proxy.
	go func() { <-p.done; stdin.Close() }()
	select {
	case got := <-lines:
		if len(got) != 2 || !strings.HasSuffix(got[0], "/run") || len(got[1]) != 43 {
			p.stop()
			return nil, "", "", fmt.Errorf("blauth-proxy's child did not report its BL_RUN_URL and key\n%s", p.logTail())
		}
		return p, got[0], got[1], nil
	case <-time.After(30 * time.Second):
		p.stop()
		return nil, "", "", fmt.Errorf("blauth-proxy did not start its child within 30 s\n%s", p.logTail())
	}
}

// request is one of the two paths a benchmark request takes.
type request struct{ url, auth string }

func newBenchClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, IdleConnTimeout: time.Minute}}
}

// get sends one GET and reads the whole answer, which must be a 200 with the upstream's body.
func get(c *http.Client, r request) error {
	req, err := http.NewRequest(http.MethodGet, r.url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-Blaxel-Authorization", r.auth)
	req.Header.Set("X-Blaxel-Workspace", "bench") // the proxy sets it anyway; direct requests need it
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || n != int64(len(proxyBody)) {
		return fmt.Errorf("%s answered %s with %d bytes", r.url, resp.Status, n)
	}
	return nil
}

// httpLoad runs conns keep-alive connections sending r back to back for warm, then dur, and
// counts the answers of the dur window; p, when not nil, is the process whose CPU time over
// the window is recorded.
func (b *bench) httpLoad(p *proc, r request, conns int, warm, dur time.Duration) (loadResult, error) {
	var res loadResult
	client := newBenchClient(conns)
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(b.ctx, warm+dur+30*time.Second)
	defer cancel()
	counts := make(counters, conns)
	var stop atomic.Bool
	var errs atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() && ctx.Err() == nil {
				if err := get(client, r); err != nil {
					once.Do(func() { firstErr = err })
					errs.Add(1)
					return
				}
				counts[i].n.Add(1)
			}
		}()
	}
	cpu := func() time.Duration {
		if p == nil {
			return 0
		}
		d, _ := cpuTime(p.pid())
		return d
	}
	ok := sleepCtx(ctx, warm)
	c1, t1, cpu1 := counts.sum(), time.Now(), cpu()
	ok = ok && sleepCtx(ctx, dur)
	c2, t2, cpu2 := counts.sum(), time.Now(), cpu()
	stop.Store(true)
	wg.Wait()
	if !ok {
		return res, errors.Join(ctx.Err(), b.ctx.Err())
	}
	if firstErr != nil {
		return res, fmt.Errorf("%d requests failed, the first: %w", errs.Load(), firstErr)
	}
	res.answers, res.window, res.cpu = c2-c1, t2.Sub(t1), cpu2-cpu1
	res.rps = float64(res.answers) / res.window.Seconds()
	return res, nil
}
