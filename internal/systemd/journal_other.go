//go:build !unix

package systemd

import "os"

// fileID: no journal outside Unix.
func fileID(*os.File) (dev, ino uint64, ok bool) { return 0, 0, false }
