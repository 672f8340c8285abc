package natsbroker_test

import (
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/natsbroker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// The stream deleted and made anew under a running server: the broker's
// epoch changes, welcomes carry the new one, the numbering goes on, and a
// client resuming from before is told a gap of unknown end, not a silent
// resume across two histories.
func TestStreamMadeAnewUnderRunningServer(t *testing.T) {
	ns := startNATS(t)
	b, _ := newBroker(t, ns)
	srv := serve(t, b)[0]
	relay := startRelay(t, srv.Addr().String())
	resumed := make(chan struct{}, 1)
	bo, err := garou.Dial(ctxT(t), relay.pc.LocalAddr().String(), "bo", garou.WithFingerprint(srv.Fingerprint()),
		garou.WithServers(srv.Addr().String()),
		garou.WithKeepAlive(100*time.Millisecond), garou.WithIdleTimeout(time.Second),
		garou.WithReconnectBackoff(time.Millisecond, 10*time.Millisecond),
		garou.WithStateHandler(func(sc garou.StateChange) {
			if sc.State == garou.StateResumed {
				resumed <- struct{}{}
			}
		}))
	require.NoError(t, err)
	t.Cleanup(func() { bo.Close() })
	ana := dial(t, srv, "ana")
	require.NoError(t, ana.Send(ctxT(t), "one"))
	require.Equal(t, "one", nextText(t, bo).Text)
	before := b.Epoch()

	// Deleted, then made anew by another broker (a server starting, or
	// an operator): this broker hears of it.
	nc, err := nats.Connect(ns.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.NoError(t, js.DeleteStream(ctxT(t), natsbroker.DefaultStream))
	other, err := natsbroker.New(ctxT(t), nc)
	require.NoError(t, err)
	require.NoError(t, other.Close())
	eventually(t, func() bool { return b.Epoch() == other.Epoch() })
	require.NotEqual(t, before, b.Epoch())

	// The numbering goes on, never back.
	seq, err := ana.SendTo(ctxT(t), garou.DefaultRoom, "two")
	require.NoError(t, err)
	require.Equal(t, uint64(2), seq)
	require.Equal(t, "two", nextText(t, bo).Text)

	// bo resumes with the epoch of its welcome: a gap of unknown end.
	relay.cut()
	<-resumed
	for {
		m, err := bo.Receive(ctxT(t))
		require.NoError(t, err)
		if m.Type == garou.TypeGap {
			require.Equal(t, garou.DefaultRoom, m.Room)
			break
		}
		require.NotEqual(t, garou.TypeText, m.Type, "a text before the gap: %+v", m)
	}
	require.NoError(t, ana.Send(ctxT(t), "three"))
	m := nextText(t, bo)
	require.Equal(t, "three", m.Text)
	require.Equal(t, uint64(3), m.Seq)
}
