//go:build sdk

package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/internal/testkit/e2etest"
	"github.com/blauth/blauth/ipc"
)

// inspectorSpan is how long the Inspector's calls go on: past the expiry of the first token and
// across the daemon's refresh of it.
const inspectorSpan = tokenTTL + tokenTTL/4

// inspectorRun is one run of the MCP Inspector's CLI to its end.
type inspectorRun struct {
	stdout, stderr string
	code           int
}

// inspect runs the MCP Inspector's CLI (the pinned @modelcontextprotocol/inspector-cli, in CLI
// mode; the package holds no web client, no server and no browser launcher) with `blauth-helper mcp URL` as its
// stdio server, as its README says to run a local server: the command after --cli, then the
// Inspector's own options. The Inspector hands its whole environment to the server it starts.
// It runs in dir.
func (f *fixture) inspect(ctx context.Context, dir, url string, method ...string) (inspectorRun, error) {
	bin := filepath.Join(f.node, "node_modules", ".bin", "mcp-inspector-cli")
	args := append([]string{"--cli", bins.Helper, "mcp", url, "--method"}, method...)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env, cmd.Dir = f.env(), dir
	cmd.WaitDelay = 5 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	run := inspectorRun{stdout: out.String(), stderr: errb.String()}
	if cmd.ProcessState != nil {
		run.code = cmd.ProcessState.ExitCode()
	}
	if _, isExit := err.(*exec.ExitError); isExit {
		err = nil
	}
	return run, err
}

