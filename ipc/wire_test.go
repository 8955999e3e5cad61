package ipc

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func read(s string) (*Message, error) { return ReadMessage(bufio.NewReader(strings.NewReader(s))) }

func TestReadMessage(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Field
		wantErr error
	}{
		{"simple", "action=get\nworkspace=acme\n\n", []Field{{"action", "get"}, {"workspace", "acme"}}, nil},
		{"empty value and equals in value", "a=\nb=x=y\n\n", []Field{{"a", ""}, {"b", "x=y"}}, nil},
		{"repeated keys kept in order", "capability[]=a\ncapability[]=b\n\n", []Field{{"capability[]", "a"}, {"capability[]", "b"}}, nil},
		{"empty message", "\n", nil, nil},
		{"clean end before a message", "", nil, io.EOF},
		{"end inside a message", "action=get\n", nil, io.ErrUnexpectedEOF},
		{"end inside a line", "action=ge", nil, io.ErrUnexpectedEOF},
		{"no equals", "action\n\n", nil, ErrMalformed},
		{"empty key", "=x\n\n", nil, ErrMalformed},
		{"space in key", "a b=x\n\n", nil, ErrMalformed},
		{"CR in value", "a=x\r\n\n", nil, ErrMalformed},
		{"NUL in value", "a=x\x00y\n\n", nil, ErrMalformed},
		{"line too long", "a=" + strings.Repeat("x", MaxLineSize) + "\n\n", nil, ErrTooLarge},
		{"too many fields", strings.Repeat("a=b\n", MaxFields+1) + "\n", nil, ErrTooLarge},
		{"message too large", strings.Repeat("k="+strings.Repeat("v", 1000)+"\n", 70) + "\n", nil, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := read(tt.in)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if len(m.Fields) != len(tt.want) {
				t.Fatalf("got %v, want %v", m.Fields, tt.want)
			}
			for i := range tt.want {
				if m.Fields[i] != tt.want[i] {
					t.Fatalf("field %d = %v, want %v", i, m.Fields[i], tt.want[i])
				}
			}
		})
	}
}

func TestSeveralMessagesOnOneStream(t *testing.T) {
	r := bufio.NewReader(strings.NewReader("action=get\n\naction=ping\n\n"))
	for _, want := range []string{"get", "ping"} {
		m, err := ReadMessage(r)
		if err != nil || m.Value("action") != want {
			t.Fatalf("got %v, %v; want action=%s", m, err, want)
		}
	}
	if _, err := ReadMessage(r); err != io.EOF {
		t.Fatalf("after the last message: %v, want io.EOF", err)
	}
}

func TestEncodeRefusesWhatThePeerWouldMisread(t *testing.T) {
	for _, m := range []*Message{
		NewMessage("token", "abc\ndef"),
		NewMessage("token", "abc\rdef"),
		NewMessage("token", "abc\x00"),
		NewMessage("bad key", "v"),
		NewMessage("", "v"),
	} {
		if _, err := m.Encode(); !errors.Is(err, ErrMalformed) {
			t.Fatalf("Encode(%q) = %v, want ErrMalformed", m.Fields, err)
		}
	}
	// The error must not quote the (secret) value.
	_, err := NewMessage("token", "s3cret\nx").Encode()
	if strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error %q quotes the value", err)
	}
}

func TestEncodeReadRoundTrip(t *testing.T) {
	m := NewMessage("version", "1", "action", "get", "env.BL_API_KEY", "k=v with spaces", "empty", "")
	m.Set("action", "status")
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadMessage(bufio.NewReader(bytes.NewReader(b)))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Fields) != 4 || got.Value("action") != "status" || got.Value("env.BL_API_KEY") != "k=v with spaces" {
		t.Fatalf("round trip gave %v", got.Fields)
	}
}

func TestErrorMessageIsOneLine(t *testing.T) {
	m := ErrorMessage(&Error{Code: CodeInternal, Message: "a\nb\rc", Hint: "x\ny"})
	if _, err := m.Encode(); err != nil {
		t.Fatalf("error answer with line breaks in its text cannot be sent: %v", err)
	}
	err := AsError(m)
	if ErrorCode(err) != CodeInternal || err.Error() != "a b c" {
		t.Fatalf("got %v (%q)", err, ErrorCode(err))
	}
}

func TestCallerEnvSendsOnlyBLVariables(t *testing.T) {
	fs, err := CallerEnv([]string{"HOME=/h", "BL_WORKSPACE=w", "BL_API_KEY=k", "BLX=1", "PATH=/bin"})
	if err != nil || len(fs) != 2 || fs[0] != (Field{"env.BL_API_KEY", "k"}) || fs[1] != (Field{"env.BL_WORKSPACE", "w"}) {
		t.Fatalf("CallerEnv = %v, %v", fs, err)
	}
	for in, want := range map[string]string{
		"BL_BAD=secret\nmore": "BL_BAD holds a line break",
		"BL_CRLF=secret\r":    "BL_CRLF holds a trailing carriage return",
		"BL_NUL=a\x00b":       "BL_NUL holds a NUL byte",
	} {
		_, err := CallerEnv([]string{"BL_WORKSPACE=w", in})
		if err == nil || err.Error() != want || strings.Contains(err.Error(), "secret") {
			t.Errorf("CallerEnv(%q) = %v, want %q", in, err, want)
		}
	}
}

func FuzzReadMessage(f *testing.F) {
	for _, s := range []string{"action=get\n\n", "a=b\nc=d\n\n\n", "", "=\n\n", "a=\x00\n\n", strings.Repeat("x", 5000) + "\n", "k=v\r\n\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		for i := 0; i < 100; i++ {
			m, err := ReadMessage(r)
			if err != nil {
				return
			}
			if len(m.Fields) > MaxFields {
				t.Fatalf("%d fields accepted", len(m.Fields))
			}
			// Whatever was accepted can be sent back unchanged.
			b, err := m.Encode()
			if err != nil {
				t.Fatalf("accepted message does not encode: %v", err)
			}
			again, err := ReadMessage(bufio.NewReader(bytes.NewReader(b)))
			if err != nil || len(again.Fields) != len(m.Fields) {
				t.Fatalf("re-read of an accepted message: %v", err)
			}
			for j := range m.Fields {
				if again.Fields[j] != m.Fields[j] {
					t.Fatalf("field %d changed: %q -> %q", j, m.Fields[j], again.Fields[j])
				}
			}
		}
	})
}
