package natsbroker_test

import (
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/natsbroker"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// A server cut from NATS for longer than its publish timeout refuses its
// client's texts as "unavailable", never as lost: the Go client sends each
// again by itself, and once NATS is back it is kept once, in order, and
// delivered to the members of every server.
func TestSendThroughLongOutage(t *testing.T) {
	ns := startNATS(t)
	p := startProxy(t, ns.Addr().String())
	a, _ := newBroker(t, ns)
	b, nc := brokerAt(t, "nats://"+p.addr(), natsbroker.WithPublishTimeout(50*time.Millisecond))
	srvs := serve(t, a, b)
	ana := dial(t, srvs[0], "ana")
	bo := dial(t, srvs[1], "bo")
	require.NoError(t, bo.Send(ctxT(t), "before"))
	require.Equal(t, "before", nextText(t, ana).Text)

	reconnected := nc.StatusChanged(nats.CONNECTED)
	p.cut()
	sent := make(chan error, 1)
	go func() { sent <- bo.Send(ctxT(t), "during") }()
	// Refused at least twice: the client keeps at it.
	eventually(t, func() bool { return srvs[1].Stats().Refusals[garou.CodeUnavailable] >= 2 })
	p.restore()
	<-reconnected
	require.NoError(t, <-sent)
	require.NoError(t, bo.Send(ctxT(t), "after"))
	for i, want := range []string{"during", "after"} {
		m := nextText(t, ana)
		require.Equal(t, want, m.Text)
		require.Equal(t, uint64(2+i), m.Seq)
	}
}
