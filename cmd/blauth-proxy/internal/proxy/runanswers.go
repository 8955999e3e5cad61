package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/blauth/blauth/ipc"
)

// The TypeScript SDK calls a sandbox at the URL the API names in its answer (metadata.url), not
// under BL_RUN_URL, and a program fetches a preview at its spec.url: the proxy writes those
// URLs, in the API's answers about sandboxes, as its own /host route to the same host, so that
// the SDK calls the proxy without a setting of its own (docs/IDE.md, "Sandboxes and previews").

// answerFields are the URLs of an API answer that the proxy rewrites.
type answerFields uint8

const (
	metadataURL answerFields = 1 << iota // metadata.url: a sandbox's own host
	specURL                              // spec.url: a preview's host
)

// maxAnswerBytes bounds an answer about sandboxes that the proxy reads to rewrite: a longer one
// is answered 502, not passed on with URLs that go around the proxy.
const maxAnswerBytes = 8 << 20

// errAnswerTooLong is the error of an answer over maxAnswerBytes.
var errAnswerTooLong = errors.New("the API's answer about sandboxes is over 8 MiB, more than blauth-proxy reads to point its URLs at the proxy")

// runURLFields are the fields rewritten in the answer to a request at rest (decoded, under the
// API base): every answer under /sandboxes names sandboxes by metadata.url, and those under
// /sandboxes/NAME/previews also previews by spec.url. Any other answer streams untouched.
func runURLFields(rest string) answerFields {
	segs := strings.Split(strings.Trim(rest, "/"), "/")
	if segs[0] != "sandboxes" {
		return 0
	}
	if len(segs) >= 3 && segs[2] == "previews" && len(segs) <= 4 {
		return metadataURL | specURL
	}
	return metadataURL
}

// rewriteAnswer rewrites the run URLs of a JSON answer of 2xx, read whole up to maxAnswerBytes,
// to the proxy's /host route on the listener the request came in on. An answer of another
// status or type, or encoded (the transport decodes the gzip it asked for), streams as it is.
func rewriteAnswer(resp *http.Response, fields answerFields) error {
	local, _ := resp.Request.Context().Value(http.LocalAddrContextKey).(net.Addr)
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if local == nil || resp.StatusCode/100 != 2 || resp.StatusCode == http.StatusNoContent || resp.Request.Method == http.MethodHead ||
		mt != "application/json" || resp.Header.Get("Content-Encoding") != "" {
		return nil
	}
	if resp.ContentLength > maxAnswerBytes {
		return errAnswerTooLong
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	resp.Body.Close()
	if err != nil {
		return err
	}
	if len(body) > maxAnswerBytes {
		return errAnswerTooLong
	}
	out, changed := rewriteValue(body, fields, "http://"+local.String(), true)
	if !changed {
		resp.Body = io.NopCloser(bytes.NewReader(body)) // the same bytes: the same headers
		return nil
	}
	resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(out)), int64(len(out))
	resp.Header.Set("Content-Length", strconv.Itoa(len(out)))
	resp.Header.Del("Etag")
	return nil
}

// rewriteValue rewrites the fields in raw: a resource, a list of them, or (at the top) a list
// wrapped in {data, …} (API version 2026-04-28); nothing deeper. Values other than the URLs
// are kept as sent (keys in sorted order); raw that is not such JSON is left alone.
func rewriteValue(raw json.RawMessage, fields answerFields, proxy string, top bool) (json.RawMessage, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '{' {
		return rewriteObject(raw, fields, proxy, top)
	}
	var items []json.RawMessage
	if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &items) != nil {
		return raw, false
	}
	changed := false
	for i, it := range items {
		var c bool
		if items[i], c = rewriteObject(bytes.TrimSpace(it), fields, proxy, false); c {
			changed = true
		}
	}
	if changed {
		return marshalRaw(items), true
	}
	return raw, false
}

// rewriteObject rewrites one resource, or at the top the list in its data.
func rewriteObject(raw json.RawMessage, fields answerFields, proxy string, top bool) (json.RawMessage, bool) {
	var obj map[string]json.RawMessage
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &obj) != nil {
		return raw, false
	}
	changed := false
	if data, ok := obj["data"]; ok && top && bytes.HasPrefix(bytes.TrimSpace(data), []byte("[")) {
		var c bool
		if obj["data"], c = rewriteValue(data, fields, proxy, false); c {
			changed = true
		}
	}
	for _, f := range []struct {
		bit  answerFields
		name string
	}{{metadataURL, "metadata"}, {specURL, "spec"}} {
		if fields&f.bit != 0 && rewriteURLIn(obj, f.name, proxy) {
			changed = true
		}
	}
	if changed {
		return marshalRaw(obj), true
	}
	return raw, false
}

// rewriteURLIn rewrites obj[name].url when it is a run URL.
func rewriteURLIn(obj map[string]json.RawMessage, name, proxy string) bool {
	var inner map[string]json.RawMessage
	if json.Unmarshal(obj[name], &inner) != nil || inner == nil {
		return false
	}
	var u string
	if json.Unmarshal(inner["url"], &u) != nil {
		return false
	}
	nu, ok := proxiedURL(u, proxy)
	if !ok {
		return false
	}
	inner["url"] = marshalRaw(nu)
	obj[name] = marshalRaw(inner)
	return true
}

// proxiedURL is the proxy's /host route to the absolute http(s) URL raw: same host (in lower
// case), path and query. A URL with user info, or a host that is not a plain host[:port], is
// not rewritten: the proxy would refuse its route anyway.
func proxiedURL(raw, proxy string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.User != nil || u.Opaque != "" || u.Host == "" {
		return "", false
	}
	host := strings.ToLower(u.Host)
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	}
	if !ipc.ValidHostname(name) || strings.ContainsAny(host, "[]%@") {
		return "", false
	}
	out := proxy + HostPrefix + "/" + host + u.EscapedPath()
	if u.RawQuery != "" {
		out += "?" + u.RawQuery
	}
	return out, true
}

// marshalRaw encodes v without escaping HTML characters, as the API sends them. It cannot fail:
// v is a string, or raw values that json.Unmarshal read or marshalRaw wrote (valid JSON), held
// in a slice or a map of string keys, encoded into a bytes.Buffer.
func marshalRaw(v any) json.RawMessage {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return bytes.TrimRight(b.Bytes(), "\n")
}
