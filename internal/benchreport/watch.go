package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/ipc"
)

const (
	watchMemConns  = 1000
	watchFanout    = 100
	watchRefreshes = 30
	shortTokenTTL  = 5 * time.Second
	watchMemTarget = 64.0 // MiB: the daemon's memory target after 1000 connections
	// perStreamBudget is what docs/OPERATIONS.md counts for each open connection or watcher when
	// it shows that every socket's caps full stay under the unit's MemoryMax.
	perStreamBudget = 16.0 // KiB
	// fanoutTargetMs is the goal for a refresh to reach the last of watchFanout watchers, p99.
	fanoutTargetMs = 2.0
)

// watchBench measures what the watch stream costs: the daemon's memory with 1000 idle watchers
// beside 1000 idle plain connections, and how long a refresh takes to reach the last of 100
// watchers; and, on a simulated day, the token requests of long-running processes with and
// without the daemon.
func (b *bench) watchBench() error {
	if err := b.watchMemory(); err != nil {
		return err
	}
	if err := b.watcherCost(); err != nil {
		return err
	}
	if err := b.watchFanout(); err != nil {
		return err
	}
	return nil
}

// openWatchers opens n watch streams (or n plain idle connections when watch is false) on
// socket, each having read its first answer.
func openWatchers(socket string, n int, watch bool) ([]*bufio.Reader, []net.Conn, error) {
	var conns []net.Conn
	var readers []*bufio.Reader
	req := ipc.NewMessage(ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionWatch)
	for i := 0; i < n; i++ {
		c, err := net.Dial("unix", socket)
		if err != nil {
			closeAll(conns)
			return nil, nil, fmt.Errorf("dial %d: %w", i+1, err)
		}
		conns = append(conns, c)
		r := bufio.NewReader(c)
		readers = append(readers, r)
		if !watch {
			continue
		}
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		if err := ipc.WriteMessage(c, req); err != nil {
			closeAll(conns)
			return nil, nil, err
		}
		m, err := ipc.ReadAnswer(r)
		if err == nil {
			_, err = ipc.ParseToken(m)
		}
		if err != nil {
			closeAll(conns)
			return nil, nil, fmt.Errorf("watcher %d: %w", i+1, err)
		}
		_ = c.SetDeadline(time.Time{})
	}
	return readers, conns, nil
}

func closeAll(cs []net.Conn) {
	for _, c := range cs {
		c.Close()
	}
}

// watchMemory is the daemon's RSS with 1000 idle watchers, beside 1000 idle plain connections.
func (b *bench) watchMemory() error {
	s := b.section("Watchers")
	measure := func(watch bool) (memStatus, error) {
		_, conns, err := openWatchers(b.socket, watchMemConns, watch)
		if err != nil {
			return memStatus{}, err
		}
		defer closeAll(conns)
		time.Sleep(time.Second)
		return readMem(b.daemon.pid())
	}
	plain, err := measure(false)
	if err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	watching, err := measure(true)
	if err != nil {
		return err
	}
	b.add(row{What: fmt.Sprintf("Daemon RSS, %d idle watchers", watchMemConns), Figure: mib(watching.rssMiB()),
		Ref: fmt.Sprintf("%d idle connections %s", watchMemConns, mib(plain.rssMiB())), Ratio: ratio(watching.rssMiB(), plain.rssMiB()),
		Target: fmt.Sprintf("< %.0f MiB", watchMemTarget), Verdict: verdict(watching.rssMiB() < watchMemTarget)})
	s.printf("**Memory.** `bin/blauthd` (the run's daemon, one service account in its environment) with %d connections open at once, "+
		"each having sent `action=watch` and read its first answer, then idle; the reference is the same number of connections open and idle "+
		"without a request, measured just before. VmRSS from /proc a second after the last one opened: %s with watchers, %s without.\n\n",
		watchMemConns, mib(watching.rssMiB()), mib(plain.rssMiB()))
	return nil
}

