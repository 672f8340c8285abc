// Package ptytest runs a process under a pseudo-terminal for tests, so that
// the process sees a real terminal on its standard input, output and error,
// and lets the test type into it and wait for its output.
//
// It is implemented on Linux only.
package ptytest
