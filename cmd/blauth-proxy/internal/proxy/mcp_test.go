package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeMCP is a minimal Streamable HTTP endpoint: initialize answers JSON with a session id;
// a request answers an event stream holding a notification and then the response
// (pretty-printed, over several data lines); a notification is accepted (202); "refuse" is
// answered 401 and "move" 307 to elsewhere; GET is not offered (405); DELETE ends the session.
// It expects testKey, unless accept is set: then it is a server that speaks OAuth, which
// answers a token accept refuses with 401 and WWW-Authenticate naming its protected resource
// metadata (served at /.well-known/oauth-protected-resource), as Blaxel's hosted MCP server does.
type fakeMCP struct {
	*httptest.Server
	elsewhere string
	accept    func(token string) bool
	mu        sync.Mutex
	problems  []string // requests that lacked a header they needed
	deleted   []string // session ids deleted
	posts     int
	refused   []string // the tokens accept refused, one per request
}

func newFakeMCP(t *testing.T, elsewhere string) *fakeMCP {
	f := &fakeMCP{elsewhere: elsewhere}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeMCP) problem(format string, a ...any) {
	f.mu.Lock()
	f.problems = append(f.problems, fmt.Sprintf(format, a...))
	f.mu.Unlock()
}

// authorized checks a request's headers; false when it was answered (refused, or metadata).
func (f *fakeMCP) authorized(w http.ResponseWriter, r *http.Request) bool {
	const metadata = "/.well-known/oauth-protected-resource"
	if f.accept != nil && r.URL.Path == metadata { // public, as RFC 9728 has it
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"resource":%q,"authorization_servers":[%q],"bearer_methods_supported":["header"]}`, f.URL, f.URL+"/oauth")
		return false
	}
	auth := r.Header.Get("Authorization")
	for h, want := range map[string]string{"X-Blaxel-Authorization": auth, "X-Blaxel-Workspace": "acme"} {
		if got := r.Header.Get(h); got != want {
			f.problem("%s %s without the right %s", r.Method, r.URL.Path, h)
		}
	}
	if f.accept == nil {
		if auth != "Bearer "+testKey {
			f.problem("%s %s without the right Authorization", r.Method, r.URL.Path)
		}
		return true
	}
	if tok, ok := strings.CutPrefix(auth, "Bearer "); !ok || !f.accept(tok) {
		f.mu.Lock()
		f.refused = append(f.refused, tok)
		f.mu.Unlock()
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer error="invalid_token", resource_metadata=%q`, f.URL+metadata))
		http.Error(w, `{"error":"invalid_token"}`, http.StatusUnauthorized)
		return false
	}
	return true
}

func (f *fakeMCP) serve(w http.ResponseWriter, r *http.Request) {
	if !f.authorized(w, r) {
		return
	}
	switch r.Method {
	case http.MethodGet:
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	case http.MethodDelete:
		f.mu.Lock()
		f.deleted = append(f.deleted, r.Header.Get("Mcp-Session-Id"))
		f.mu.Unlock()
		return
	}
	f.mu.Lock()
	f.posts++
	f.mu.Unlock()
	if !strings.Contains(r.Header.Get("Accept"), "text/event-stream") || !strings.Contains(r.Header.Get("Accept"), "application/json") {
		f.problem("POST with Accept %q", r.Header.Get("Accept"))
	}
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
	}
	body, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(body, &msg)
	if msg.Method == "initialize" {
		w.Header().Set("Mcp-Session-Id", "s-1")
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"fake","version":"1"}}}`, msg.ID)
		return
	}
	if r.Header.Get("Mcp-Session-Id") != "s-1" || r.Header.Get("Mcp-Protocol-Version") != "2025-06-18" {
		f.problem("%s without the session id or protocol version", msg.Method)
	}
	switch {
	case msg.Method == "refuse":
		http.Error(w, `{"error":"invalid_token"}`, http.StatusUnauthorized)
	case msg.Method == "move":
		http.Redirect(w, r, f.elsewhere, http.StatusTemporaryRedirect)
	case len(msg.ID) == 0:
		w.WriteHeader(http.StatusAccepted)
	default:
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\ndata:  \"params\":{\"progress\":1}}\n\n")
		fmt.Fprint(w, ": a comment\n\n")
		fmt.Fprintf(w, "id: e-2\ndata: {\"jsonrpc\": \"2.0\",\r\ndata:  \"id\": %s, \"result\": {\"ok\": true}}\r\n\r\n", msg.ID)
	}
}

func TestBridge(t *testing.T) {
	e := newTestEnv(t)
	elsewhere := newRecorder(t, nil)
	srv := newFakeMCP(t, elsewhere.URL)
	in := strings.Join([]string{
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		``,
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x"}}`,
		`{"jsonrpc":"2.0","id":"three","method":"refuse"}`,
		`{"jsonrpc":"2.0","id":4,"method":"move"}`,
		`not json`,
	}, "\n") + "\n"
	var out, logs syncBuf
	err := Bridge(context.Background(), BridgeConfig{URL: srv.URL, Tokens: e.tokens, In: strings.NewReader(in), Out: &out,
		Logf: func(format string, a ...any) { fmt.Fprintf(&logs, format+"\n", a...) }})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string][]map[string]any{}
	for _, line := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("stdout holds %q, not one JSON message per line: %v", line, err)
		}
		id := fmt.Sprint(m["id"])
		if m["method"] == "notifications/progress" {
			id = "progress"
		}
		byID[id] = append(byID[id], m)
	}
	if len(byID["1"]) != 1 || byID["1"][0]["result"] == nil {
		t.Errorf("initialize: %v", byID["1"])
	}
	if len(byID["2"]) != 1 || fmt.Sprint(byID["2"][0]["result"]) != "map[ok:true]" || len(byID["progress"]) != 1 {
		t.Errorf("the streamed call: answer %v, notification %v; want one of each", byID["2"], byID["progress"])
	}
	for id, want := range map[string]string{"three": "401 Unauthorized", "4": "307 Temporary Redirect"} {
		msgs := byID[id]
		if len(msgs) != 1 || msgs[0]["error"] == nil || !strings.Contains(fmt.Sprint(msgs[0]["error"]), want) {
			t.Errorf("request %s: %v, want a JSON-RPC error saying %q", id, msgs, want)
		}
	}
	if msgs := byID["<nil>"]; len(msgs) != 1 || !strings.Contains(fmt.Sprint(msgs[0]["error"]), "not JSON") {
		t.Errorf("the line that is not JSON: %v, want one JSON-RPC error with id null", msgs)
	}
	if len(byID) != 6 {
		t.Errorf("stdout holds answers for %d ids, want 6 (the notification got none): %s", len(byID), out.String())
	}
	if n := elsewhere.hits.Load(); n != 0 {
		t.Errorf("the bridge followed a redirect to another server (%d requests): the token would go there", n)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.problems) != 0 {
		t.Errorf("the server saw: %q", srv.problems)
	}
	if srv.posts != 5 || len(srv.deleted) != 1 || srv.deleted[0] != "s-1" {
		t.Errorf("the server got %d POSTs (want 5: every message but the line that is not JSON) and DELETEs %q (want s-1 once)", srv.posts, srv.deleted)
	}
	if strings.Contains(logs.String(), testKey) || strings.Contains(out.String(), testKey) {
		t.Error("the token is in the bridge's output or logs")
	}
	if !strings.Contains(logs.String(), "not JSON") {
		t.Errorf("the line that is not JSON was not reported: %q", logs.String())
	}
}

