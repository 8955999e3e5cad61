package blaxeltest

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

// A request that names no API version (curl, urllib, a script) gets a bare JSON list, as from
// Blaxel's API: only Blaxel-Version 2026-04-28, which the SDKs send, wraps it in {data, meta}.
func TestAPIListShapeFollowsTheVersion(t *testing.T) {
	s := New(time.Minute)
	defer s.Close()
	s.AddAPIKey("k", "")
	req, err := http.NewRequest("GET", s.Base+"/models", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Blaxel-Authorization", "Bearer k")
	req.Header.Set("X-Blaxel-Workspace", "w")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list []map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || resp.StatusCode != 200 || len(list) != 2 {
		t.Fatalf("GET /models without Blaxel-Version: %d %v %v; want 200 and a list of two models", resp.StatusCode, list, err)
	}
	if status, body := get(t, s, "/models", map[string]string{"X-Blaxel-Authorization": "Bearer k", "X-Blaxel-Workspace": "w"}); status != 200 || body["meta"] == nil {
		t.Errorf("GET /models with Blaxel-Version: %d %v; want {data, meta}", status, body)
	}
}
