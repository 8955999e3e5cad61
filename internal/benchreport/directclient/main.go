// Command directclient is what a client does without blauthd: it exchanges
// $BL_CLIENT_CREDENTIALS at $BL_API_URL/oauth/token itself (Blaxel's JSON dialect, Basic
// authentication) and prints the access token. benchreport runs N of them at once to count
// the token requests N processes make on their own, and times it as a stand-in for `bl token`,
// which calls the API on every run.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	base := strings.TrimRight(os.Getenv("BL_API_URL"), "/")
	cc := os.Getenv("BL_CLIENT_CREDENTIALS")
	if base == "" || cc == "" {
		fail("BL_API_URL and BL_CLIENT_CREDENTIALS must be set")
	}
	req, err := http.NewRequest(http.MethodPost, base+"/oauth/token", bytes.NewReader([]byte(`{"grant_type":"client_credentials"}`)))
	if err != nil {
		fail(err.Error())
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Basic "+cc)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		fail(err.Error())
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		fail(err.Error())
	}
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &tr) != nil || tr.AccessToken == "" {
		fail(fmt.Sprintf("token endpoint answered HTTP %d without a token", resp.StatusCode))
	}
	fmt.Println(tr.AccessToken)
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "directclient: "+msg)
	os.Exit(1)
}
