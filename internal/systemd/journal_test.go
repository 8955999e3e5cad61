package systemd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// listenJournal creates a unixgram socket standing in for journald's.
func listenJournal(t *testing.T) (*net.UnixConn, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "journal.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen on the journal socket: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, path
}

// readEntry reads one datagram and decodes the native protocol the way
// journald does, failing the test on anything journald would refuse.
func readEntry(t *testing.T, conn *net.UnixConn) map[string]string {
	t.Helper()
	buf := make([]byte, 1<<20)
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no journal entry arrived: %v", err)
	}
	fields, err := parseNative(buf[:n])
	if err != nil {
		t.Fatalf("the entry is not valid native protocol: %v\n%q", err, buf[:n])
	}
	return fields
}

func parseNative(p []byte) (map[string]string, error) {
	fields := map[string]string{}
	for len(p) > 0 {
		nl := bytes.IndexByte(p, '\n')
		if nl < 0 {
			return nil, errors.New("a field does not end with a newline")
		}
		line := p[:nl]
		var name, value string
		if eq := bytes.IndexByte(line, '='); eq >= 0 {
			name, value = string(line[:eq]), string(line[eq+1:])
			p = p[nl+1:]
		} else {
			name = string(line)
			p = p[nl+1:]
			if len(p) < 8 {
				return nil, fmt.Errorf("field %s: no length", name)
			}
			size := binary.LittleEndian.Uint64(p[:8])
			p = p[8:]
			if uint64(len(p)) < size+1 || p[size] != '\n' {
				return nil, fmt.Errorf("field %s: length %d does not match the data", name, size)
			}
			value = string(p[:size])
			p = p[size+1:]
		}
		if !validJournalName(name) {
			return nil, fmt.Errorf("journald would drop the field name %q", name)
		}
		if _, dup := fields[name]; dup {
			return nil, fmt.Errorf("field %s appears twice", name)
		}
		fields[name] = value
	}
	return fields, nil
}

