package sources

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"
)

// Caps on the files blauthd reads because a caller or the user pointed it at them. A real .env is
// a few hundred bytes and a real bl config a few kilobytes: the caps only stop a file that would
// exhaust the daemon's memory.
const (
	MaxDotenvBytes   = 256 << 10 // a caller's .env
	MaxBLConfigBytes = 1 << 20   // the bl config
)

// DefaultFileReadTimeout bounds one read of a .env or of the bl config.
const DefaultFileReadTimeout = 2 * time.Second

// ErrFileRefused is matched by every error ReadBounded gives for a file it will not read: one
// that is not a regular file (a FIFO, a device, a directory, a socket) or that is over the cap.
var ErrFileRefused = errors.New("refusing to read the file")

// fileRefusedError names the file and why it is refused, never its content.
type fileRefusedError struct{ path, reason string }

func (e *fileRefusedError) Error() string {
	return e.path + " " + e.reason + "; refusing to read it"
}

func (e *fileRefusedError) Unwrap() error { return ErrFileRefused }

// ReadBounded reads the file at path, following symbolic links, without ever blocking on what
// is not a regular file and without reading more than limit+1 bytes. It refuses a FIFO, a device,
// a directory or a socket before opening it, and opens the rest with O_NONBLOCK (so that a FIFO
// swapped in between cannot block the open) and O_CLOEXEC, then checks the open file again with
// fstat. A file over limit bytes is refused by its size before it is read, and by what is read
// if it grows meanwhile. It returns the file's data and the fstat of the file it read.
func ReadBounded(path string, limit int64) ([]byte, os.FileInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	if err := checkReadable(path, fi, limit); err != nil {
		return nil, nil, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0) // os adds O_CLOEXEC
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, nil, err
	}
	if err := checkReadable(path, fi, limit); err != nil {
		return nil, nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, nil, &fileRefusedError{path, fmt.Sprintf("is larger than %s (it grew while being read)", sizeText(limit))}
	}
	return data, fi, nil
}

// checkReadable refuses what is not a regular file, or a regular file over limit bytes.
func checkReadable(path string, fi os.FileInfo, limit int64) error {
	m := fi.Mode()
	var kind string
	switch {
	case m.IsRegular():
		if fi.Size() > limit {
			return &fileRefusedError{path, fmt.Sprintf("is larger than %s (%d bytes)", sizeText(limit), fi.Size())}
		}
		return nil
	case m&fs.ModeNamedPipe != 0:
		kind = "a FIFO"
	case m&fs.ModeDevice != 0:
		kind = "a device"
	case m.IsDir():
		kind = "a directory"
	case m&fs.ModeSocket != 0:
		kind = "a socket"
	default:
		kind = "not a regular file (" + m.Type().String() + ")"
		return &fileRefusedError{path, "is " + kind}
	}
	return &fileRefusedError{path, "is " + kind + ", not a regular file"}
}

// sizeText writes a cap as people read it: 256 KiB, 1 MiB.
func sizeText(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// ErrReadTimeout is matched by the error of a read that did not finish within its bound.
var ErrReadTimeout = errors.New("timed out reading a file")

// ReadWithin reads path with ReadBounded in a new goroutine and waits for it at most timeout:
// then it returns an error wrapping ErrReadTimeout, and the read goes on in the background (a
// stalled file system cannot hold up the caller).
func ReadWithin(path string, limit int64, timeout time.Duration) ([]byte, os.FileInfo, error) {
	type result struct {
		data []byte
		info os.FileInfo
		err  error
	}
	done := make(chan result, 1) // buffered: an abandoned read does not leak its goroutine
	go func() {
		data, info, err := ReadBounded(path, limit)
		done <- result{data, info, err}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-done:
		return r.data, r.info, r.err
	case <-t.C:
		return nil, nil, &readTimeoutError{path, timeout}
	}
}

type readTimeoutError struct {
	path string
	d    time.Duration
}

func (e *readTimeoutError) Error() string {
	return fmt.Sprintf("timed out reading %s after %s (is it on a stalled file system?)", e.path, e.d)
}

func (e *readTimeoutError) Unwrap() error { return ErrReadTimeout }

// ReadTimeout is the error of a read of path that did not finish within d.
func ReadTimeout(path string, d time.Duration) error { return &readTimeoutError{path, d} }
