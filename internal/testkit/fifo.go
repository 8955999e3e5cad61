package testkit

import (
	"sync"
	"syscall"
	"testing"
)

// fifos are the FIFOs the running tests made (MkFIFO), to be released when a test ends.
var fifos struct {
	sync.Mutex
	paths []string
}

// MkFIFO makes a FIFO at path that nothing ever writes to: what a hostile repository can ship
// in place of a file. It is released (ReleaseFIFOs) when the test ends.
func MkFIFO(t testing.TB, path string) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	fifos.Lock()
	fifos.paths = append(fifos.paths, path)
	fifos.Unlock()
	t.Cleanup(ReleaseFIFOs)
}

// ReleaseFIFOs opens every FIFO that MkFIFO made for writing without blocking and closes it
// again, which releases a reader blocked in open(2): it then reads end of file. A test that finds
// a reader stuck calls it before failing, so that cleanups waiting for that reader end too.
func ReleaseFIFOs() {
	fifos.Lock()
	defer fifos.Unlock()
	for _, p := range fifos.paths {
		if fd, err := syscall.Open(p, syscall.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			syscall.Close(fd)
		}
	}
}