// A server that does not answer is reported without its URL, whose query may hold a key.
func TestBridgeKeepsTheURLOutOfErrors(t *testing.T) {
	e := newTestEnv(t)
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	var out, logs syncBuf
	err := Bridge(context.Background(), BridgeConfig{URL: gone.URL + "/mcp?key=secret-q", Tokens: e.tokens, Out: &out,
		In:   strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}` + "\n"),
		Logf: func(format string, a ...any) { fmt.Fprintf(&logs, format+"\n", a...) }})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "did not answer") || !strings.Contains(logs.String(), "did not answer") {
		t.Errorf("want the failed initialize reported to the client and the log; got output %q, log %q", out.String(), logs.String())
	}
	t.Logf("reported: %s", logs.String())
	if strings.Contains(out.String()+logs.String(), "secret-q") {
		t.Errorf("the URL's query is in the output or log: output %q, log %q", out.String(), logs.String())
	}
}

// At the end of its input the bridge waits for answers in flight, within its grace, and then
// cuts them.
func TestBridgeGraceAtEndOfInput(t *testing.T) {
	e := newTestEnv(t)
	hold := make(chan struct{})
	t.Cleanup(func() { close(hold) })
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		_ = http.NewResponseController(w).Flush()
		select {
		case <-hold:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	var out syncBuf
	start := time.Now()
	err := Bridge(context.Background(), BridgeConfig{URL: srv.URL, Tokens: e.tokens, Out: &out, Grace: 300 * time.Millisecond,
		In: strings.NewReader(`{"jsonrpc":"2.0","id":7,"method":"tools/call"}` + "\n")})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the bridge took %s to end with an answer held open", d)
	}
	if out.String() != "" {
		t.Errorf("a cut-off answer produced output: %q", out.String())
	}
}

func TestReadEvents(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string // name|id|data
		err      bool
	}{
		{"one event", "data: a\n\n", []string{"||a"}, false},
		{"lines joined", "data: a\ndata:b\ndata:  c\n\n", []string{"||a\nb\n c"}, false},
		{"CRLF", "event: message\r\nid: 1\r\ndata: x\r\n\r\n", []string{"message|1|x"}, false},
		{"comments and empty events", ": hi\n\nretry: 5\n\ndata: y\n\n", []string{"||y"}, false},
		{"id carries over", "id: 5\ndata: a\n\ndata: b\n\n", []string{"|5|a", "|5|b"}, false},
		{"cut off at the end", "data: a\n\ndata: b\n", []string{"||a"}, false},
		{"byte order mark", "\uFEFFdata: a\n\n", []string{"||a"}, false},
		{"too long", "data: " + strings.Repeat("x", 100) + "\n\n", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			err := readEvents(strings.NewReader(tc.in), 64, func(ev event) error {
				got = append(got, ev.name+"|"+ev.id+"|"+string(ev.data))
				return nil
			})
			if (err != nil) != tc.err || strings.Join(got, ";") != strings.Join(tc.want, ";") {
				t.Errorf("got %q, %v; want %q (error %v)", got, err, tc.want, tc.err)
			}
		})
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
