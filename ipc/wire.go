// Package ipc is blauth's wire protocol: the key=value messages that blauthd and its clients exchange
// over a Unix socket, their error codes, where the socket lives, and a small client.
//
// It depends on the standard library only, so that blauth-helper stays tiny and any program can
// vendor it. The protocol itself is documented in docs/PROTOCOL.md.
package ipc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
)

// Version is the newest protocol version this package speaks. A request names the newest
// version its client speaks; the daemon serves it at the lower of that and its own, and says
// which in the answer's version=. docs/PROTOCOL.md lists what each version added.
const Version = "2"

// VersionNumber is Version as a number.
const VersionNumber = 2

// Limits on a single message. A request larger than MaxMessageSize, a line longer than MaxLineSize
// or more than MaxFields fields is rejected without reading the rest of it. Answers may be larger
// (a status of thousands of workspaces): up to MaxAnswerSize and MaxAnswerFields, with the same
// line limit (long values are split over several lines, see AddLong).
const (
	MaxMessageSize  = 64 << 10
	MaxLineSize     = 16 << 10
	MaxFields       = 256
	MaxAnswerSize   = 16 << 20
	MaxAnswerFields = 1 << 14
)

// MaxCwd is the longest cwd a request may carry (the longest path Linux resolves): the daemon
// answers a longer one bad_request, and clients refuse it before sending.
const MaxCwd = 4096

// Field is one key=value line of a message.
type Field struct {
	Key, Value string
}

// Message is an ordered list of fields. Keys may repeat (git sends capability[]=… several times);
// Get returns the first value. The zero value is an empty message, ready to use.
// A Message is not safe for concurrent mutation.
type Message struct {
	Fields []Field
	// text is what ReadMessageInto last cut Fields from: a connection sending the same request
	// again gets it back rather than a copy.
	text string
}

// NewMessage returns a message holding the given key, value pairs.
func NewMessage(kv ...string) *Message {
	m := newMessage(len(kv)/2 + 4)
	for i := 0; i+1 < len(kv); i += 2 {
		m.Add(kv[i], kv[i+1])
	}
	return m
}

// newMessage returns an empty message with room for n fields. Up to 16 its fields live in the
// same allocation as the message (sized to n): a request or a get answer is then one
// allocation, not two.
func newMessage(n int) *Message {
	switch {
	case n <= 8:
		b := new(struct {
			m Message
			f [8]Field
		})
		b.m.Fields = b.f[:0]
		return &b.m
	case n <= 12:
		b := new(struct {
			m Message
			f [12]Field
		})
		b.m.Fields = b.f[:0]
		return &b.m
	case n <= 16:
		b := new(struct {
			m Message
			f [16]Field
		})
		b.m.Fields = b.f[:0]
		return &b.m
	}
	return &Message{Fields: make([]Field, 0, n)}
}

// Text is the message as ReadMessageInto last read it, its empty line included; "" for a
// message built field by field. The same bytes read again give the same string.
func (m *Message) Text() string { return m.text }

// Get returns the first value of key and whether it was present.
func (m *Message) Get(key string) (string, bool) {
	for _, f := range m.Fields {
		if f.Key == key {
			return f.Value, true
		}
	}
	return "", false
}

// Value returns the first value of key, or "".
func (m *Message) Value(key string) string {
	v, _ := m.Get(key)
	return v
}

// All returns every value of key, in order.
func (m *Message) All(key string) []string {
	var vs []string
	for _, f := range m.Fields {
		if f.Key == key {
			vs = append(vs, f.Value)
		}
	}
	return vs
}

// Add appends a field.
func (m *Message) Add(key, value string) { m.Fields = append(m.Fields, Field{key, value}) }

// longChunk is the size of the pieces AddLong cuts a value into: well inside MaxLineSize.
const longChunk = 8 << 10

// AddLong appends value as one or more fields of key, each at most 8 KiB, cut between UTF-8
// characters, so that a value of any length fits the line limit. Long reads it back.
func (m *Message) AddLong(key, value string) {
	for len(value) > longChunk {
		n := longChunk
		for n > 0 && !utf8.RuneStart(value[n]) {
			n--
		}
		if n == 0 {
			n = longChunk
		}
		m.Add(key, value[:n])
		value = value[n:]
	}
	m.Add(key, value)
}

