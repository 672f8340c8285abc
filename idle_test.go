package garou_test

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/garou-chat/garou"
)

// waitConnGoroutines waits until the servers' connections have exactly
// readers reader goroutines and no writer, and fails the test if that does
// not happen before its context ends. A writer ends as soon as its queue
// is empty, so the wait is short: no sleep, the loop only yields.
func waitConnGoroutines(t *testing.T, readers int) {
	t.Helper()
	ctx := ctxT(t)
	for {
		r, w := garou.ConnGoroutines()
		if r == readers && w == 0 {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("connection goroutines: %d readers and %d writers; want %d readers and no writer", r, w, readers)
		}
		runtime.Gosched()
	}
}

// TestIdleConnectionHasNoWriter: once its handshake is over and its frames
// are written, a connection has one goroutine of the server's (its reader)
// and no writer; a burst after that starts a writer again, and every text
// of it arrives, in order, after each idle spell.
func TestIdleConnectionHasNoWriter(t *testing.T) {
	srv := startServer(t)
	cls := make([]*garou.Client, 3)
	for i := range cls {
		cls[i] = dial(t, srv, fmt.Sprint("idle", i))
	}
	// What the server sends on connecting (welcome, presence) is small: it
	// is written whether or not the clients read it, and the writers end.
	waitConnGoroutines(t, len(cls))

	for range 2 {
		requireOneOrder(t, chatAll(t, cls, 50))
		waitConnGoroutines(t, len(cls))
	}
}
