package main

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/blauth/blauth/ipc"
)

const (
	memConns        = 1000
	memWorkspaces   = 10
	idleTarget      = 20.0 // MiB
	afterLoadTarget = 64.0 // MiB
)

// memory measures blauthd's memory idle, with 10 workspaces served, and around 1000 concurrent
// connections, beside the bare server's under the same steps.
func (b *bench) memory() error {
	s := b.section("Daemon memory")
	// Idle: two seconds after start, with its own token fetched (it was, by setup's get).
	if wait := 2*time.Second - time.Since(b.daemonUp); wait > 0 {
		time.Sleep(wait)
	}
	idle, err := readMem(b.daemon.pid())
	if err != nil {
		return err
	}
	if err := b.startBare(); err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond)
	bareIdle, err := readMem(b.bare.pid())
	if err != nil {
		return err
	}

	// Ten workspaces: ten service accounts, each asked for once by a caller that carries it in
	// its environment, as blauth-helper sends them.
	before := b.api.Count("client_credentials")
	c, err := ipc.Dial(b.socket, 10*time.Second)
	if err != nil {
		return err
	}
	for i := 1; i <= memWorkspaces; i++ {
		ws := fmt.Sprintf("mem-ws-%d", i)
		cc := b.api.AddClient(ws, "secret")
		m := ipc.NewMessage(ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionGet, ipc.KeyWorkspace, ws,
			ipc.KeyEnvPrefix+"BL_WORKSPACE", ws, ipc.KeyEnvPrefix+"BL_CLIENT_CREDENTIALS", cc)
		resp, err := c.Do(m)
		if err == nil {
			_, err = ipc.ParseToken(resp)
		}
		if err != nil {
			c.Close()
			return fmt.Errorf("workspace %s: %w", ws, err)
		}
	}
	c.Close()
	if n := b.api.Count("client_credentials") - before; n != memWorkspaces {
		return fmt.Errorf("%d exchanges for %d new workspaces", n, memWorkspaces)
	}
	time.Sleep(200 * time.Millisecond)
	tenWS, err := readMem(b.daemon.pid())
	if err != nil {
		return err
	}

	d, err := b.connectionLoad(b.daemon, b.socket)
	if err != nil {
		return fmt.Errorf("blauthd: %w", err)
	}
	bare, err := b.connectionLoad(b.bare, b.bareSocket)
	if err != nil {
		return fmt.Errorf("bare server: %w", err)
	}

	b.add(row{What: "Daemon RSS, idle after start", Figure: mib(idle.rssMiB()), Ref: "bare server " + mib(bareIdle.rssMiB()),
		Ratio: ratio(idle.rssMiB(), bareIdle.rssMiB()), Target: "< 20 MiB", Verdict: verdict(idle.rssMiB() < idleTarget)})
	b.add(row{What: fmt.Sprintf("Daemon RSS, %d workspaces served", memWorkspaces), Figure: mib(tenWS.rssMiB()), Ref: "idle " + mib(idle.rssMiB()),
		Ratio: ratio(tenWS.rssMiB(), idle.rssMiB())})
	b.add(row{What: fmt.Sprintf("Daemon RSS, %d connections open", memConns), Figure: mib(d.open.rssMiB()), Ref: "bare server " + mib(bare.open.rssMiB()),
		Ratio: ratio(d.open.rssMiB(), bare.open.rssMiB())})
	b.add(row{What: fmt.Sprintf("Daemon RSS after %d connections (closed; settled 2 s)", memConns),
		Figure: mib(d.closed.rssMiB()) + "; " + mib(d.settled.rssMiB()), Ref: "bare server " + mib(bare.closed.rssMiB()) + "; " + mib(bare.settled.rssMiB()),
		Ratio: ratio(d.settled.rssMiB(), bare.settled.rssMiB()), Target: "< 64 MiB", Verdict: verdict(max(d.closed.rssMiB(), d.settled.rssMiB()) < afterLoadTarget)})
	b.add(row{What: "Daemon peak RSS (VmHWM) over the memory steps", Figure: mib(d.settled.hwmMiB()), Ref: "bare server " + mib(bare.settled.hwmMiB()),
		Ratio: ratio(d.settled.hwmMiB(), bare.settled.hwmMiB()), Target: "< 64 MiB", Verdict: verdict(d.settled.hwmMiB() < afterLoadTarget)})

	s.printf("VmRSS and VmHWM from `/proc/PID/status` of the `bin/blauthd` process (benchreport runs as root, so the file is readable although ")
	s.printf("the daemon makes itself non-dumpable). The reference is `bareserver` (a goroutine-per-connection Unix-socket server that answers a ")
	s.printf("fixed %d-byte block, the size of the daemon's answer), put through the same steps.\n\n", b.answerSize)
	s.printf("1. **Idle**: 2 s after start, the daemon's own service-account token fetched once.\n")
	s.printf("2. **%d workspaces**: %d more service accounts, each sent once in a get's `env.BL_CLIENT_CREDENTIALS` (%d exchanges at the fake API).\n", memWorkspaces, memWorkspaces, memWorkspaces)
	s.printf("3. **%d connections**: %d connections dialled and held open, then a get sent on every one of them at once and every answer read; ", memConns, memConns)
	s.printf("measured with all open, right after closing them all (200 ms), and 2 s later.\n\n")
	s.printf("| Step | blauthd VmRSS | blauthd VmHWM | bareserver VmRSS | bareserver VmHWM |\n|---|---|---|---|---|\n")
	step := func(name string, x, y memStatus) {
		s.printf("| %s | %s | %s | %s | %s |\n", name, mib(x.rssMiB()), mib(x.hwmMiB()), mib(y.rssMiB()), mib(y.hwmMiB()))
	}
	step("idle", idle, bareIdle)
	step(fmt.Sprintf("%d workspaces", memWorkspaces), tenWS, bareIdle)
	step(fmt.Sprintf("%d connections open, all answered", memConns), d.open, bare.open)
	step("connections closed", d.closed, bare.closed)
	step("2 s later", d.settled, bare.settled)
	s.printf("\nAll %d gets answered in %s on blauthd (%s on the bare server).\n", memConns, d.elapsed.Round(time.Millisecond), bare.elapsed.Round(time.Millisecond))
	return nil
}

