package garou

import (
	"sync"
	"sync/atomic"
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
	batch, _, step := q.take()
	require.Equal(t, stepStop, step)
	require.Empty(t, batch, "nothing goes out before the welcome")

	q.welcome([]byte("welcome"))
	batch, _, step = q.take()
	require.Equal(t, stepWrite, step)
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

	batch, final, step := q.take()
	require.Equal(t, stepWrite, step)
	require.Equal(t, frames("w", "a"), batch)
	require.Nil(t, final)
	q.written(batch)
	_, final, step = q.take()
	require.Equal(t, stepEnd, step)
	require.Equal(t, []byte("bye"), final)
	_, final, step = q.take()
	require.Equal(t, stepEnd, step)
	require.Nil(t, final, "the final frame is written once")
}

func TestSendQueueCloseDuringHandshakeDropsWhatWaits(t *testing.T) {
	q := newSendQueue(100)
	q.push([]byte("joined"))
	q.close([]byte("bye"))
	q.welcome([]byte("w"))
	_, final, step := q.take()
	require.Equal(t, stepEnd, step)
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
	_, final, step := q.take()
	require.Equal(t, stepEnd, step)
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

// TestSendQueueConcurrent: producers and writers at once (run with
// -race). The queue starts a writer when a frame arrives and none runs,
// and a writer ends as soon as it finds the queue empty, so writers come
// and go while the producers push: every frame is still taken once, in
// each producer's order, by one writer at a time, and the count returns to
// zero.
func TestSendQueueConcurrent(t *testing.T) {
	const producers, each = 4, 2000
	q := newSendQueue(1 << 30)
	last := map[byte]int{}
	n, starts := 0, 0
	var running atomic.Int32
	q.start = func() {
		starts++ // each start follows the end of the writer before
		go func() {
			require.Equal(t, int32(1), running.Add(1), "one writer at a time")
			for {
				batch, _, step := q.take()
				switch step {
				case stepStop:
					running.Add(-1)
					return
				case stepEnd:
					running.Add(-1)
					q.exited()
					return
				case stepAgain:
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
		}()
	}
	q.welcome([]byte{0xff})
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range each {
				q.push([]byte{byte(p), byte(i), byte(i >> 8)})
			}
		})
	}
	wg.Wait()
	q.close(nil)
	<-q.done
	require.Equal(t, producers*each, n)
	require.Positive(t, starts)
	total, _ := q.counted()
	require.Zero(t, total)
}

// TestSendQueueSignal: a signal starts a writer when none runs, and makes
// a running writer look again before it ends.
func TestSendQueueSignal(t *testing.T) {
	q := newSendQueue(100)
	starts := 0
	q.start = func() { starts++ }
	q.signal()
	require.Zero(t, starts, "no writer during the handshake")
	q.welcome([]byte("w"))
	require.Equal(t, 1, starts)
	q.signal() // the writer runs: it is told to look again
	require.Equal(t, 1, starts)
	batch, _, step := q.take()
	require.Equal(t, stepWrite, step)
	q.written(batch)
	_, _, step = q.take()
	require.Equal(t, stepAgain, step)
	_, _, step = q.take()
	require.Equal(t, stepStop, step)
	q.signal()
	require.Equal(t, 2, starts, "no writer ran: one is started")
	_, _, step = q.take()
	require.Equal(t, stepStop, step)
	q.push([]byte("a"))
	require.Equal(t, 3, starts)
	q.push([]byte("b"))
	require.Equal(t, 3, starts, "the running writer takes it")
	q.drop()
	select {
	case <-q.done:
		t.Fatal("done while a writer runs")
	default:
	}
	_, _, step = q.take()
	require.Equal(t, stepEnd, step)
	q.exited()
	<-q.done
}
