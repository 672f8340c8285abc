package garou_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSlowConsumerIsCutAndDelaysNoOne: one client stops reading in the
// middle of a burst. Everyone else still receives everything; the slow
// one is disconnected with CloseSlowConsumer and its leave is told.
func TestSlowConsumerIsCutAndDelaysNoOne(t *testing.T) {
	const senders, perSender = 3, 1500
	text := strings.Repeat("x", 1000)
	srv := startServer(t, garou.WithRateLimit(0, 0), garou.WithSendQueueBytes(1<<20))
	// A receive buffer of one message: once the test stops calling
	// Receive, the client stops reading its stream.
	slow := dial(t, srv, "slow", garou.WithReceiveBuffer(1), garou.WithReconnect(0))
	readers := make([]*garou.Client, senders)
	for i := range readers {
		readers[i] = dial(t, srv, fmt.Sprintf("r%d", i))
	}
	var wg sync.WaitGroup
	for i, c := range readers {
		wg.Go(func() {
			for k := range perSender {
				if !assert.NoError(t, c.Send(ctxT(t), fmt.Sprintf("%d:%d:%s", i, k, text))) {
					return
				}
			}
		})
	}
	sawLeave := make([]bool, senders)
	for i, c := range readers {
		wg.Go(func() {
			n := 0
			for n < senders*perSender || !sawLeave[i] {
				m := next(t, c, garou.TypeText, garou.TypeLeave)
				switch m.Type {
				case garou.TypeText:
					n++
				case garou.TypeLeave:
					assert.Equal(t, "slow", m.User.Name)
					assert.Equal(t, "slow", m.Reason)
					assert.False(t, sawLeave[i], "leave told twice")
					sawLeave[i] = true
				}
			}
		})
	}
	wg.Wait()
	// The slow client, reading again, finds its buffered messages, then
	// the reason it was cut.
	for {
		_, err := slow.Receive(ctxT(t))
		if err != nil {
			code, ok := garou.CloseCodeOf(err)
			require.True(t, ok, "%v", err)
			require.Equal(t, garou.CloseSlowConsumer, code)
			break
		}
	}
	require.NotContains(t, names(srv.Users()), "slow")
}

// TestSendHonoursItsContextWhenTheServerReadsSlowly: a server that stops
// reading (here, a message filter stuck on this user) cannot hold Send
// past its context, even once QUIC flow control blocks the stream.
func TestSendHonoursItsContextWhenTheServerReadsSlowly(t *testing.T) {
	release := make(chan struct{})
	srv := startServer(t, garou.WithRateLimit(0, 0), garou.WithMessageFilter(func(ctx context.Context, m garou.Incoming) (string, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return m.Text, nil
	}))
	defer close(release)
	c := dial(t, srv, "stuck", garou.WithReconnect(0))
	big := strings.Repeat("x", 60<<10)
	// Fill the server's receive window: these sends wait for acks that do
	// not come, and some of them block on flow control.
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); wg.Wait() }()
	for range 60 {
		wg.Go(func() { _ = c.Send(ctx, big) })
	}
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	start := time.Now()
	err := c.Send(short, big)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 5*time.Second)
}