// watcherCost measures what one open watcher and one open connection cost the daemon: each on
// a fresh bin/blauthd (so no memory freed by earlier steps is reused), the RSS with
// watchMemConns of them open less the RSS just before they were opened, divided by their number.
func (b *bench) watcherCost() error {
	measure := func(name string, req *ipc.Message) (float64, memStatus, error) {
		cc := b.api.AddClient("cost-"+name, "secret")
		socket := filepath.Join(b.tmp, "cost-"+name, "blauthd.sock")
		env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + b.home, "BL_API_URL=" + b.api.Base, "BL_WORKSPACE=cost", "BL_CLIENT_CREDENTIALS=" + cc}
		p, err := startProc("blauthd-cost-"+name, filepath.Join(b.tmp, "blauthd-cost-"+name+".log"), env, b.work, b.blauthd,
			"--socket", socket, "--log-format", "json", "--log-level", "warn", "--no-keyring", "--bl-config", filepath.Join(b.tmp, "none.yaml"))
		if err != nil {
			return 0, memStatus{}, err
		}
		b.procs.add(p)
		defer p.stop()
		if err := waitSocket(b.ctx, p, socket, 10*time.Second); err != nil {
			return 0, memStatus{}, err
		}
		first, err := openStreams(socket, 1, req) // the token exchanged once, before the baseline
		if err != nil {
			return 0, memStatus{}, err
		}
		defer closeAll(first)
		time.Sleep(time.Second)
		before, err := readMem(p.pid())
		if err != nil {
			return 0, memStatus{}, err
		}
		conns, err := openStreams(socket, watchMemConns, req)
		if err != nil {
			return 0, memStatus{}, err
		}
		defer closeAll(conns)
		time.Sleep(time.Second)
		after, err := readMem(p.pid())
		if err != nil {
			return 0, memStatus{}, err
		}
		return float64(after.RSS-before.RSS) / watchMemConns, after, nil
	}
	get := ipc.NewMessage(ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionGet)
	watch := ipc.NewMessage(ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionWatch)
	perConn, connMem, err := measure("conn", get)
	if err != nil {
		return err
	}
	perWatcher, watchMem, err := measure("watch", watch)
	if err != nil {
		return err
	}
	kib := func(v float64) string { return fmt.Sprintf("%.1f KiB", v) }
	b.add(row{What: fmt.Sprintf("Daemon RSS per open watcher (%d watchers, fresh daemon)", watchMemConns), Figure: kib(perWatcher),
		Ref: "per open connection " + kib(perConn), Ratio: ratio(perWatcher, perConn),
		Target: fmt.Sprintf("≤ %.0f KiB (OPERATIONS.md's budget)", perStreamBudget), Verdict: verdict(max(perWatcher, perConn) <= perStreamBudget)})
	s := b.section("Watchers")
	s.printf("**Cost of one watcher.** A fresh `bin/blauthd` for each figure (its service account's token fetched by a first request, then "+
		"1 s to settle): VmRSS with %d more connections open, less VmRSS just before, over %d. Watchers (each sent `action=watch` and read "+
		"its first answer): %s each, %s with all open. Connections (each sent a `get`, read its answer, and stays open): %s each, %s with all open. "+
		"docs/OPERATIONS.md counts %.0f KiB for either when it adds up every socket's caps.\n\n",
		watchMemConns, watchMemConns, kib(perWatcher), mib(watchMem.rssMiB()), kib(perConn), mib(connMem.rssMiB()), perStreamBudget)
	return nil
}

// openStreams opens n connections to socket, each sending req and reading its first answer,
// which must be a token; they stay open.
func openStreams(socket string, n int, req *ipc.Message) ([]net.Conn, error) {
	var conns []net.Conn
	for i := 0; i < n; i++ {
		c, err := net.Dial("unix", socket)
		if err != nil {
			closeAll(conns)
			return nil, fmt.Errorf("dial %d: %w", i+1, err)
		}
		conns = append(conns, c)
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		if err := ipc.WriteMessage(c, req); err != nil {
			closeAll(conns)
			return nil, err
		}
		m, err := ipc.ReadAnswer(bufio.NewReader(c))
		if err == nil {
			_, err = ipc.ParseToken(m)
		}
		if err != nil {
			closeAll(conns)
			return nil, fmt.Errorf("connection %d: %w", i+1, err)
		}
		_ = c.SetDeadline(time.Time{})
	}
	return conns, nil
}

