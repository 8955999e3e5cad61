package blconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// ErrUnsafeFile is matched by the error for a bl config that another user could have written: the
// file, or a directory it lives in, is writable by group or others, or owned by another user.
var ErrUnsafeFile = errors.New("unsafe file permissions")

// unsafeError names the path, its mode and owner, the risk and the fix; never the file's content.
type unsafeError struct{ msg string }

func (e *unsafeError) Error() string { return e.msg }
func (e *unsafeError) Unwrap() error { return ErrUnsafeFile }

// checkBLConfigSafe refuses a bl config that someone other than this user (or root) could have
// written or swapped: the file itself (fi, the fstat of what was read), the directory that holds
// path, and, when path is a symbolic link, the directory of the file it leads to. Another user who
// can write any of them can make blauthd serve their credentials (their API key, in place of
// yours, with your workspace's name on it) or read back what blauthd writes there.
//
// The rules: no write permission for group or others on the file; none on a directory either,
// unless it has the sticky bit (as /tmp: then others cannot rename or delete what is not theirs);
// the file and the directories owned by this user or by root (root can change anything anyway).
func checkBLConfigSafe(path string, fi os.FileInfo) error {
	uid := os.Geteuid()
	if err := checkOwnerAndMode(path, fi, uid); err != nil {
		return err
	}
	dirs := []string{filepath.Dir(path)}
	if target, err := filepath.EvalSymlinks(path); err == nil && filepath.Dir(target) != dirs[0] {
		dirs = append(dirs, filepath.Dir(target))
	}
	for _, d := range dirs {
		dfi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if err := checkOwnerAndMode(d, dfi, uid); err != nil {
			return err
		}
	}
	return nil
}

func checkOwnerAndMode(path string, fi os.FileInfo, uid int) error {
	owner := -1
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		owner = int(st.Uid)
	}
	if msg := unsafeReason(path, fi.IsDir(), fi.Mode(), owner, uid); msg != "" {
		return &unsafeError{msg}
	}
	return nil
}

// unsafeReason says why a file or directory with this mode and owner (-1: unknown) is not safe for
// user uid to take credentials from, or "" when it is.
func unsafeReason(path string, isDir bool, mode fs.FileMode, owner, uid int) string {
	what, fix := "the bl config "+path, "chmod 600 "+path
	if isDir {
		what, fix = "the directory "+path+" (it holds the bl config)", "chmod 700 "+path
	}
	switch {
	case owner >= 0 && owner != uid && owner != 0:
		return fmt.Sprintf("%s is owned by uid %d, not by you (uid %d): its owner could put their own credentials in it, "+
			"so blauth does not use it; fix: chown %d %s, or remove it if you did not make it", what, owner, uid, uid, path)
	case mode.Perm()&0o022 != 0 && !(isDir && mode&fs.ModeSticky != 0):
		return fmt.Sprintf("%s is writable by other users (mode %#o): another user could swap in their own credentials, "+
			"so blauth does not use it; fix: %s", what, mode.Perm(), fix)
	}
	return ""
}