// sampleTokens asks blauthd for acme's token every 20 ms until ctx is done, and then delivers
// the fingerprints of every token it answered with (a token lives seconds between refreshes).
func (f *fixture) sampleTokens(ctx context.Context) <-chan string {
	out := make(chan string, 1024)
	go func() {
		defer close(out)
		seen := map[string]bool{}
		for ctx.Err() == nil {
			if c, err := ipc.Dial(f.d.Socket, 5*time.Second); err == nil {
				resp, err := c.DoTimeout(ipc.NewMessage(ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionGet, ipc.KeyWorkspace, workspace), 5*time.Second)
				c.Close()
				if err == nil {
					if tok, err := ipc.ParseToken(resp); err == nil && !seen[tok.Token] {
						seen[tok.Token] = true
						out <- fingerprint(tok.Token)
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return out
}

// fingerprint is how mcp-server.mjs names a token it accepted: the first 16 hex digits of its
// SHA-256.
func fingerprint(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])[:16]
}

// The MCP Inspector's CLI, an MCP client nobody here wrote, launches `blauth-helper mcp URL` as
// its stdio server, lists the tools of a real MCP server that accepts only valid, unexpired
// tokens (it asks the fake API), then calls one with an argument, a new Inspector process each
// time, for longer than a token lives and across the daemon's refresh, and lists them again at
// the end. Every run exits 0 with the tool list or the call's answer; every request the server
// got carried a token the daemon held while that run went on; each run's session is
// deleted at its end, and no bridge outlives its Inspector.
func TestMCPInspectorCLIThroughBridge(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	srv, mcpURL := f.mcpServer(t)
	// The Inspector CLI runs from a subdirectory of a Node project, as users run it: 1.0.3 finds
	// its own package.json only when ../package.json exists beside the working directory
	// (modelcontextprotocol/inspector#1503); elsewhere it exits before it starts its server.
	dir := filepath.Join(f.home.Work, "app")
	if err := os.WriteFile(filepath.Join(f.home.Work, "package.json"), []byte(`{"private": true}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	daemonBefore := f.api.TokenRequestsBy(blaxeltest.IsDaemon)

	type toolList struct {
		Tools []struct {
			Name        string `json:"name"`
			InputSchema struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"inputSchema"`
		} `json:"tools"`
	}
	type callResult struct {
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
		IsError bool `json:"isError"`
	}
	daemonTokens := map[string]bool{} // fingerprints of the daemon's tokens, sampled around each run
	runs := 0
	// once runs the Inspector with method, checks how it ended, what the server saw and that no
	// bridge is left, and decodes its answer into v.
	once := func(v any, method ...string) {
		t.Helper()
		before := fingerprint(f.daemonToken(t))
		// The daemon's tokens while the Inspector runs: a slow run (a loaded machine) may
		// span more than one refresh, and each token it sent must be one the daemon held.
		held := map[string]bool{before: true}
		// A bound, not a timing: a run takes about 2 s here, 25 s with every suite beside it.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		sampled := f.sampleTokens(ctx)
		run, err := f.inspect(ctx, dir, mcpURL, method...)
		cancel()
		for fp := range sampled {
			held[fp] = true
		}
		after := fingerprint(f.daemonToken(t))
		held[after] = true
		for fp := range held {
			daemonTokens[fp] = true
		}
		runs++
		if err != nil {
			t.Fatalf("run %d (%q): the Inspector did not run: %v\nstderr:\n%s", runs, method, err, run.stderr)
		}
		if run.code != 0 {
			t.Fatalf("run %d (%q): the Inspector exited %d\nstdout:\n%s\nstderr:\n%s", runs, method, run.code, run.stdout, run.stderr)
		}
		if err := json.Unmarshal([]byte(run.stdout), v); err != nil {
			t.Fatalf("run %d (%q): the Inspector printed %q, not the JSON answer: %v", runs, method, run.stdout, err)
		}
		if _, err := srv.stdin.Write([]byte("tokens\n")); err != nil {
			t.Fatal(err)
		}
		var seen struct {
			Tokens []string `json:"tokens"`
		}
		srv.next(&seen, 10*time.Second)
		if len(seen.Tokens) == 0 {
			t.Errorf("run %d (%q): the server accepted no token", runs, method)
		}
		for _, fp := range seen.Tokens {
			if !held[fp] {
				t.Errorf("run %d (%q): the server got token %s, not one the daemon held during the run (%s when it began, %s when it ended)", runs, method, fp, before, after)
			}
		}
		// The Inspector waits for its server to close before it exits: the bridge (whose command
		// line holds the URL) is gone, or going, once the Inspector has ended.
		left := e2etest.ProcsNaming(mcpURL)
		for deadline := time.Now().Add(2 * time.Second); len(left) > 0 && time.Now().Before(deadline); left = e2etest.ProcsNaming(mcpURL) {
			time.Sleep(50 * time.Millisecond)
		}
		if len(left) > 0 {
			t.Fatalf("run %d (%q): processes left after the Inspector ended: %q", runs, method, left)
		}
	}
	checkList := func(when string, l toolList) {
		t.Helper()
		var names []string
		for _, tool := range l.Tools {
			names = append(names, tool.Name)
			if _, ok := tool.InputSchema.Properties["text"]; tool.Name == "echo" && !ok {
				t.Errorf("%s: echo's input schema has no property text: %+v", when, tool.InputSchema)
			}
		}
		slices.Sort(names)
		if !slices.Equal(names, []string{"announce", "count", "echo"}) {
			t.Errorf("%s: tools listed: %q", when, names)
		}
	}

	start := time.Now()
	var first toolList
	once(&first, "tools/list")
	checkList("first tools/list", first)
	calls := 0
	for time.Since(start) < inspectorSpan {
		calls++
		arg := fmt.Sprintf("call %d through the bridge", calls)
		var r callResult
		once(&r, "tools/call", "--tool-name", "echo", "--tool-arg", "text="+arg)
		if r.IsError || len(r.Content) != 1 || r.Content[0].Type != "text" || r.Content[0].Text != "echo: "+arg {
			t.Errorf("call %d: answer %+v, want the text %q", calls, r, "echo: "+arg)
		}
	}
	var last toolList
	once(&last, "tools/list")
	checkList("last tools/list", last)
	elapsed := time.Since(start)
	refreshes := f.api.TokenRequestsBy(blaxeltest.IsDaemon) - daemonBefore

	srv.close()
	var server mcpServer
	srv.next(&server, 30*time.Second)
	if err := srv.wait(30 * time.Second); err != nil {
		t.Errorf("the MCP server ended with %v", err)
	}
	t.Logf("FIGURES MCP Inspector CLI through blauth-helper mcp: %d runs (2 tools/list, %d tools/call) over %s; blauthd refreshes %d, daemon tokens seen around the runs %d; server: %d requests (%d POST, %d GET, %d DELETE), %d rejected %v, %d distinct tokens, %d session(s)",
		runs, calls, elapsed.Round(100*time.Millisecond), refreshes, len(daemonTokens), server.Requests, server.Posts, server.Gets,
		server.Deletes, server.Rejected, server.Reasons, server.DistinctTokens, server.Sessions)

	if server.Rejected != 0 {
		t.Errorf("the server rejected %d requests %v: the bridge sent an invalid or expired token", server.Rejected, server.Reasons)
	}
	if refreshes < 1 || len(daemonTokens) < 2 || server.DistinctTokens < 2 {
		t.Errorf("the runs did not span a refresh: blauthd refreshed %d times, %d daemon tokens seen, the server got %d distinct tokens; want at least 1, 2, 2",
			refreshes, len(daemonTokens), server.DistinctTokens)
	}
	if server.Echoes != calls {
		t.Errorf("the server answered %d echo calls, the Inspector made %d", server.Echoes, calls)
	}
	if server.Sessions != runs || server.Deletes != runs {
		t.Errorf("the server opened %d session(s) and saw %d DELETE for %d Inspector runs, want one session per run, deleted at its end", server.Sessions, server.Deletes, runs)
	}
}