// watchFanout runs a second daemon whose service account gets 5 s tokens (refreshed every second
// or two with --min-ttl 1s; the report gives the measured period) and times, for each refresh,
// how long after the fake API issued the token each of 100 watchers had it: the first and the
// last. The reference is bareserver's fan-out, timed the same way against the same fake API.
func (b *bench) watchFanout() error {
	b.api.SetTTL(shortTokenTTL)
	defer b.api.SetTTL(2 * time.Hour)
	cc := b.api.AddClient("fanout-sa", "secret")
	socket := filepath.Join(b.tmp, "fan", "blauthd.sock")
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + b.home, "BL_API_URL=" + b.api.Base, "BL_WORKSPACE=fanout", "BL_CLIENT_CREDENTIALS=" + cc}
	daemon, err := b.fanout("blauthd-fanout", env, socket, b.blauthd,
		"--socket", socket, "--log-format", "json", "--log-level", "warn", "--no-keyring", "--bl-config", filepath.Join(b.tmp, "none.yaml"), "--min-ttl", "1s")
	if err != nil {
		return err
	}
	getRT, err := roundTrip(socket)
	if err != nil {
		return err
	}
	daemon.stop()
	bareSocket := filepath.Join(b.tmp, "fan", "bare.sock")
	bareEnv := []string{"PATH=" + os.Getenv("PATH"), "BL_CLIENT_CREDENTIALS=" + b.api.AddClient("fanout-bare", "secret")}
	bare, err := b.fanout("bareserver-fanout", bareEnv, bareSocket, b.bareBin,
		"-socket", bareSocket, "-size", fmt.Sprint(b.answerSize), "-fanout-api", b.api.Base, "-fanout-every", "1s")
	if err != nil {
		return err
	}
	bare.stop()
	for _, q := range []struct {
		name string
		p    float64
	}{{"p50", 0.5}, {"p99", 0.99}} {
		v, ref := daemon.last(q.p), bare.last(q.p)
		rw := row{What: fmt.Sprintf("Refresh to the last of %d watchers holding the new token, %s", watchFanout, q.name),
			Figure: ms(v), Ref: "bare fan-out " + ms(ref), Ratio: ratio(v, ref), Target: "(information)"}
		if q.name == "p99" {
			rw.Target, rw.Verdict = fmt.Sprintf("≤ %s", ms(fanoutTargetMs)), verdict(v <= fanoutTargetMs)
		}
		b.add(rw)
	}
	progress("   refresh to every watcher: %d refreshes, one every %.2f s on average; first watcher p50 %s p99 %s, last watcher p50 %s p99 %s; bare fan-out: first p50 %s p99 %s, last p50 %s p99 %s",
		watchRefreshes, daemon.period.Seconds(), ms(daemon.first(0.5)), ms(daemon.first(0.99)), ms(daemon.last(0.5)), ms(daemon.last(0.99)),
		ms(bare.first(0.5)), ms(bare.first(0.99)), ms(bare.last(0.5)), ms(bare.last(0.99)))
	s := b.section("Watchers")
	s.printf("**From a refresh to every watcher.** A second `bin/blauthd` (`--min-ttl 1s`; its service account gets 5 s tokens from the fake API, "+
		"and it refreshed them every %.2f s on average) with %d watchers of that credential, each read by its own goroutine in benchreport. For %d refreshes, "+
		"the time from the fake API issuing the token (its handler, in this process) to each watcher reading it: first watcher p50 %s, p99 %s; "+
		"last watcher p50 %s, p99 %s. It includes the daemon's exchange finishing, its fan-out, and %d writes and %d reads on a %d-core machine. "+
		"The reference is the least a daemon can do: bareserver with `-fanout-api` exchanges its own service account at the same fake API every "+
		"second (plain `net/http`, no retry, schedule or check), and writes each token from that goroutine to %d watchers opened and read the same "+
		"way: first watcher p50 %s, p99 %s; last watcher p50 %s, p99 %s. A `get` round trip on an open connection to the daemon is %s. "+
		"The goal is the last watcher within %s at p99.\n\n",
		daemon.period.Seconds(), watchFanout, watchRefreshes, ms(daemon.first(0.5)), ms(daemon.first(0.99)), ms(daemon.last(0.5)), ms(daemon.last(0.99)),
		watchFanout, watchFanout, numCPU(), watchFanout, ms(bare.first(0.5)), ms(bare.first(0.99)), ms(bare.last(0.5)), ms(bare.last(0.99)), ms(getRT), ms(fanoutTargetMs))
	s.printf("%s\n\n", fanoutNote)
	return nil
}

