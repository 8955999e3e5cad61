package blaxeltest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

func get(t *testing.T, s *Server, path string, headers map[string]string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest("GET", s.Base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Blaxel-Version", "2026-04-28") // as the SDKs send it: lists come as {data, meta}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("GET %s: the body is not JSON: %v", path, err)
	}
	return resp.StatusCode, body
}

func TestAPIChecksEveryCall(t *testing.T) {
	s := New(time.Minute)
	defer s.Close()
	s.AddAPIKey("bl_key_any", "")
	s.AddAPIKey("bl_key_acme", "acme")
	access, _ := s.NewSession("alice", "dc")
	s.BindSession("alice", "acme")
	unbound := s.Token("bob")
	expired := s.TokenExpiring("bob", time.Now().Add(-time.Second), time.Minute)
	// Signed with another server's key: same shape, wrong signature.
	other := New(time.Minute)
	defer other.Close()
	foreign := other.Token("alice")
	revoked := s.Token("alice")
	s.Revoke(revoked)

	cases := []struct {
		name    string
		headers map[string]string
		want    string // "" accepted, else the rejection reason
	}{
		{"session token in X-Blaxel-Authorization", map[string]string{"X-Blaxel-Authorization": "Bearer " + access, "X-Blaxel-Workspace": "acme"}, ""},
		{"session token in Authorization", map[string]string{"Authorization": "Bearer " + access, "X-Blaxel-Workspace": "acme"}, ""},
		{"unbound token, any workspace", map[string]string{"X-Blaxel-Authorization": "Bearer " + unbound, "X-Blaxel-Workspace": "zeta"}, ""},
		{"API key", map[string]string{"X-Blaxel-Authorization": "Bearer bl_key_any", "X-Blaxel-Workspace": "zeta"}, ""},
		{"bound API key, its workspace", map[string]string{"X-Blaxel-Authorization": "Bearer bl_key_acme", "X-Blaxel-Workspace": "acme"}, ""},
		{"no header", map[string]string{"X-Blaxel-Workspace": "acme"}, RejectNoToken},
		{"empty bearer", map[string]string{"X-Blaxel-Authorization": "Bearer ", "X-Blaxel-Workspace": "acme"}, RejectNoToken},
		{"empty header, as the SDK sends with no usable credential", map[string]string{"X-Blaxel-Authorization": "", "X-Blaxel-Workspace": "acme-sa"}, RejectNoToken},
		{"basic, not bearer", map[string]string{"Authorization": "Basic Zm9vOmJhcg==", "X-Blaxel-Workspace": "acme"}, RejectNoToken},
		{"unknown key", map[string]string{"X-Blaxel-Authorization": "Bearer bl_nope", "X-Blaxel-Workspace": "acme"}, RejectBadToken},
		{"foreign JWT", map[string]string{"X-Blaxel-Authorization": "Bearer " + foreign, "X-Blaxel-Workspace": "acme"}, RejectBadToken},
		{"tampered JWT", map[string]string{"X-Blaxel-Authorization": "Bearer " + tampered(access), "X-Blaxel-Workspace": "acme"}, RejectBadToken},
		{"expired JWT", map[string]string{"X-Blaxel-Authorization": "Bearer " + expired, "X-Blaxel-Workspace": "acme"}, RejectExpired},
		{"revoked JWT", map[string]string{"X-Blaxel-Authorization": "Bearer " + revoked, "X-Blaxel-Workspace": "acme"}, RejectRevoked},
		{"no workspace", map[string]string{"X-Blaxel-Authorization": "Bearer " + access}, RejectNoWorkspace},
		{"session token, other workspace", map[string]string{"X-Blaxel-Authorization": "Bearer " + access, "X-Blaxel-Workspace": "acme-sa"}, RejectWrongWorkspace},
		{"bound API key, other workspace", map[string]string{"X-Blaxel-Authorization": "Bearer bl_key_acme", "X-Blaxel-Workspace": "zeta"}, RejectWrongWorkspace},
	}
	wantOK, wantRejected := 0, map[string]int{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := get(t, s, "/models", c.headers)
			if c.want == "" {
				wantOK++
				data, _ := body["data"].([]any)
				if status != 200 || len(data) != 2 {
					t.Errorf("status %d, body %v; want 200 and two models", status, body)
				}
				return
			}
			wantRejected[c.want]++
			if status != 401 || body["error"] != c.want {
				t.Errorf("status %d, error %v; want 401 %s", status, body["error"], c.want)
			}
		})
	}
	st := s.APICalls()
	if st.OK != wantOK || st.Rejected != len(cases)-wantOK {
		t.Errorf("APICalls: %d ok, %d rejected; want %d and %d", st.OK, st.Rejected, wantOK, len(cases)-wantOK)
	}
	for r, n := range wantRejected {
		if st.Reasons[r] != n {
			t.Errorf("APICalls reason %s: %d, want %d", r, st.Reasons[r], n)
		}
	}
}

