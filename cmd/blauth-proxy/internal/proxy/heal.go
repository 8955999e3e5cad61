package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/blauth/blauth/ipc"
)

// The heal of a refused token: a 401 from upstream makes the proxy and the MCP bridge ask
// blauthd to drop the token they sent (erase), wait for a new one, and send the request once
// more with it (retryRefused). blauthd does the rest: it drops only a token equal to the one
// named, and brings an exchange forward at most once per refresh period, so an upstream that
// refuses every token costs one extra exchange per period, not one per request.
const (
	// maxRetryBody is the largest request body the proxy holds so as to send it again after a
	// 401; a longer one, or one of unknown length, is sent as it comes and never retried.
	maxRetryBody = 1 << 20
	// healWait bounds the wait for a new token after blauthd dropped the refused one (one
	// exchange); healQuick after it kept it: it holds a newer one already, which the watch
	// brings at once, or it brought one forward in this refresh period already.
	healWait  = 5 * time.Second
	healQuick = time.Second
	// eraseTimeout bounds the erase request to blauthd.
	eraseTimeout = 2 * time.Second
)

// healing is the one erase of a refused token, shared by every request refused with it.
type healing struct {
	token string
	done  chan struct{} // closed once blauthd has answered the erase (or could not)
	until time.Time     // set before done is closed: how long a request waits for a new token
}

// refuse tells blauthd that the upstream refused cred's token: once per token value, however
// many requests were refused with it, whether at once or later. It returns that erase; its done
// is closed when blauthd has answered.
func (t *Tokens) refuse(ctx context.Context, cred Credential) *healing {
	t.mu.Lock()
	h := t.healing
	first := h == nil || h.token != cred.Token
	if first {
		h = &healing{token: cred.Token, done: make(chan struct{})}
		t.healing = h
	}
	t.mu.Unlock()
	if first {
		wait := t.erase(ctx, cred)
		h.until = time.Now().Add(wait)
		close(h.done)
		if wait == 0 { // blauthd did not answer: the next 401 asks again
			t.mu.Lock()
			if t.healing == h {
				t.healing = nil
			}
			t.mu.Unlock()
		}
	}
	return h
}

// erase asks blauthd to drop cred's token, within eraseTimeout and ctx's deadline, and returns
// how long to wait for a new one: 0 when blauthd could not be asked.
func (t *Tokens) erase(ctx context.Context, cred Credential) time.Duration {
	timeout := eraseTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if timeout <= 0 {
		return 0
	}
	refused := "the upstream refused the token of workspace " + cred.Workspace + " (401); "
	req, err := ipc.Caller{Workspace: cred.Workspace, Dir: t.sel.Dir, Environ: t.sel.Environ}.Request(ipc.ActionErase)
	var c *ipc.Client
	if err == nil {
		req.Add(ipc.KeyToken, cred.Token)
		c, err = ipc.Dial(t.sel.Socket, timeout)
	}
	if err != nil {
		t.logf("%scannot ask blauthd for another: %v", refused, err)
		return 0
	}
	defer c.Close()
	resp, err := c.Do(req)
	switch {
	case err != nil:
		t.logf("%sblauthd did not drop it: %v", refused, err)
		return 0
	case resp.Value(ipc.KeyDropped) != "true":
		t.logf("%sblauthd kept it (it holds a newer one, or already replaced one in this refresh period)", refused)
		return healQuick
	}
	t.logf("%sblauthd dropped it, waiting for a new one", refused)
	return healWait
}

// Heal is called when the upstream refused cred (a 401): unless a newer token came meanwhile, it
// erases cred's token (refuse) and waits, within the erase's bound and ctx, for a usable token
// other than that one. It returns false when none came, or when cred's token does not expire
// (an API key: blauthd has nothing to exchange for it).
func (t *Tokens) Heal(ctx context.Context, cred Credential) (Credential, bool) {
	if cred.Expiry.IsZero() {
		return Credential{}, false
	}
	if c, _, _ := t.replacement(cred.Token); c != nil {
		return *c, true
	}
	h := t.refuse(ctx, cred)
	select {
	case <-h.done: // the erase of another request refused with it, maybe
	case <-ctx.Done():
		return Credential{}, false
	}
	ctx, cancel := context.WithDeadline(ctx, h.until)
	defer cancel()
	for {
		c, over, changed := t.replacement(cred.Token)
		switch {
		case c != nil:
			return *c, true
		case over:
			return Credential{}, false
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return Credential{}, false
		}
	}
}

// replacement returns the latest token if it is usable and not old; else whether no token will
// come (blauthd answered an error, or the watch gave up), and the channel closed at the next
// change.
func (t *Tokens) replacement(old string) (c *Credential, over bool, changed chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur := t.cred; cur != nil && cur.Token != old && (cur.Expiry.IsZero() || time.Until(cur.Expiry) > t.guard) {
		return cur, false, nil
	}
	return nil, t.fatal != nil || t.answerErr != nil, t.changed
}

// retryRefused heals one request: when resp, the answer to req sent with *cred, is a 401 and
// req's body can be sent again (none, or GetBody), it waits for a new token (Heal) and sends
// req once more, with the token in the credential header forms, through send; *cred becomes
// the new credential. Otherwise, and when no new token came (for another workspace or API
// base: not sent there), resp is returned as it is. A 401 that cannot be retried still erases
// the token, so that the next request gets a new one. Only a request refused with the first
// token is retried: the second answer goes back as it is.
func retryRefused(t *Tokens, cred *Credential, forms credForms, req *http.Request, resp *http.Response,
	send func(*http.Request) (*http.Response, error)) (*http.Response, error) {
	if resp.StatusCode != http.StatusUnauthorized || cred.Expiry.IsZero() {
		return resp, nil
	}
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		if c, _, _ := t.replacement(cred.Token); c == nil {
			t.refuse(req.Context(), *cred)
		}
		return resp, nil
	}
	fresh, ok := t.Heal(req.Context(), *cred)
	if !ok || fresh.Workspace != cred.Workspace || fresh.APIURL != cred.APIURL {
		return resp, nil
	}
	again := req.Clone(req.Context())
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return resp, nil
		}
		again.Body = body
	}
	setCred(again.Header, forms, fresh)
	*cred = fresh
	// The refused answer is read a little so that its connection can carry the retry.
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
	resp.Body.Close()
	return send(again)
}

// holdBody makes req's body one that can be sent again (GetBody) when its length is known and
// at most maxRetryBody: it reads it whole. Any other body is left as it is.
func holdBody(req *http.Request) error {
	if req.Body == nil || req.Body == http.NoBody || req.GetBody != nil || req.ContentLength <= 0 || req.ContentLength > maxRetryBody {
		return nil
	}
	buf := make([]byte, req.ContentLength)
	_, err := io.ReadFull(req.Body, buf)
	req.Body.Close()
	if err != nil {
		return fmt.Errorf("reading the request's body: %w", err)
	}
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	req.Body, _ = req.GetBody()
	return nil
}

// setCred puts cred's token in each of the credential header forms, removes the other forms
// (a request's secret never goes upstream), and names its workspace.
func setCred(h http.Header, forms credForms, cred Credential) {
	for i, name := range credHeaders {
		if forms&(1<<i) != 0 {
			h.Set(name, cred.Bearer())
		} else {
			h.Del(name)
		}
	}
	h.Set("X-Blaxel-Workspace", cred.Workspace)
}
