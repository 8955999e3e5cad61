package main

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// The socket caps reach the daemon's configuration, and a negative one is refused with exit 2.
func TestCapFlags(t *testing.T) {
	o, err := parseFlags([]string{"--max-conns", "100", "--max-watchers", "50", "--scoped-max-conns", "8", "--scoped-max-watchers", "4"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := o.config(zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxConns != 100 || cfg.MaxWatchers != 50 || cfg.ScopedMaxConns != 8 || cfg.ScopedMaxWatchers != 4 {
		t.Fatalf("caps %d %d %d %d, want 100 50 8 4", cfg.MaxConns, cfg.MaxWatchers, cfg.ScopedMaxConns, cfg.ScopedMaxWatchers)
	}
	for _, f := range []string{"max-conns", "max-watchers", "scoped-max-conns", "scoped-max-watchers"} {
		var stderr bytes.Buffer
		if code := run([]string{"--" + f, "-1"}, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), f+" is -1") {
			t.Errorf("--%s -1: exit %d, %q; want 2 naming the setting", f, code, stderr.String())
		}
	}
}
