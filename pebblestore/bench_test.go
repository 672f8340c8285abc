package pebblestore_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/garou-chat/garou/pebblestore"
	"github.com/stretchr/testify/require"
)

// writers is how many appends wait for their fsync at once, each in a
// room of its own (the server appends one text at a time per room).
const writers = 128

// BenchmarkAppend measures acknowledged appends per second with 128
// concurrent writers, each waiting for its text to be on disk, through the
// store's committer with no delay and with a 1 ms one. (boltstore's
// BenchmarkAppend measures the same, for comparison.)
func BenchmarkAppend(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts []pebblestore.Option
	}{
		{"committer", nil},
		{"committer-1ms", []pebblestore.Option{pebblestore.WithMaxDelay(time.Millisecond)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, _ := open(b, bc.opts...)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for w := range writers {
				wg.Go(func() {
					room := "room-" + itoa(uint64(w))
					for seq := uint64(1); next.Add(1) <= int64(b.N); seq++ {
						if err := s.Append(b.Context(), room, text(room, seq)); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "appends/s")
			b.ReportMetric(float64(s.Taken())/float64(s.Commits()), "appends/batch")
			b.ReportMetric(float64(s.WALBytes())/float64(b.N), "WAL-bytes/append")
		})
	}
}

// BenchmarkAfter measures reading the 100 texts after a point of a room
// of 100.
func BenchmarkAfter(b *testing.B) {
	s, _ := open(b)
	for seq := uint64(1); seq <= 200; seq++ {
		require.NoError(b, s.Append(b.Context(), "a", text("a", seq)))
	}
	b.ResetTimer()
	for b.Loop() {
		msgs, _, err := s.After(b.Context(), "a", 100)
		if err != nil || len(msgs) != 100 {
			b.Fatal(len(msgs), err)
		}
	}
}
