package ipc

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
	"time"
)

// benchJWT is shaped like a Blaxel access token (header.payload.signature, ~330 bytes), so that
// the answers benchmarked here have the size the daemon really sends.
var benchJWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + strings.Repeat("eyJzdWIiOiJzYTpiZW5jaCJ9", 9) + "." + strings.Repeat("c2lnbmF0dXJl", 4)

// benchRequest is what blauth-helper sends for `token`: version, action, its directory and
// its BL_* variables.
func benchRequest() *Message {
	m := NewMessage(KeyVersion, Version, KeyAction, ActionGet, KeyDir, "/home/user/src/project")
	env, _ := CallerEnv([]string{
		"PATH=/usr/bin", "BL_WORKSPACE=acme-prod", "BL_CLIENT_CREDENTIALS=Y2xpZW50LWlkOmNsaWVudC1zZWNyZXQ=",
	})
	m.Fields = append(m.Fields, env...)
	return m
}

func benchAnswer() *Message {
	t := Token{Workspace: "acme-prod", Token: benchJWT, Kind: KindClientCredentials,
		Source: "caller_env:BL_CLIENT_CREDENTIALS", Expiry: time.Unix(1_900_007_200, 0)}
	return t.Message()
}

func BenchmarkEncodeGetRequest(b *testing.B) {
	m := benchRequest()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Encode(); err != nil {
			b.Fatal(err)
		}
	}
}

// benchDecode reads one message from wire per iteration, resetting the readers rather than
// allocating new ones, as a daemon connection reuses its bufio.Reader.
func benchDecode(b *testing.B, wire []byte, check func(*Message) error) {
	b.Helper()
	src := bytes.NewReader(wire)
	r := bufio.NewReaderSize(src, 4096)
	b.SetBytes(int64(len(wire)))
	b.ReportAllocs()
	for b.Loop() {
		src.Reset(wire)
		r.Reset(src)
		m, err := ReadMessage(r)
		if err != nil {
			b.Fatal(err)
		}
		if err := check(m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeGetRequest(b *testing.B) {
	wire, err := benchRequest().Encode()
	if err != nil {
		b.Fatal(err)
	}
	benchDecode(b, wire, func(m *Message) error {
		if m.Value(KeyAction) != ActionGet {
			b.Fatalf("decoded action %q", m.Value(KeyAction))
		}
		return nil
	})
}

// BenchmarkEncodeAnswer builds the get answer from a token and encodes it, as the daemon does
// for every request.
func BenchmarkEncodeAnswer(b *testing.B) {
	t := Token{Workspace: "acme-prod", Token: benchJWT, Kind: KindClientCredentials,
		Source: "caller_env:BL_CLIENT_CREDENTIALS", Expiry: time.Unix(1_900_007_200, 0)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := t.Message().Encode(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeAnswer reads a get answer and parses it into a Token, as the helper does.
func BenchmarkDecodeAnswer(b *testing.B) {
	wire, err := benchAnswer().Encode()
	if err != nil {
		b.Fatal(err)
	}
	benchDecode(b, wire, func(m *Message) error {
		t, err := ParseToken(m)
		if err == nil && t.Token != benchJWT {
			b.Fatal("decoded a different token")
		}
		return err
	})
}
