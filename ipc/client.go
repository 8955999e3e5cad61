package ipc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"syscall"
	"time"
)

// ErrUnreachable reports that no daemon answers on the socket: it does not exist, or nobody is
// listening on it. Clients may start a daemon and try again.
var ErrUnreachable = errors.New("daemon unreachable")

// Client is one connection to a daemon; it may carry several requests, one at a time.
// It is not safe for concurrent use.
type Client struct {
	conn    net.Conn
	r       *bufio.Reader
	timeout time.Duration
}

// Dial connects to the daemon's socket. A missing socket or a refused connection is reported as
// an error wrapping ErrUnreachable. timeout bounds the dial and every later request.
func Dial(path string, timeout time.Duration) (*Client, error) {
	conn, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOTSOCK) {
			return nil, fmt.Errorf("%w: %s: %w", ErrUnreachable, path, unwrapSyscall(err))
		}
		return nil, fmt.Errorf("connect to %s: %w", path, err)
	}
	return &Client{conn: conn, r: bufio.NewReader(conn), timeout: timeout}, nil
}

func unwrapSyscall(err error) error {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err
	}
	return err
}

// Do sends req and reads the answer. An error answer is returned as an *Error.
func (c *Client) Do(req *Message) (*Message, error) {
	return c.DoTimeout(req, c.timeout)
}

// DoTimeout is Do with its own time limit (a device login waits for minutes).
func (c *Client) DoTimeout(req *Message, timeout time.Duration) (*Message, error) {
	b, err := req.encode(MaxMessageSize, MaxFields)
	if err != nil {
		return nil, err // nothing was sent, so no answer can be waiting
	}
	if timeout > 0 {
		_ = c.conn.SetDeadline(time.Now().Add(timeout))
	}
	if _, err := c.conn.Write(b); err != nil {
		// A daemon that refuses a peer answers at once and closes; its answer may be waiting
		// even though our write failed.
		_ = c.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if resp, rerr := ReadAnswer(c.r); rerr == nil && AsError(resp) != nil {
			return resp, AsError(resp)
		}
		return nil, fmt.Errorf("send request: %w", err)
	}
	resp, err := ReadAnswer(c.r)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, fmt.Errorf("daemon did not answer within %s: %w", timeout, err)
		}
		return nil, fmt.Errorf("read answer: %w", err)
	}
	if err := AsError(resp); err != nil {
		return resp, err
	}
	return resp, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Stream is a watch (version 2): the daemon's answers for one selection, a new complete one at
// every change. Next may be called from one goroutine at a time; Close from any.
type Stream struct{ c *Client }

// Watch sends req, an action=watch request, and returns the stream of answers. The connection
// carries nothing else from then on: close the stream to end the watch.
func (c *Client) Watch(req *Message) (*Stream, error) {
	_ = c.conn.SetDeadline(time.Time{})
	if c.timeout > 0 {
		_ = c.conn.SetWriteDeadline(time.Now().Add(c.timeout))
	}
	if err := WriteMessage(c.conn, req); err != nil {
		return nil, fmt.Errorf("send request: %w", err)
	}
	_ = c.conn.SetWriteDeadline(time.Time{})
	return &Stream{c: c}, nil
}

// Next waits for the next answer. An error answer is returned as a message, not an error: the
// stream goes on after most of them (ErrorCode tells which). The error is io.EOF-like when the
// daemon ended the stream, or net.ErrClosed after Close.
func (s *Stream) Next() (*Message, error) {
	m, err := ReadAnswer(s.c.r)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("the daemon ended the watch: %w", io.EOF)
		}
		return nil, err
	}
	return m, nil
}

// Close ends the watch.
func (s *Stream) Close() error { return s.c.Close() }

// EnvError is a caller variable that cannot be sent: its name is not a valid key, or its value
// holds CR, LF or NUL. It never holds the value, which may be a secret.
type EnvError struct {
	Name   string
	Reason string // "a line break", "a trailing carriage return", "a NUL byte", …
}

func (e *EnvError) Error() string { return e.Name + " holds " + e.Reason }

// CallerEnv returns the BL_* variables of environ (as os.Environ gives them) as request fields,
// sorted by name, for the daemon to resolve the caller's environment source. A variable that
// cannot be sent is an *EnvError, never dropped: without it the daemon would resolve another
// workspace's credential.
func CallerEnv(environ []string) ([]Field, error) {
	var fs []Field
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, "BL_") {
			continue
		}
		switch {
		case !ValidKey(KeyEnvPrefix + k):
			return nil, &EnvError{Name: k, Reason: "an invalid name"}
		case strings.HasSuffix(v, "\r") && ValidValue(v[:len(v)-1]):
			return nil, &EnvError{Name: k, Reason: "a trailing carriage return"}
		case strings.Contains(v, "\n"):
			return nil, &EnvError{Name: k, Reason: "a line break"}
		case strings.Contains(v, "\r"):
			return nil, &EnvError{Name: k, Reason: "a carriage return"}
		case strings.Contains(v, "\x00"):
			return nil, &EnvError{Name: k, Reason: "a NUL byte"}
		}
		fs = append(fs, Field{KeyEnvPrefix + k, v})
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].Key < fs[j].Key })
	return fs, nil
}
