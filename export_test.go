package garou

import (
	"bytes"
	"runtime"
	"time"
)

// WithClock makes the server issue and age session tokens by now instead
// of the time of day.
func WithClock(now func() time.Time) ServerOption {
	return serverOptionFunc(func(c *serverConfig) { c.clock = now })
}

// ConnGoroutines counts the goroutines of the servers' connections in this
// process, from their stacks: readers (a connection's serve, parked in
// Read when idle) and writers (a lane's writeLoop, for the control stream
// or a room's, running only while its queue has something to write).
func ConnGoroutines() (readers, writers int) {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	for g := range bytes.SplitSeq(buf, []byte("\n\n")) {
		switch {
		case bytes.Contains(g, []byte("garou.(*lane).writeLoop")):
			writers++
		case bytes.Contains(g, []byte("garou.(*conn).serve")):
			readers++
		}
	}
	return readers, writers
}

// GoroutinesIn counts the goroutines of this process whose stack holds fn
// (a qualified function name, as in a stack trace).
func GoroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	n := 0
	for g := range bytes.SplitSeq(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte(fn)) {
			n++
		}
	}
	return n
}
