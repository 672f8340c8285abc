package garou_test

import (
	"context"
	"net"
	"sync"
	"testing"

	"github.com/garou-chat/garou"
	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/require"
)

// quicTransport is a connection of a QUIC listener of the test's own,
// served through Server.ServeTransport: a Transport over real QUIC.
type quicTransport struct{ qc *quic.Conn }

func (q quicTransport) Context() context.Context { return q.qc.Context() }
func (q quicTransport) RemoteAddr() net.Addr     { return q.qc.RemoteAddr() }

func (q quicTransport) AcceptStream(ctx context.Context) (garou.Stream, error) {
	str, err := q.qc.AcceptStream(ctx)
	if err != nil {
		return nil, err
	}
	return str, nil
}

func (q quicTransport) OpenStream(ctx context.Context) (garou.SendStream, error) {
	str, err := q.qc.OpenUniStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	return str, nil
}

func (q quicTransport) CloseWithError(code garou.CloseCode, text string) error {
	return q.qc.CloseWithError(quic.ApplicationErrorCode(code), text)
}

// quicDatagramTransport is a quicTransport with its datagrams.
type quicDatagramTransport struct{ quicTransport }

func (q quicDatagramTransport) SendDatagram(b []byte) error { return q.qc.SendDatagram(b) }

// serveTransports serves the connections of a listener of its own through
// srv.ServeTransport, as DatagramTransports if datagrams, and returns a
// raw client of it.
func serveTransports(t *testing.T, srv *garou.Server, datagrams bool) *rawClient {
	t.Helper()
	tlsConf, _ := devCert(t)
	tlsConf.NextProtos = []string{garou.ALPN}
	ln, err := quic.ListenAddr("127.0.0.1:0", tlsConf, &quic.Config{EnableDatagrams: true})
	require.NoError(t, err)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			qc, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			var tr garou.Transport = quicTransport{qc}
			if datagrams {
				tr = quicDatagramTransport{quicTransport{qc}}
			}
			wg.Go(func() { _ = srv.ServeTransport(context.Background(), tr) })
		}
	})
	ctx := ctxT(t)
	qc, err := quic.DialAddr(ctx, ln.Addr().String(), rawTLS(), &quic.Config{EnableDatagrams: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = qc.CloseWithError(0, "test over") })
	st, err := qc.OpenStreamSync(ctx)
	require.NoError(t, err)
	return &rawClient{t: t, qc: qc, st: st}
}

// TestServeTransportDatagrams: a DatagramTransport's client gets typing as
// datagrams, as a QUIC client does; a Transport without datagrams gets it
// on the room's stream.
func TestServeTransportDatagrams(t *testing.T) {
	for _, datagrams := range []bool{true, false} {
		name := map[bool]string{true: "DatagramTransport", false: "Transport"}[datagrams]
		t.Run(name, func(t *testing.T) {
			srv := startServer(t)
			r := serveTransports(t, srv, datagrams)
			r.hello("dave")
			carol := dial(t, srv, "carol")
			r.expect("presence") // carol joined
			require.NoError(t, carol.Typing(ctxT(t), garou.DefaultRoom))
			if datagrams {
				b, err := r.qc.ReceiveDatagram(ctxT(t))
				require.NoError(t, err)
				require.Contains(t, string(b), `"type":"typing"`)
				require.Contains(t, string(b), `"carol"`)
				return
			}
			f := r.expect("typing")
			require.Equal(t, garou.DefaultRoom, f.str("room"))
		})
	}
}
