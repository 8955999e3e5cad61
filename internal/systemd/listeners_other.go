//go:build !unix

package systemd

import (
	"errors"
	"net"
)

func takeListeners(n int, names []string) ([]net.Listener, error) {
	return nil, errors.New("systemd: socket activation is not supported on this platform")
}
