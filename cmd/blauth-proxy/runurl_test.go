package main

import (
	"context"
	"os"
	"strings"
	"testing"
)

// A BL_RUN_URL that is not a usable run base is a configuration error (exit 2), told at once
// and without quoting what may be a password in it.
func TestExecRefusesABadRunURL(t *testing.T) {
	for _, runURL := range []string{
		"https://user:secret-pw@run.example.test:port/",
		"https://user:secret-pw@run.example.test/",
		"http://run.example.test",
		"run.example.test",
	} {
		var stderr strings.Builder
		code := run(context.Background(), []string{"exec", "--", "true"}, env{stdin: strings.NewReader(""), stdout: &strings.Builder{}, stderr: &stderr,
			getenv: func(k string) string {
				if k == "BL_RUN_URL" {
					return runURL
				}
				return ""
			},
			environ: func() []string { return nil }, getwd: os.Getwd})
		if code != exitUsage || !strings.HasPrefix(stderr.String(), "blauth: error: BL_RUN_URL: ") || !strings.Contains(stderr.String(), "blauth: hint: ") {
			t.Errorf("BL_RUN_URL=%q: exit %d, %q; want 2, an error about BL_RUN_URL and a hint", runURL, code, stderr.String())
		}
		if strings.Contains(stderr.String(), "secret-pw") {
			t.Errorf("BL_RUN_URL=%q: the error quotes the password: %q", runURL, stderr.String())
		}
	}
}
