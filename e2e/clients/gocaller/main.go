// Command gocaller is one long-running Blaxel client of the end-to-end suite e2e/clients: it
// holds no secret, follows blauthd's watch through package blauth (clients/go/blauth), and calls
// GET $BL_API_URL/models every 1 to 2 s for $E2E_DURATION with the daemon's latest token, one
// with at least $E2E_MIN_TTL left (a duration; the package's default when unset). It prints one
// JSON line of counts (never a token) and exits 0 when every call succeeded.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"time"

	"github.com/blauth/blauth/clients/go/blauth"
)

// result is the line the suite reads.
type result struct {
	Calls  int      `json:"calls"`
	OK     int      `json:"ok"`
	Failed int      `json:"failed"`
	Tokens int      `json:"tokens"` // distinct tokens the calls carried
	Errors []string `json:"errors,omitempty"`
}

func main() {
	r, err := run()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gocaller:", err)
	}
	_ = json.NewEncoder(os.Stdout).Encode(r)
	if err != nil || r.Failed > 0 || r.Calls == 0 {
		os.Exit(1)
	}
}

func run() (result, error) {
	var r result
	base := os.Getenv("BL_API_URL")
	d, err := time.ParseDuration(os.Getenv("E2E_DURATION"))
	if base == "" || err != nil {
		return r, fmt.Errorf("set BL_API_URL and E2E_DURATION (%v)", err)
	}
	var minTTL time.Duration
	if v := os.Getenv("E2E_MIN_TTL"); v != "" {
		if minTTL, err = time.ParseDuration(v); err != nil {
			return r, fmt.Errorf("E2E_MIN_TTL: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), d+time.Minute)
	defer cancel()
	ts, err := blauth.NewTokenSource(ctx, blauth.Options{MinTTL: minTTL})
	if err != nil {
		return r, err
	}
	defer ts.Close()
	client := blauth.NewClient(ctx, ts)
	client.Timeout = 30 * time.Second
	seen := map[[32]byte]bool{}
	for end := time.Now().Add(d); time.Now().Before(end); {
		time.Sleep(time.Second + rand.N(time.Second))
		if tok, err := ts.Token(); err == nil {
			seen[sha256.Sum256([]byte(tok.AccessToken))] = true
		}
		r.Calls++
		if err := call(ctx, client, base); err != nil {
			r.Failed++
			if len(r.Errors) < 5 {
				r.Errors = append(r.Errors, time.Now().UTC().Format("15:04:05.000")+" "+err.Error())
			}
			continue
		}
		r.OK++
	}
	r.Tokens = len(seen)
	return r, nil
}

// call lists the models and checks the answer.
func call(ctx context.Context, client *http.Client, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/models", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /models: %s: %s", resp.Status, body)
	}
	var list []json.RawMessage // no Blaxel-Version asked for: a bare list, as from the API
	if err := json.Unmarshal(body, &list); err != nil || len(list) == 0 {
		return fmt.Errorf("GET /models: unexpected body %.200s", body)
	}
	return nil
}
