package systemd

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unicode/utf8"
)

// JournalSocket is where systemd-journald receives entries in its native
// protocol, for system and user services alike.
const JournalSocket = "/run/systemd/journal/socket"

// JournalWriter sends log events to the systemd journal over its native
// protocol, so that every field of an event is a journal field that
// `journalctl -o json` shows and `journalctl FIELD=value` matches.
//
// Each Write takes one event as zerolog writes it (a JSON object on one
// line) and sends one datagram:
//
//   - "message" becomes MESSAGE, followed by the event's other fields as
//     key=value pairs, so that the plain `journalctl` view keeps the context
//     (which workspace, which error) that a bare message would lose;
//   - "level" becomes PRIORITY (syslog numbering: debug 7, info 6, warn 4,
//     error 3, fatal and panic 2);
//   - "time" is dropped: the journal stamps every entry itself;
//   - every other field becomes a field of its own, its name upper-cased
//     with anything but letters, digits and '_' turned into '_' (a name
//     that would clash with MESSAGE, PRIORITY or SYSLOG_IDENTIFIER, or that
//     the journal would refuse, is prefixed with "F_"); strings are sent as
//     they are, numbers, booleans, objects and arrays as their JSON text;
//   - SYSLOG_IDENTIFIER is Identifier.
//
// An event that is not a JSON object is sent as its MESSAGE. When the
// journal cannot be reached, the event goes to Fallback as it came (and is
// dropped when Fallback is nil); the writer tries the journal again on the
// next event.
//
// The zero value sends to JournalSocket with no identifier and no fallback.
// A JournalWriter is safe for concurrent use.
type JournalWriter struct {
	// Socket is the journal's socket; JournalSocket when empty.
	Socket string
	// Identifier is sent as SYSLOG_IDENTIFIER when not empty.
	Identifier string
	// Fallback receives the events that cannot be sent to the journal.
	Fallback io.Writer

	mu   sync.Mutex
	conn *net.UnixConn
}

// maxJournalValue is the length at which a value is cut when an entry is
// too large for one datagram (the socket's send buffer, about 200 KiB by
// default): blauthd's events are a few hundred bytes, so only a runaway
// value gets there, and it is not worth a memfd.
const maxJournalValue = 4096

// Write sends the event p to the journal. It always reports len(p) written
// unless the event reached neither the journal nor the fallback.
func (w *JournalWriter) Write(p []byte) (int, error) {
	entry := w.encode(p, 0)
	w.mu.Lock()
	err := w.sendLocked(entry)
	if isTooLarge(err) {
		err = w.sendLocked(w.encode(p, maxJournalValue))
	}
	w.mu.Unlock()
	if err == nil || w.Fallback == nil {
		return len(p), nil
	}
	return w.Fallback.Write(p)
}

// Close closes the connection to the journal; a later Write opens a new one.
func (w *JournalWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.conn == nil {
		return nil
	}
	err := w.conn.Close()
	w.conn = nil
	return err
}

func (w *JournalWriter) sendLocked(entry []byte) error {
	for attempt := 0; ; attempt++ {
		if w.conn == nil {
			addr := &net.UnixAddr{Name: cmp.Or(w.Socket, JournalSocket), Net: "unixgram"}
			c, err := net.DialUnix("unixgram", nil, addr)
			if err != nil {
				return err
			}
			w.conn = c
		}
		_, err := w.conn.Write(entry)
		if err == nil || isTooLarge(err) || attempt > 0 {
			return err
		}
		// journald restarted (a new socket at the same path): dial again once.
		w.conn.Close()
		w.conn = nil
	}
}

func isTooLarge(err error) bool {
	return errors.Is(err, syscall.EMSGSIZE) || errors.Is(err, syscall.ENOBUFS)
}

// journalField is one field of an event, in the event's order.
type journalField struct {
	name  string
	value string
	raw   bool // value is JSON text (a number, a boolean, an object…), not a string
}

