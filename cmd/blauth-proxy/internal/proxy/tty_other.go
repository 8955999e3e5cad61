//go:build !linux && !darwin

package proxy

// typedAtTerminal is false where the foreground process group cannot be read: every signal is
// passed on.
func typedAtTerminal() bool { return false }