type connLoad struct {
	open, closed, settled memStatus
	elapsed               time.Duration
}

// connectionLoad opens memConns connections to socket, sends a get on all of them at once,
// reads every answer, and measures p's memory with them open, after closing them, and 2 s later.
func (b *bench) connectionLoad(p *proc, socket string) (connLoad, error) {
	var r connLoad
	conns := make([]*rawConn, 0, memConns)
	defer func() {
		for _, c := range conns {
			c.close()
		}
	}()
	for range memConns {
		c, err := dialRaw(socket)
		if err != nil {
			return r, fmt.Errorf("dial connection %d: %w", len(conns)+1, err)
		}
		_ = c.c.SetDeadline(time.Now().Add(60 * time.Second))
		conns = append(conns, c)
	}
	start := make(chan struct{})
	errs := make(chan error, memConns)
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, failed, err := c.do(plainGet)
			if err == nil && failed {
				err = fmt.Errorf("error answer")
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	r.elapsed = time.Since(t0)
	close(errs)
	if n := len(errs); n > 0 {
		return r, fmt.Errorf("%d of %d gets failed, first: %v", n, memConns, <-errs)
	}
	var err error
	if r.open, err = readMem(p.pid()); err != nil {
		return r, err
	}
	for _, c := range conns {
		c.close()
	}
	conns = conns[:0]
	time.Sleep(200 * time.Millisecond)
	if r.closed, err = readMem(p.pid()); err != nil {
		return r, err
	}
	time.Sleep(2 * time.Second)
	r.settled, err = readMem(p.pid())
	return r, err
}

// helperMemory measures the peak RSS of blauth-helper token and of minclient, from their
// rusage as the rusage launcher reports it, and the sizes of the binaries.
func (b *bench) helperMemory() error {
	s := b.section("Helper memory and binary size")
	runs := 30
	if b.cfg.quick {
		runs = 5
	}
	measure := func(bin string, args ...string) ([]int64, error) {
		var rss []int64
		for range runs {
			cmd := exec.CommandContext(b.ctx, b.rusage, append([]string{bin}, args...)...)
			cmd.Env, cmd.Dir = b.clientEnv, b.work
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if _, err := cmd.Output(); err != nil {
				return nil, fmt.Errorf("%s: %v: %s", bin, err, stderr.String())
			}
			_, v, ok := strings.Cut(stderr.String(), "rusage: maxrss_kib=")
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if !ok || err != nil {
				return nil, fmt.Errorf("%s: no maxrss in %q", bin, stderr.String())
			}
			rss = append(rss, n)
		}
		slices.Sort(rss)
		return rss, nil
	}
	h, err := measure(b.helper, "token")
	if err != nil {
		return err
	}
	m, err := measure(b.minclient)
	if err != nil {
		return err
	}
	floor, err := measure("/bin/true")
	if err != nil {
		return err
	}
	size := func(p string) float64 {
		fi, err := os.Stat(p)
		if err != nil {
			return 0
		}
		return float64(fi.Size()) / (1 << 20)
	}
	hs, ms, ds, dir := size(b.helper), size(b.minclient), size(b.blauthd), size(b.direct)
	kib := func(v int64) string { return fmt.Sprintf("%.1f MiB", float64(v)/1024) }
	b.add(row{What: "Helper peak RSS (`blauth-helper token`, max of runs)", Figure: kib(h[len(h)-1]), Ref: "minclient " + kib(m[len(m)-1]),
		Ratio: ratio(float64(h[len(h)-1]), float64(m[len(m)-1])), Target: "(information)"})
	b.add(row{What: "Helper binary size", Figure: mib(hs), Ref: "minclient " + mib(ms), Ratio: ratio(hs, ms), Target: "(information)"})

	s.printf("Peak RSS is the child's `ru_maxrss` (KiB) over %d runs each of `bin/blauth-helper token` and `minclient` against the ", runs)
	s.printf("running daemon, one after the other. Each runs under `internal/benchreport/rusage`, a small launcher that forks it, waits ")
	s.printf("with `wait4` and prints the child's `Rusage.Maxrss`: Linux counts the memory of the process that execs into the child's ")
	s.printf("`ru_maxrss` (exec records the old address space's high-water mark, and Go forks with `CLONE_VM`), so measured straight ")
	s.printf("from benchreport every child would seem as large as benchreport. The floor this leaves, `rusage /bin/true`, was ")
	s.printf("%s in this run; both figures include it.\n\n", kib(quantile(floor, 0.5)))
	s.printf("| Program | peak RSS min | median | max | binary size |\n|---|---|---|---|---|\n")
	s.printf("| blauth-helper token | %s | %s | %s | %s |\n", kib(h[0]), kib(quantile(h, 0.5)), kib(h[len(h)-1]), mib(hs))
	s.printf("| minclient | %s | %s | %s | %s |\n", kib(m[0]), kib(quantile(m, 0.5)), kib(m[len(m)-1]), mib(ms))
	s.printf("| /bin/true (the launcher's floor) | %s | %s | %s | |\n", kib(floor[0]), kib(quantile(floor, 0.5)), kib(floor[len(floor)-1]))
	s.printf("\nBoth binaries are built with `CGO_ENABLED=0 -trimpath -ldflags \"-s -w\"` (the helper by `make build`). ")
	s.printf("For information: `bin/blauthd` is %s, `directclient` (a Go program that exchanges a service account over HTTP itself) %s.\n", mib(ds), mib(dir))
	return nil
}
