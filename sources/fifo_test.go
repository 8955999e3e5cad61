package sources

import (
	"sync"
	"syscall"
	"testing"
	"time"
)

// hostileBound is how long a test waits for what a hostile file must not block.
const hostileBound = 5 * time.Second

// fifos are the FIFOs tests made, to be released when a test ends.
var fifos struct {
	sync.Mutex
	paths []string
}

// releaseFIFOs opens every test FIFO for writing without blocking and closes it again, which
// releases a reader blocked in open(2): it then reads end of file.
func releaseFIFOs() {
	fifos.Lock()
	defer fifos.Unlock()
	for _, p := range fifos.paths {
		if fd, err := syscall.Open(p, syscall.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			syscall.Close(fd)
		}
	}
}

// mkfifo makes a FIFO at path that nothing ever writes to.
func mkfifo(t *testing.T, path string) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	fifos.Lock()
	fifos.paths = append(fifos.paths, path)
	fifos.Unlock()
	t.Cleanup(releaseFIFOs)
}
