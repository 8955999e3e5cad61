package proxy

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// sandboxList is a list answer of n sandboxes shaped as the API's (about 600 bytes each).
func sandboxList(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"data":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"metadata":{"name":"sbx-%d","workspace":"acme","displayName":"sbx-%d","createdAt":"2026-12-07T10:00:00Z","updatedAt":"2026-12-07T10:00:00Z","createdBy":"user-acme","labels":{"team":"data"},"url":"https://sbx-%d-0a1b2c3d.us-pdx-1.bl.run"},`+
			`"spec":{"region":"us-pdx-1","runtime":{"image":"blaxel/base-image:latest","memory":4096,"generation":"mk3","ports":[{"name":"web","target":3000,"protocol":"HTTP"}]},"lifecycle":{"expirationPolicies":[{"type":"ttl-idle","value":"1h","action":"delete"}]}},`+
			`"status":"DEPLOYED","lastUsedAt":"2026-12-07T10:05:00Z","expiresIn":3600}`, i, i, i)
	}
	b.WriteString(`],"meta":{"hasMore":false,"total":1000}}`)
	return []byte(b.String())
}

// BenchmarkRewriteSandboxList is the proxy's rewrite of a 1,000-sandbox list answer; its
// reference, BenchmarkDecodeSandboxList, is one decoding of the same answer into generic JSON,
// as any client (the SDK's JSON.parse) does once on receipt.
func BenchmarkRewriteSandboxList(b *testing.B) {
	body := sandboxList(1000)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, changed := rewriteValue(body, metadataURL, "http://127.0.0.1:40000", true); !changed {
			b.Fatal("not rewritten")
		}
	}
}

func BenchmarkDecodeSandboxList(b *testing.B) {
	body := sandboxList(1000)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			b.Fatal(err)
		}
	}
}