// validJournalName is journald's rule for names a client may send.
func validJournalName(s string) bool {
	if s == "" || len(s) > 64 || s[0] == '_' || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for _, r := range s {
		if !(r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

func TestJournalWriterSendsOneFieldPerEventField(t *testing.T) {
	conn, path := listenJournal(t)
	w := &JournalWriter{Socket: path, Identifier: "blauthd"}
	defer w.Close()
	log := zerolog.New(w).With().Timestamp().Str("component", "broker").Logger()
	log.Warn().Str("workspace", "acme prod").Int("attempt", 3).Bool("permanent", false).
		Dur("retry_in", 1500*time.Millisecond).Err(errors.New("token endpoint: HTTP 503")).
		Str("detail", "line one\nline two").Str("priority", "not ours").Str("user-code", "ABCD-1234").
		Str("9lives", "x").Interface("scopes", []string{"a", "b"}).
		Msg("refresh failed; retrying")

	got := readEntry(t, conn)
	want := map[string]string{
		"PRIORITY":          "4",
		"SYSLOG_IDENTIFIER": "blauthd",
		"COMPONENT":         "broker",
		"WORKSPACE":         "acme prod",
		"ATTEMPT":           "3",
		"PERMANENT":         "false",
		"RETRY_IN":          "1500",
		"ERROR":             "token endpoint: HTTP 503",
		"DETAIL":            "line one\nline two",
		"F_PRIORITY":        "not ours",
		"USER_CODE":         "ABCD-1234",
		"F_9LIVES":          "x",
		"SCOPES":            `["a","b"]`,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if _, ok := got["TIME"]; ok {
		t.Errorf("TIME sent; the journal stamps entries itself")
	}
	if _, ok := got["LEVEL"]; ok {
		t.Errorf("LEVEL sent beside PRIORITY")
	}
	wantMsg := `refresh failed; retrying component=broker workspace="acme prod" attempt=3 permanent=false retry_in=1500 ` +
		`error="token endpoint: HTTP 503" detail="line one\nline two" priority="not ours" user-code=ABCD-1234 9lives=x scopes=["a","b"]`
	if got["MESSAGE"] != wantMsg {
		t.Errorf("MESSAGE = %q\nwant      %q", got["MESSAGE"], wantMsg)
	}
	if len(got) != len(want)+1 {
		t.Errorf("got %d fields, want %d: %v", len(got), len(want)+1, got)
	}
}

func TestJournalWriterPriorities(t *testing.T) {
	conn, path := listenJournal(t)
	w := &JournalWriter{Socket: path}
	defer w.Close()
	log := zerolog.New(w).Level(zerolog.TraceLevel)
	tests := []struct {
		name  string
		event *zerolog.Event
		want  string
	}{
		{"trace", log.Trace(), "7"},
		{"debug", log.Debug(), "7"},
		{"info", log.Info(), "6"},
		{"warn", log.Warn(), "4"},
		{"error", log.Error(), "3"},
		{"no level", log.Log(), "6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.event.Msg("m")
			got := readEntry(t, conn)
			if got["PRIORITY"] != tt.want {
				t.Errorf("PRIORITY = %q, want %q", got["PRIORITY"], tt.want)
			}
			if _, ok := got["SYSLOG_IDENTIFIER"]; ok {
				t.Errorf("SYSLOG_IDENTIFIER sent without an Identifier")
			}
		})
	}
}

func TestJournalWriterEventsThatAreNotObjects(t *testing.T) {
	conn, path := listenJournal(t)
	w := &JournalWriter{Socket: path}
	defer w.Close()
	for _, tt := range []struct{ in, want string }{
		{"plain text\n", "plain text"},
		{`{"level":"info","workspace":"w"}` + "\n", `{"level":"info","workspace":"w"}`},
		{`{"broken":` + "\n", `{"broken":`},
	} {
		if n, err := w.Write([]byte(tt.in)); n != len(tt.in) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", tt.in, n, err)
		}
		got := readEntry(t, conn)
		if got["MESSAGE"] != tt.want {
			t.Errorf("Write(%q): MESSAGE = %q, want %q", tt.in, got["MESSAGE"], tt.want)
		}
	}
}

func TestJournalWriterFallsBackWithoutJournal(t *testing.T) {
	var fb bytes.Buffer
	w := &JournalWriter{Socket: filepath.Join(t.TempDir(), "absent.sock"), Fallback: &fb}
	event := `{"level":"error","message":"cannot run"}` + "\n"
	n, err := w.Write([]byte(event))
	if n != len(event) || err != nil {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(event))
	}
	if fb.String() != event {
		t.Errorf("fallback got %q, want the event as it came, %q", fb.String(), event)
	}
	// No fallback: the event is dropped, and the logger is not told to stop.
	w = &JournalWriter{Socket: filepath.Join(t.TempDir(), "absent.sock")}
	if n, err := w.Write([]byte(event)); n != len(event) || err != nil {
		t.Errorf("Write without a fallback = %d, %v; want %d, nil", n, err, len(event))
	}
}

func TestJournalWriterReconnectsAfterJournaldRestarts(t *testing.T) {
	conn, path := listenJournal(t)
	var fb bytes.Buffer
	w := &JournalWriter{Socket: path, Fallback: &fb}
	defer w.Close()
	w.Write([]byte(`{"message":"first"}`))
	if got := readEntry(t, conn); got["MESSAGE"] != "first" {
		t.Fatalf("MESSAGE = %q", got["MESSAGE"])
	}
	// journald goes away and comes back with a new socket at the same path.
	conn.Close()
	os.Remove(path)
	conn2, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	w.Write([]byte(`{"message":"second"}`))
	if got := readEntry(t, conn2); got["MESSAGE"] != "second" {
		t.Errorf("after the restart: MESSAGE = %q", got["MESSAGE"])
	}
	if fb.Len() != 0 {
		t.Errorf("the fallback was used: %q", fb.String())
	}
}

func TestJournalWriterCutsAnEntryTooLargeForADatagram(t *testing.T) {
	conn, path := listenJournal(t)
	var fb bytes.Buffer
	w := &JournalWriter{Socket: path, Fallback: &fb}
	defer w.Close()
	huge := strings.Repeat("é", 400_000) // 800 KB, over any default send buffer
	log := zerolog.New(w)
	log.Info().Str("blob", huge).Str("workspace", "w").Msg("big")
	got := readEntry(t, conn)
	if got["WORKSPACE"] != "w" {
		t.Errorf("WORKSPACE = %q", got["WORKSPACE"])
	}
	blob := got["BLOB"]
	if !strings.HasSuffix(blob, "…(cut)") || len(blob) > maxJournalValue+len("…(cut)") || !strings.HasPrefix(blob, "éé") {
		t.Errorf("BLOB is %d bytes ending %q; want it cut at %d bytes on a character boundary", len(blob), blob[max(0, len(blob)-12):], maxJournalValue)
	}
	if !strings.HasPrefix(got["MESSAGE"], "big blob=") {
		t.Errorf("MESSAGE starts %q", got["MESSAGE"][:min(40, len(got["MESSAGE"]))])
	}
	if fb.Len() != 0 {
		t.Errorf("the fallback was used")
	}
}

func TestJournalWriterIsSafeForConcurrentUse(t *testing.T) {
	conn, path := listenJournal(t)
	w := &JournalWriter{Socket: path}
	defer w.Close()
	log := zerolog.New(w)
	const writers, each = 8, 25
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				log.Info().Int("writer", i).Int("n", j).Msg("m")
			}
		}()
	}
	seen := map[string]bool{}
	for range writers * each {
		e := readEntry(t, conn)
		seen[e["WRITER"]+"/"+e["N"]] = true
	}
	wg.Wait()
	if len(seen) != writers*each {
		t.Errorf("got %d distinct entries, want %d", len(seen), writers*each)
	}
}

func TestIsJournalStream(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stream"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	other, err := os.Create(filepath.Join(t.TempDir(), "other"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	dev, ino, ok := fileID(f)
	if !ok {
		t.Fatal("fileID failed on a regular file")
	}
	match := fmt.Sprintf("%d:%d", dev, ino)
	tests := []struct {
		name   string
		env    string
		file   *os.File
		expect bool
	}{
		{"matches", match, f, true},
		{"another file", match, other, false},
		{"unset", "", f, false},
		{"no colon", fmt.Sprint(ino), f, false},
		{"not numbers", "a:b", f, false},
		{"same inode, other device", fmt.Sprintf("%d:%d", dev+1, ino), f, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("JOURNAL_STREAM", tt.env)
			if got := IsJournalStream(tt.file); got != tt.expect {
				t.Errorf("IsJournalStream with JOURNAL_STREAM=%q = %v, want %v", tt.env, got, tt.expect)
			}
		})
	}
}
