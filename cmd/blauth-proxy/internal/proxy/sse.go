package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// event is one Server-Sent Event: its id, its type (empty for the default, "message"), and its
// data lines joined with LF.
type event struct {
	id, name string
	data     []byte
}

// errTooLong reports an SSE line or event over the limit.
var errTooLong = errors.New("an event is longer than the limit")

// readEvents reads a text/event-stream (the WHATWG HTML "server-sent events" format) and calls
// each for every event that holds data, until the stream ends (nil), each fails, or a line or
// an event grows over max bytes. An event cut off by the end of the stream is dropped, as the
// format requires. Comments and retry fields are ignored.
func readEvents(r io.Reader, max int, each func(event) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var (
		ev      event
		data    bytes.Buffer
		hasData bool
		first   = true
	)
	for {
		line, err := readSSELine(br, max)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if first {
			line = strings.TrimPrefix(line, "\uFEFF")
			first = false
		}
		if line == "" {
			if hasData {
				ev.data = bytes.Clone(data.Bytes())
				if err := each(ev); err != nil {
					return err
				}
			}
			ev, hasData = event{id: ev.id}, false // the last event id carries over
			data.Reset()
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.WriteString(value)
			hasData = true
			if data.Len() > max {
				return errTooLong
			}
		case "event":
			ev.name = value
		case "id":
			if !strings.ContainsRune(value, 0) {
				ev.id = value
			}
		}
	}
}

// readSSELine reads one line ended by LF or CRLF, without its end.
func readSSELine(br *bufio.Reader, max int) (string, error) {
	var line []byte
	for {
		part, err := br.ReadSlice('\n')
		line = append(line, part...)
		if len(line) > max+2 {
			return "", fmt.Errorf("%w (%d bytes)", errTooLong, max)
		}
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return "", err // io.EOF included: a line without its end belongs to a cut-off event
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	return string(line), nil
}
