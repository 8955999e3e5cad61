package ipc

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// The request every client builds carries the caller faithfully, or is refused with a
// *RequestError naming what cannot be sent (never its value), and nothing is dropped.
func TestCallerRequest(t *testing.T) {
	m, err := Caller{Workspace: "acme", Dir: "/home/me/proj", Environ: []string{"HOME=/home/me", "BL_WORKSPACE=acme", "BL_API_KEY=k"},
		MinTTL: 1500 * time.Millisecond}.Request(ActionWatch)
	if err != nil {
		t.Fatal(err)
	}
	want := "version=2 action=watch workspace=acme cwd=/home/me/proj env.BL_API_KEY=k env.BL_WORKSPACE=acme min_ttl=2"
	var got []string
	for _, f := range m.Fields {
		got = append(got, f.Key+"="+f.Value)
	}
	if strings.Join(got, " ") != want {
		t.Errorf("request %q, want %q", strings.Join(got, " "), want)
	}
	if m, err := (Caller{}).Request(ActionGet); err != nil || len(m.Fields) != 2 {
		t.Errorf("the default caller: %v, %v; want version and action only", m, err)
	}
	for _, tc := range []struct {
		name   string
		c      Caller
		says   string
		secret string
	}{
		{"workspace with a line break", Caller{Workspace: "acme\naction=status"}, "workspace name holds a line break", ""},
		{"directory with a line break", Caller{Dir: "/a\nb"}, "holds a line break", ""},
		{"directory over MaxCwd", Caller{Dir: "/" + strings.Repeat("d", MaxCwd)}, "over the 4096 blauthd accepts", ""},
		{"relative directory", Caller{Dir: "proj"}, "relative", ""},
		{"variable with a line break", Caller{Environ: []string{"BL_API_KEY=sec\nret"}}, "BL_API_KEY holds a line break", "sec"},
		{"CRLF file", Caller{Environ: []string{"BL_API_KEY=secret\r"}}, "CRLF line ends", "secret"},
		{"negative MinTTL", Caller{MinTTL: -time.Second}, "must not be negative", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.c.Request(ActionGet)
			var re *RequestError
			if !errors.As(err, &re) || !strings.Contains(re.Message, tc.says) {
				t.Fatalf("Request: %v, want a RequestError saying %q", err, tc.says)
			}
			if tc.secret != "" && strings.Contains(re.Message+re.Hint, tc.secret) {
				t.Errorf("the error quotes the value: %q %q", re.Message, re.Hint)
			}
		})
	}
}