// encode builds the datagram for event p, cutting values longer than max
// when max > 0.
func (w *JournalWriter) encode(p []byte, max int) []byte {
	fields := parseEvent(p)
	var buf bytes.Buffer
	var message, level string
	var hasMessage bool
	var rest []journalField
	for _, f := range fields { // none when p is not a JSON object
		switch f.name {
		case "message":
			message, hasMessage = f.value, true
		case "level":
			level = f.value
		case "time":
		default:
			rest = append(rest, f)
		}
	}
	if !hasMessage {
		message = strings.TrimRight(string(p), "\n") // the event as it came
	} else {
		for _, f := range rest {
			v := f.value
			if !f.raw && (v == "" || strings.ContainsAny(v, " \"=\n\t\\")) {
				v = strconv.Quote(v)
			}
			message += " " + f.name + "=" + v
		}
	}
	appendJournalField(&buf, "MESSAGE", message, max)
	appendJournalField(&buf, "PRIORITY", strconv.Itoa(priority(level)), 0)
	if w.Identifier != "" {
		appendJournalField(&buf, "SYSLOG_IDENTIFIER", w.Identifier, 0)
	}
	seen := map[string]bool{}
	for _, f := range rest {
		name := journalFieldName(f.name)
		for seen[name] {
			name = "F_" + name
		}
		seen[name] = true
		appendJournalField(&buf, name, f.value, max)
	}
	return buf.Bytes()
}

// parseEvent reads a JSON object's members in order; nil when p is not a JSON object.
func parseEvent(p []byte) []journalField {
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	var fields []journalField
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil
		}
		name, _ := t.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil
		}
		f := journalField{name: name}
		var s string
		if len(raw) > 0 && raw[0] == '"' && json.Unmarshal(raw, &s) == nil {
			f.value = s
		} else {
			var c bytes.Buffer
			if json.Compact(&c, raw) != nil {
				return nil
			}
			f.value, f.raw = c.String(), true
		}
		fields = append(fields, f)
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return nil
	}
	return fields
}

// priority maps a zerolog level name to a syslog priority.
func priority(level string) int {
	if p, ok := map[string]int{"trace": 7, "debug": 7, "warn": 4, "error": 3, "fatal": 2, "panic": 2}[level]; ok {
		return p
	}
	return 6 // info, or no level
}

// reservedJournalNames are the fields that the writer sets itself.
var reservedJournalNames = map[string]bool{"MESSAGE": true, "PRIORITY": true, "SYSLOG_IDENTIFIER": true}

// journalFieldName turns an event's field name into a valid journal field
// name: upper-case letters, digits and '_', not starting with a digit or
// '_' (the journal's own trusted fields), at most 64 bytes.
func journalFieldName(name string) string {
	s := strings.Map(func(r rune) rune {
		if r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, strings.ToUpper(name))
	if s == "" || s[0] == '_' || (s[0] >= '0' && s[0] <= '9') || reservedJournalNames[s] {
		s = "F_" + s
	}
	if len(s) > 64 {
		s = s[:64]
	}
	return s
}

// appendJournalField writes one field in the native protocol: NAME=value and
// a newline, or, for a value holding a newline, NAME, a newline, the value's
// length as a little-endian 64-bit number, the value and a newline.
func appendJournalField(buf *bytes.Buffer, name, value string, max int) {
	if max > 0 && len(value) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(value[cut]) {
			cut--
		}
		value = value[:cut] + "…(cut)"
	}
	buf.WriteString(name)
	if !strings.Contains(value, "\n") {
		buf.WriteString("=" + value + "\n")
		return
	}
	buf.Write(binary.LittleEndian.AppendUint64([]byte{'\n'}, uint64(len(value))))
	buf.WriteString(value + "\n")
}

// IsJournalStream reports whether f, normally os.Stderr, is the stream that
// the service manager connected to the journal: JOURNAL_STREAM names its
// device and inode ("DEV:INODE"). A process whose output was redirected
// elsewhere (a pipe, a file) inherits the variable but fails the check, so
// it keeps writing text there.
func IsJournalStream(f *os.File) bool {
	v := os.Getenv("JOURNAL_STREAM")
	devStr, inoStr, ok := strings.Cut(v, ":")
	if !ok {
		return false
	}
	dev, err1 := strconv.ParseUint(devStr, 10, 64)
	ino, err2 := strconv.ParseUint(inoStr, 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	fdev, fino, ok := fileID(f)
	return ok && fdev == dev && fino == ino
}