// Long returns every value of key joined in order: the value AddLong split.
func (m *Message) Long(key string) string {
	var b strings.Builder
	for _, f := range m.Fields {
		if f.Key == key {
			b.WriteString(f.Value)
		}
	}
	return b.String()
}

// Set replaces every field of key by one with value, at the position of the first.
func (m *Message) Set(key, value string) {
	out := m.Fields[:0]
	done := false
	for _, f := range m.Fields {
		if f.Key != key {
			out = append(out, f)
		} else if !done {
			out = append(out, Field{key, value})
			done = true
		}
	}
	m.Fields = out
	if !done {
		m.Add(key, value)
	}
}

// Errors returned by ReadMessage and WriteMessage. They are wrapped with the detail; use errors.Is.
var (
	ErrTooLarge  = errors.New("message too large")
	ErrMalformed = errors.New("malformed message")
)

// ValidKey reports whether k may be used as a key: non-empty, at most 128 bytes of printable ASCII
// without '=' or spaces.
func ValidKey(k string) bool { return validKey(k) }

func validKey[S ~string | ~[]byte](k S) bool {
	if len(k) == 0 || len(k) > 128 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c <= ' ' || c >= 0x7f || c == '=' {
			return false
		}
	}
	return true
}

// ValidValue reports whether v may be sent as a value: no CR, LF or NUL.
// It looks for each byte with IndexByte, several times faster than ContainsAny over a token.
func ValidValue(v string) bool {
	return strings.IndexByte(v, '\n') < 0 && strings.IndexByte(v, '\r') < 0 && strings.IndexByte(v, 0) < 0
}

// ReadMessage reads one message: key=value lines up to an empty line. It returns io.EOF when r
// ends before the first byte of a message (a client that is done), io.ErrUnexpectedEOF when it
// ends inside one, and an error wrapping ErrTooLarge or ErrMalformed for input that breaks the
// limits or the grammar; after such an error the stream is out of step and must be closed.
func ReadMessage(r *bufio.Reader) (*Message, error) {
	return readMessage(r, nil, MaxMessageSize, MaxFields)
}

// ReadMessageInto is ReadMessage into m, whose fields it replaces, reusing their room: a server
// reading request after request on a connection allocates only each request's text, and not
// even that when the text is the one m held before (a client asking the same again). The
// fields of the previous message read into m must no longer be in use; their strings stay
// valid.
func ReadMessageInto(r *bufio.Reader, m *Message) error {
	_, err := readMessage(r, m, MaxMessageSize, MaxFields)
	return err
}

// ReadAnswer is ReadMessage with the limits of an answer (MaxAnswerSize, MaxAnswerFields).
func ReadAnswer(r *bufio.Reader) (*Message, error) {
	return readMessage(r, nil, MaxAnswerSize, MaxAnswerFields)
}

