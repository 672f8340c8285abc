package garou

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func frames(ss ...string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

func TestSendQueueWelcomeFirst(t *testing.T) {
	q := newSendQueue(100)
	ok, _, _ := q.push([]byte("joined"))
	require.True(t, ok)
	batch, _, end := q.take()
	require.False(t, end)
	require.Empty(t, batch, "nothing goes out before the welcome")

	q.welcome([]byte("welcome"))
	batch, _, end = q.take()
	require.False(t, end)
	require.Equal(t, frames("welcome", "joined"), batch)
	q.written(batch)
	total, pending := q.counted()
	require.Zero(t, total)
	require.Zero(t, pending)

	q.welcome([]byte("again")) // only during the handshake
	batch, _, _ = q.take()
	require.Empty(t, batch)
}

func TestSendQueueCloseDrainsThenFinal(t *testing.T) {
	q := newSendQueue(100)
	q.welcome([]byte("w"))
	q.push([]byte("a"))
	q.close([]byte("bye"))
	q.close([]byte("other")) // the first close counts
	ok, over, _ := q.push([]byte("late"))
	require.False(t, ok)
	require.False(t, over)

	batch, final, end := q.take()
	require.False(t, end)
	require.Equal(t, frames("w", "a"), batch)
	require.Nil(t, final)
	q.written(batch)
	_, final, end = q.take()
	require.True(t, end)
	require.Equal(t, []byte("bye"), final)
	_, final, end = q.take()
	require.True(t, end)
	require.Nil(t, final, "the final frame is written once")
}

func TestSendQueueCloseDuringHandshakeDropsWhatWaits(t *testing.T) {
	q := newSendQueue(100)
	q.push([]byte("joined"))
	q.close([]byte("bye"))
	q.welcome([]byte("w"))
	_, final, end := q.take()
	require.True(t, end)
	require.Equal(t, []byte("bye"), final)
}

func TestSendQueueOverflowClosesAndReportsWhatWasQueued(t *testing.T) {
	q := newSendQueue(10)
	q.welcome([]byte("w"))
	ok, over, _ := q.push([]byte("123456789"))
	require.True(t, ok)
	require.False(t, over)
	ok, over, queued := q.push([]byte("xx"))
	require.False(t, ok)
	require.True(t, over)
	require.Equal(t, 10, queued)
	ok, over, _ = q.push([]byte("y"))
	require.False(t, ok)
	require.False(t, over, "cut once")
	_, final, end := q.take()
	require.True(t, end)
	require.Nil(t, final)
}

func TestSendQueueReservations(t *testing.T) {
	q := newSendQueue(10)
	q.welcome([]byte{})
	ok, _, _ := q.reserve(4)
	require.True(t, ok)
	q.push([]byte("ab"))
	total, pending := q.counted()
	require.Equal(t, 6, total)
	require.Equal(t, 2, pending)

	q.pushReserved(frames("c", "def"))
	total, pending = q.counted()
	require.Equal(t, 6, total)
	require.Equal(t, 6, pending)
	batch, _, _ := q.take()
	require.Equal(t, frames("", "ab", "c", "def"), batch)
	q.written(batch)

	ok, _, _ = q.reserve(8)
	require.True(t, ok)
	q.unreserve(8)
	total, _ = q.counted()
	require.Zero(t, total)

	q.reserve(8)
	ok, over, queued := q.reserve(3)
	require.False(t, ok)
	require.True(t, over)
	require.Equal(t, 8, queued)
}

// TestSendQueueConcurrent: producers and a writer at once (run with
// -race); every frame is taken once, in each producer's order, and the
// count returns to zero.
func TestSendQueueConcurrent(t *testing.T) {
	const producers, each = 4, 2000
	q := newSendQueue(1 << 30)
	q.welcome([]byte{0xff})
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range each {
				q.push([]byte{byte(p), byte(i), byte(i >> 8)})
			}
		})
	}
	go func() { wg.Wait(); q.close(nil) }()
	last := map[byte]int{}
	n := 0
	for {
		batch, _, end := q.take()
		if end {
			break
		}
		if len(batch) == 0 {
			<-q.wake
			continue
		}
		for _, f := range batch {
			if len(f) == 1 {
				continue // the welcome
			}
			i := int(f[1]) | int(f[2])<<8
			if prev, ok := last[f[0]]; ok {
				require.Equal(t, prev+1, i)
			}
			last[f[0]] = i
			n++
		}
		q.written(batch)
	}
	require.Equal(t, producers*each, n)
	total, _ := q.counted()
	require.Zero(t, total)
}
