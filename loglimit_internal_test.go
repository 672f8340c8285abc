package garou

import (
	"testing"
	"testing/synctest"
	"time"
)

// TestLogLimiter: a burst of lines goes through, then one per tenth of a
// second, and the first line let through after a pause says how many were
// held back.
func TestLogLimiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var l logLimiter
		for i := range refusalLogBurst {
			if ok, held := l.allow(); !ok || held != 0 {
				t.Fatalf("line %d of the burst: ok %v, held %d", i, ok, held)
			}
		}
		for range 5 {
			if ok, _ := l.allow(); ok {
				t.Fatal("a line past the burst went through")
			}
		}
		time.Sleep(time.Second / refusalLogsPerSecond)
		if ok, held := l.allow(); !ok || held != 5 {
			t.Fatalf("after a tenth of a second: ok %v, held %d; want true, 5", ok, held)
		}
		if ok, _ := l.allow(); ok {
			t.Fatal("two lines in one tenth of a second")
		}
	})
}