// readMessage reads the message's lines into one buffer and makes one string of it, which its
// keys and values are cut from: a message costs two allocations (one into m, when it is not
// nil), however many lines it has.
func readMessage(r *bufio.Reader, m *Message, maxSize, maxFields int) (*Message, error) {
	var (
		stack [1024]byte
		buf   = stack[:0]
		spans [32]lineSpan
		lines = spans[:0]
	)
	for {
		start := len(buf)
		var err error
		buf, err = appendLine(r, buf)
		if err != nil {
			if errors.Is(err, io.EOF) {
				if len(buf) == 0 {
					return nil, io.EOF
				}
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if len(buf) > maxSize {
			return nil, fmt.Errorf("%w: over %d bytes", ErrTooLarge, maxSize)
		}
		line := buf[start : len(buf)-1]
		if len(line) == 0 {
			if m == nil {
				return lineSpans(lines).message(nil, string(buf)), nil
			}
			if m.text != string(buf) { // compared without a copy
				m.text = string(buf)
			}
			return lineSpans(lines).message(m, m.text), nil
		}
		if len(lines) >= maxFields {
			return nil, fmt.Errorf("%w: over %d fields", ErrTooLarge, maxFields)
		}
		eq := bytes.IndexByte(line, '=')
		if eq < 0 {
			return nil, fmt.Errorf("%w: line %d has no '='", ErrMalformed, len(lines)+1)
		}
		if !validKey(line[:eq]) {
			return nil, fmt.Errorf("%w: line %d has an invalid key", ErrMalformed, len(lines)+1)
		}
		if v := line[eq+1:]; bytes.IndexByte(v, '\r') >= 0 || bytes.IndexByte(v, 0) >= 0 {
			return nil, fmt.Errorf("%w: line %d holds CR or NUL", ErrMalformed, len(lines)+1)
		}
		lines = append(lines, lineSpan{start, start + eq, len(buf) - 1})
	}
}

// lineSpan is where a line's key ends and its value lies in a message's buffer.
type lineSpan struct{ start, eq, end int }

type lineSpans []lineSpan

// message cuts the fields out of s, the message's text, into m (a new message when nil).
func (ls lineSpans) message(m *Message, s string) *Message {
	if m == nil {
		m = newMessage(len(ls))
	}
	m.Fields = m.Fields[:0]
	for _, l := range ls {
		m.Fields = append(m.Fields, Field{s[l.start:l.eq], s[l.eq+1 : l.end]})
	}
	return m
}

// appendLine appends the next line of r, with its '\n', to buf, without ever buffering more
// than MaxLineSize bytes of it.
func appendLine(r *bufio.Reader, buf []byte) ([]byte, error) {
	n := 0
	for {
		chunk, err := r.ReadSlice('\n')
		if n += len(chunk); n > MaxLineSize+1 {
			return buf, fmt.Errorf("%w: line over %d bytes", ErrTooLarge, MaxLineSize)
		}
		buf = append(buf, chunk...)
		switch {
		case err == nil:
			return buf, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && n > 0:
			return buf, io.ErrUnexpectedEOF
		default:
			return buf, err
		}
	}
}

// Encode returns the wire form of m as a request, ended by the empty line. It fails on an invalid
// key or value, or a request over the limits, rather than sending something the peer would
// misread or refuse.
func (m *Message) Encode() ([]byte, error) { return m.encode(MaxMessageSize, MaxFields) }

// EncodeAnswer is Encode with the limits of an answer: what WriteAnswer writes.
func (m *Message) EncodeAnswer() ([]byte, error) { return m.encode(MaxAnswerSize, MaxAnswerFields) }

func (m *Message) encode(maxSize, maxFields int) ([]byte, error) {
	b, err := m.appendEncoded(nil, maxSize, maxFields)
	if err != nil {
		return nil, err
	}
	return b, nil
}

func (m *Message) appendEncoded(b []byte, maxSize, maxFields int) ([]byte, error) {
	if len(m.Fields) > maxFields {
		return b, fmt.Errorf("%w: over %d fields", ErrTooLarge, maxFields)
	}
	start, size := len(b), 1
	for _, f := range m.Fields {
		size += len(f.Key) + len(f.Value) + 2
	}
	b = slices.Grow(b, size) // one allocation at most, even for a long status
	for _, f := range m.Fields {
		if !ValidKey(f.Key) {
			return b, fmt.Errorf("%w: invalid key %q", ErrMalformed, f.Key)
		}
		if !ValidValue(f.Value) {
			// The value may be a secret: never quote it.
			return b, fmt.Errorf("%w: value of %s holds CR, LF or NUL", ErrMalformed, f.Key)
		}
		if len(f.Key)+1+len(f.Value) > MaxLineSize {
			return b, fmt.Errorf("%w: the line of %s is over %d bytes", ErrTooLarge, f.Key, MaxLineSize)
		}
		b = append(b, f.Key...)
		b = append(b, '=')
		b = append(b, f.Value...)
		b = append(b, '\n')
	}
	b = append(b, '\n')
	if len(b)-start > maxSize {
		return b, fmt.Errorf("%w: over %d bytes", ErrTooLarge, maxSize)
	}
	return b, nil
}

// WriteMessage writes m, a request, in one write.
func WriteMessage(w io.Writer, m *Message) error { return m.write(w, MaxMessageSize, MaxFields) }

// WriteAnswer writes m, an answer, in one write, with the limits of an answer.
func WriteAnswer(w io.Writer, m *Message) error { return m.write(w, MaxAnswerSize, MaxAnswerFields) }

// writeBufs are the buffers messages are encoded into to be written; one over 64 KiB (a long
// status) is not kept.
var writeBufs = sync.Pool{New: func() any { return new([]byte) }}

func (m *Message) write(w io.Writer, maxSize, maxFields int) error {
	bp := writeBufs.Get().(*[]byte)
	b, err := m.appendEncoded((*bp)[:0], maxSize, maxFields)
	if err == nil {
		_, err = w.Write(b)
	}
	if cap(b) <= 64<<10 {
		*bp = b
		writeBufs.Put(bp)
	}
	return err
}
