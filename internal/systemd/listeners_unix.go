//go:build unix

package systemd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
)

// takeListeners wraps descriptors 3 … 3+n-1 into listeners.
//
// It first checks that every one of them is a listening stream socket, and
// touches none when one is not: a LISTEN_FDS larger than what was passed
// must not make us close a descriptor that the Go runtime or a library
// opened in the meantime. Once they are all known to be listening sockets,
// they are ours: on a later error they are all closed.
func takeListeners(n int, names []string) ([]net.Listener, error) {
	for i := range n {
		fd := listenFDsStart + i
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			return nil, fmt.Errorf("systemd: socket activation: LISTEN_FDS=%d but file descriptor %d is not open: %w", n, fd, err)
		}
		if st.Mode&syscall.S_IFMT != syscall.S_IFSOCK {
			return nil, fmt.Errorf("systemd: socket activation: file descriptor %d (%s) is not a socket", fd, fdName(names, i))
		}
		// Go's FileListener would take a datagram or unlistening socket
		// and fail only at Accept; Accept=yes in the socket unit passes
		// connected sockets.
		typ, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE)
		if err == nil && typ == syscall.SOCK_STREAM {
			var listening int
			listening, err = syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
			if err == nil && listening == 0 {
				err = errors.New("not listening (Accept=yes in the socket unit?)")
			}
		} else if err == nil {
			err = fmt.Errorf("socket type %d, want SOCK_STREAM", typ)
		}
		if err != nil {
			return nil, fmt.Errorf("systemd: socket activation: file descriptor %d (%s) is not a listening stream socket: %w", fd, fdName(names, i), err)
		}
	}
	for i := range n {
		syscall.CloseOnExec(listenFDsStart + i)
	}
	listeners := make([]net.Listener, 0, n)
	var errs []error
	for i := range n {
		fd := listenFDsStart + i
		f := os.NewFile(uintptr(fd), fdName(names, i))
		// FileListener duplicates the descriptor (close-on-exec); the
		// original is closed either way.
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("file descriptor %d (%s) is not a listening stream socket: %w", fd, f.Name(), err))
			continue
		}
		listeners = append(listeners, l)
	}
	if len(errs) > 0 {
		for _, l := range listeners {
			l.Close()
		}
		return nil, fmt.Errorf("systemd: socket activation: %w", errors.Join(errs...))
	}
	return listeners, nil
}