// fanoutRun is one fan-out measured: per refresh, the first and the last watcher's delay.
type fanoutRun struct {
	p             *proc
	firsts, lasts []time.Duration
	period        time.Duration
}

func (r *fanoutRun) first(q float64) float64 {
	return durationsMs(r.firsts)[int(q*float64(len(r.firsts)-1))]
}
func (r *fanoutRun) last(q float64) float64 {
	return durationsMs(r.lasts)[int(q*float64(len(r.lasts)-1))]
}
func (r *fanoutRun) stop() { r.p.stop() }

// fanout starts bin with args (it serves socket), opens watchFanout watchers on it and times
// watchRefreshes refreshes reaching them. The process is left running for the caller to stop.
func (b *bench) fanout(name string, env []string, socket, bin string, args ...string) (*fanoutRun, error) {
	p, err := startProc(name, filepath.Join(b.tmp, name+".log"), env, b.work, bin, args...)
	if err != nil {
		return nil, err
	}
	b.procs.add(p)
	if err := waitSocket(b.ctx, p, socket, 10*time.Second); err != nil {
		p.stop()
		return nil, err
	}
	readers, conns, err := openWatchers(socket, watchFanout, true)
	if err != nil {
		p.stop()
		return nil, err
	}
	defer closeAll(conns)
	first, last, period, err := fanoutLatencies(b.api, readers, conns)
	if err != nil {
		p.stop()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	slices.Sort(first)
	slices.Sort(last)
	return &fanoutRun{p: p, firsts: first, lasts: last, period: period}, nil
}

// fanoutLatencies reads the watchers until each has had watchRefreshes+1 new tokens (within 2
// minutes), and returns, for the first watchRefreshes tokens that reached all of them, how long
// after issue the first and the last watcher had it, and the mean time between the issues of
// those tokens (the refresh period). Each reader notes its arrivals in a slice of its own: no
// channel send, no other goroutine woken per message, so that the observer costs the two cores
// no more than the clients holding their tokens do.
func fanoutLatencies(api *blaxeltest.Server, readers []*bufio.Reader, conns []net.Conn) (first, last []time.Duration, period time.Duration, err error) {
	type seen struct {
		tok string
		at  time.Time
	}
	arrivals := make([][]seen, len(readers))
	deadline := time.Now().Add(2 * time.Minute)
	var wg sync.WaitGroup
	for i, r := range readers {
		_ = conns[i].SetReadDeadline(deadline)
		wg.Add(1)
		go func() {
			defer wg.Done()
			got := make([]seen, 0, watchRefreshes+1)
			for len(got) <= watchRefreshes {
				m, err := ipc.ReadAnswer(r)
				if err != nil {
					break
				}
				if t, err := ipc.ParseToken(m); err == nil {
					got = append(got, seen{t.Token, time.Now()})
				}
			}
			arrivals[i] = got
		}()
	}
	wg.Wait()
	byToken := map[string][]time.Time{}
	for _, got := range arrivals {
		for _, s := range got {
			byToken[s.tok] = append(byToken[s.tok], s.at)
		}
	}
	type spread struct{ issued, first, last time.Time }
	var all []spread
	for tok, ts := range byToken {
		if len(ts) != len(readers) {
			continue
		}
		issued, ok := api.IssuedAt(tok)
		if !ok {
			return nil, nil, 0, fmt.Errorf("the fake API did not issue a token a watcher got")
		}
		all = append(all, spread{issued, slices.MinFunc(ts, cmpTime), slices.MaxFunc(ts, cmpTime)})
	}
	if len(all) < watchRefreshes {
		return nil, nil, 0, fmt.Errorf("only %d refreshes reached every watcher within 2 minutes", len(all))
	}
	slices.SortFunc(all, func(a, b spread) int { return a.issued.Compare(b.issued) })
	all = all[:watchRefreshes]
	for _, s := range all {
		first = append(first, s.first.Sub(s.issued))
		last = append(last, s.last.Sub(s.issued))
	}
	period = all[len(all)-1].issued.Sub(all[0].issued) / time.Duration(len(all)-1)
	return first, last, period, nil
}

func cmpTime(a, b time.Time) int { return a.Compare(b) }

// roundTrip is the median of 200 gets on one open connection, in milliseconds.
func roundTrip(socket string) (float64, error) {
	c, err := ipc.Dial(socket, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	req := ipc.NewMessage(ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionGet)
	var ds []time.Duration
	for i := 0; i < 200; i++ {
		t0 := time.Now()
		if _, err := c.Do(req); err != nil {
			return 0, err
		}
		ds = append(ds, time.Since(t0))
	}
	slices.Sort(ds)
	return durationsMs(ds)[len(ds)/2], nil
}

// fanoutNote is what a trace of the fan-out found, and what each change gained.
const fanoutNote = "**What the trace found**, and what each change gained. A runtime trace of the fan-out daemon (a build with " +
	"`runtime/trace` switched on, not shipped), 20 refreshes: from the token answer's arrival to the broker's wakes about 0.15 ms " +
	"(net/http's body hand-offs, the JSON, the schedule); the wakes themselves about 1 µs each. Before: each of the 100 woken " +
	"goroutines then ran on either core, waited for the answer the first of them made (a second scheduling round), wrote it, and " +
	"read once more to park: 0.4-1.0 ms from the wakes to the last write, on both cores, while benchreport's 100 readers needed them " +
	"too; benchreport measured the last watcher at p50 1.54-1.71 ms, p99 2.21-6.35 ms (two runs; main before this wave: p50 3.32, " +
	"p99 7.94). Now the watchers of one request are a group; a wake starts the group's fan-out, which makes the answer once and writes " +
	"it to each member whose goroutine waits in its read (one non-blocking `write(2)` each, 3-5 µs under the trace), so a refresh " +
	"wakes no watcher goroutine at all; a member it cannot serve that way (busy, a new credential to hold, a socket too full to take " +
	"the message whole) has its goroutine woken to do it, as before. Measured the same way: first watcher p50 0.48-0.49 ms (was " +
	"0.72-0.88), last watcher p50 1.40-1.41 ms, p99 2.11-2.73 ms. A `perf record` of the daemon during the fan-outs: the " +
	"`write(2)` calls are 82% of the fan-out's samples (the kernel queueing the message and waking the reader); the rest of " +
	"`deliver` (the lock, the deadlines, the message) 16%. With the bare fan-out beside it (three runs, after the fan-out stopped making its answer on a goroutine of " +
	"its own): last watcher p50 1.36-1.47 ms against 1.07-1.17 ms, p99 2.46-3.13 ms against 1.78-2.17 ms. What is left is " +
	"mostly the readers: 100 goroutines each woken by the netpoller, reading, parsing and reading again to park, on the two " +
	"cores the daemon writes from. The bare fan-out pays the same, and is itself at or over 2 ms at p99 in some runs on this machine. " +
	"Then each delivery moved two deadlines before the next member's write (the write deadline cleared, the read deadline set to " +
	"the new token's min_ttl point, with a clock read): now the write deadline is cleared only when the watcher's goroutine had set " +
	"one, and the read deadlines are moved after every member has been written to. Two runs each, the same binary otherwise: last " +
	"watcher p50 1.35 -> 1.03-1.08 ms (bare 0.93-1.10), p99 2.59 -> 1.77-2.11 ms (bare 1.43-1.96)."
