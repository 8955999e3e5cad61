package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"
)

// The daemon serves GET /metrics on d.metrics in the Prometheus text format (version 0.0.4):
// what it served and exchanged, when each held token expires, source errors and watchers. They
// hold no secret, and name no workspace unless MetricsWorkspaces asks for it.

// listenMetrics opens the metrics address.
func (d *Daemon) listenMetrics() error {
	ln, err := net.Listen("tcp", d.cfg.MetricsListen)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	if ip := ln.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		d.log.Warn().Str("address", ln.Addr().String()).Msg("metrics are served beyond loopback: anyone who can reach the address sees the daemon's activity (never a secret)")
	}
	d.metrics = ln
	return nil
}

func (d *Daemon) serveMetrics(ctx context.Context) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		d.writeMetrics(w, d.cfg.Clock.Now())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	d.log.Info().Str("address", d.metrics.Addr().String()).Msg("metrics serving")
	if err := srv.Serve(d.metrics); err != nil && !errors.Is(err, http.ErrServerClosed) {
		d.log.Error().Err(err).Msg("metrics stopped")
	}
}

// family is one metric: its name, type, help and samples.
type family struct {
	name, typ, help string
	samples         []sample
}

type sample struct {
	labels [][2]string
	value  float64
}

func (d *Daemon) writeMetrics(w io.Writer, now time.Time) {
	var fams []family
	served, refusedConns, watchers := d.stats.Snapshot()
	f := family{name: "blauth_tokens_served_total", typ: "counter", help: "Tokens handed to callers (get answers and watch messages), by credential kind."}
	for _, k := range slices.Sorted(maps.Keys(served)) {
		f.samples = append(f.samples, sample{[][2]string{{"kind", k}}, float64(served[k])})
	}
	fams = append(fams, f)
	c := d.broker.Counters()
	f = family{name: "blauth_exchanges_total", typ: "counter", help: "Requests to token endpoints, by credential kind and result (ok, failed: retried, refused: for good)."}
	for _, k := range slices.Sorted(maps.Keys(c.Exchanges)) {
		for _, r := range slices.Sorted(maps.Keys(c.Exchanges[k])) {
			f.samples = append(f.samples, sample{[][2]string{{"kind", k}, {"result", r}}, float64(c.Exchanges[k][r])})
		}
	}
	fams = append(fams, f,
		family{"blauth_refreshes_total", "counter", "Exchanges that replaced a token still held, before it expired.", []sample{{nil, float64(c.Refreshes)}}},
		d.expiries(now),
		d.sourceErrors(),
		family{"blauth_watchers", "gauge", "Watch streams open now.", []sample{{nil, float64(watchers)}}},
		family{"blauth_connections_refused_total", "counter", "Connections refused: another user, or over the connection limit.", []sample{{nil, float64(refusedConns)}}},
		family{"blauth_build_info", "gauge", "The daemon's version, as a label.", []sample{{[][2]string{{"version", d.cfg.Version}}, 1}}},
	)
	for _, f := range fams {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", f.name, f.help, f.name, f.typ)
		for _, s := range f.samples {
			fmt.Fprintf(w, "%s%s %g\n", f.name, labels(s.labels), s.value)
		}
	}
}

// expiries is the seconds until each token the broker holds expires.
func (d *Daemon) expiries(now time.Time) family {
	f := family{name: "blauth_token_expiry_seconds", typ: "gauge", help: "Seconds until each token the daemon holds expires (negative: expired, about to be dropped)."}
	for i, e := range d.broker.Status() {
		if e.Expiry.IsZero() {
			continue
		}
		src, _, _ := strings.Cut(e.Source, ":")
		ls := [][2]string{{"kind", e.Kind}, {"source", src}}
		if d.cfg.MetricsWorkspaces {
			ls = append(ls, [2]string{"workspace", e.Workspace})
		} else {
			ls = append(ls, [2]string{"token", fmt.Sprint(i)})
		}
		f.samples = append(f.samples, sample{ls, e.Expiry.Sub(now).Seconds()})
	}
	return f
}

// sourceErrors counts the sources that cannot be used now, by kind.
func (d *Daemon) sourceErrors() family {
	f := family{name: "blauth_source_errors", typ: "gauge", help: "Sources that cannot be used now (a broken bl config, an unavailable keyring, an exhausted file watcher), by source kind."}
	n := map[string]int{}
	for _, e := range d.resolver.SourceErrors() {
		n[e.Source.Kind]++
	}
	for _, k := range slices.Sorted(maps.Keys(n)) {
		f.samples = append(f.samples, sample{[][2]string{{"source", k}}, float64(n[k])})
	}
	return f
}

// labels formats a label set, its values escaped as the text format wants.
func labels(ls [][2]string) string {
	if len(ls) == 0 {
		return ""
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	parts := make([]string, len(ls))
	for i, l := range ls {
		parts[i] = l[0] + `="` + r.Replace(l[1]) + `"`
	}
	return "{" + strings.Join(parts, ",") + "}"
}