func TestAPIOtherPathsListNothing(t *testing.T) {
	s := New(time.Minute)
	defer s.Close()
	s.AddAPIKey("k", "")
	status, body := get(t, s, "/agents", map[string]string{"X-Blaxel-Authorization": "Bearer k", "X-Blaxel-Workspace": "w"})
	if data, ok := body["data"].([]any); status != 200 || !ok || len(data) != 0 {
		t.Errorf("GET /agents: %d %v; want 200 and an empty data list", status, body)
	}
	// The discovery document stays unauthenticated.
	status, body = get(t, s, "/.well-known/openid-configuration", nil)
	if status != 200 || body["token_endpoint"] != s.Base+"/oauth/token" {
		t.Errorf("discovery: %d %v", status, body)
	}
}

func postToken(t *testing.T, s *Server, ua string, body map[string]string) int {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", s.Base+"/oauth/token", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", ua)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestTokenRequestsCountedByCaller(t *testing.T) {
	s := New(time.Minute)
	defer s.Close()
	_, rt := s.NewSession("alice", "dc")
	// blauthd refreshes (rotation on: rt is now spent), then the SDK tries the spent token.
	if st := postToken(t, s, "blauthd/1.2.3", map[string]string{"grant_type": "refresh_token", "refresh_token": rt, "client_id": "blaxel", "device_code": "dc"}); st != 200 {
		t.Fatalf("daemon refresh: %d", st)
	}
	if st := postToken(t, s, "node", map[string]string{"grant_type": "refresh_token", "refresh_token": rt, "device_code": "dc"}); st != 400 {
		t.Fatalf("refresh with a spent token: %d, want 400", st)
	}
	s.SetFault(FaultReset, 1)
	_ = postTokenNoFail(s, "node")

	daemon, other := s.TokenRequests()
	if daemon != 1 || other != 2 {
		t.Errorf("TokenRequests = %d daemon, %d other; want 1 and 2", daemon, other)
	}
	if n := s.TokenFailuresBy(IsDaemon); n != 0 {
		t.Errorf("daemon failures %d, want 0", n)
	}
	if n := s.TokenFailuresBy(func(ua string) bool { return !IsDaemon(ua) }); n != 2 {
		t.Errorf("other failures %d, want 2 (a refusal and a reset)", n)
	}
	if got := strings.Join(s.TokenCallers(), ","); got != "blauthd/1.2.3,node" {
		t.Errorf("TokenCallers = %s", got)
	}
}

func postTokenNoFail(s *Server, ua string) error {
	req, _ := http.NewRequest("POST", s.Base+"/oauth/token", strings.NewReader(`{"grant_type":"client_credentials"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", ua)
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	return err
}

func TestRefreshClientID(t *testing.T) {
	cases := []struct {
		name     string
		optional bool
		body     map[string]string
		want     int
	}{
		{"blaxel", false, map[string]string{"client_id": "blaxel"}, 200},
		{"missing, required", false, map[string]string{}, 400},
		{"missing, optional (the TypeScript SDK)", true, map[string]string{}, 200},
		{"wrong, optional", true, map[string]string{"client_id": "other"}, 400},
		{"empty, optional", true, map[string]string{"client_id": ""}, 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := New(time.Minute)
			defer s.Close()
			s.SetClientIDOptional(c.optional)
			_, rt := s.NewSession("alice", "dc")
			c.body["grant_type"], c.body["refresh_token"], c.body["device_code"] = "refresh_token", rt, "dc"
			if got := postToken(t, s, "test", c.body); got != c.want {
				t.Errorf("status %d, want %d", got, c.want)
			}
		})
	}
}

// tampered changes one character of jwt's signature. Not its last: with 32 bytes in 43 base64
// characters the last one carries two padding bits a decoder ignores, so changing it alone can
// leave the signature as it was.
func tampered(jwt string) string {
	i := len(jwt) - 3
	c := byte('A')
	if jwt[i] == 'A' {
		c = 'B'
	}
	return jwt[:i] + string(c) + jwt[i+1:]
}
