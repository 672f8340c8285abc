//go:build !linux

package term

import "errors"

// errNotSupported is returned by MakeRaw where raw mode is not implemented.
var errNotSupported = errors.New("term: raw mode is not supported on this platform")

// IsTerminal reports whether fd refers to a terminal. On this platform it
// always reports false, so callers fall back to plain line input.
func IsTerminal(fd int) bool { return false }

// MakeRaw is not supported on this platform and always fails.
func MakeRaw(fd int) (restore func() error, err error) {
	return nil, errNotSupported
}
