package natsbroker_test

import (
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/natsbroker"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// servedCut serves two servers on one NATS, the second through a proxy
// that can cut it from NATS, with opts; nc is the second's connection.
func servedCut(t *testing.T, opts ...natsbroker.Option) ([]*garou.Server, *proxy, *nats.Conn) {
	t.Helper()
	ns := startNATS(t)
	p := startProxy(t, ns.Addr().String())
	a, _ := newBroker(t, ns)
	b, nc := brokerAt(t, "nats://"+p.addr(), opts...)
	return serve(t, a, b), p, nc
}

// A server cut from NATS for longer than its publish timeout refuses its
// client's texts as "unavailable", never as lost: the Go client sends each
// again by itself, and once NATS is back it is kept once, in order, and
// delivered to the members of every server.
func TestSendThroughLongOutage(t *testing.T) {
	srvs, p, nc := servedCut(t, natsbroker.WithPublishTimeout(50*time.Millisecond))
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

// A direct message from, or to, a user whose server is cut from NATS is
// refused as "unavailable", never as "no such user" (the recipient's name
// is still held): the Go client sends it again by itself, with its key,
// and once NATS is back it is delivered once.
func TestDirectThroughOutage(t *testing.T) {
	srvs, p, nc := servedCut(t)
	ana := dial(t, srvs[0], "ana", garou.WithRooms())
	bo := dial(t, srvs[1], "bo", garou.WithRooms())
	nextDirect := func(cli *garou.Client) string {
		t.Helper()
		m, err := cli.Receive(ctxT(t))
		require.NoError(t, err)
		require.Equal(t, garou.TypeDirect, m.Type)
		return m.Text
	}
	require.NoError(t, bo.SendDirect(ctxT(t), "ana", "before"))
	require.Equal(t, "before", nextDirect(ana))

	reconnected := nc.StatusChanged(nats.CONNECTED)
	p.cut()
	fromBo, toBo := make(chan error, 1), make(chan error, 1)
	go func() { fromBo <- bo.SendDirect(ctxT(t), "ana", "from bo") }()
	go func() { toBo <- ana.SendDirect(ctxT(t), "bo", "to bo") }()
	// Each refused at least twice: the clients keep at it.
	eventually(t, func() bool {
		return srvs[0].Stats().Refusals[garou.CodeUnavailable] >= 2 && srvs[1].Stats().Refusals[garou.CodeUnavailable] >= 2
	})
	p.restore()
	<-reconnected
	require.NoError(t, <-fromBo)
	require.NoError(t, <-toBo)
	require.NoError(t, bo.SendDirect(ctxT(t), "ana", "after"))
	require.NoError(t, ana.SendDirect(ctxT(t), "bo", "after"))
	for _, want := range []string{"from bo", "after"} {
		require.Equal(t, want, nextDirect(ana))
	}
	for _, want := range []string{"to bo", "after"} {
		require.Equal(t, want, nextDirect(bo))
	}
}
