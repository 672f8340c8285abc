package garou_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/garou-chat/garou"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/testutils/simnet"
	"github.com/stretchr/testify/require"
)

// simServer runs a server on a simulated network inside a synctest bubble,
// so that timeouts of minutes pass in no real time. It returns the server's
// address and a function making client sockets.
func simServer(t *testing.T, opts ...garou.ServerOption) (*garou.Server, string, func(ctx context.Context) (net.PacketConn, error)) {
	t.Helper()
	n := &simnet.Simnet{Router: &simnet.PerfectRouter{}}
	link := simnet.NodeBiDiLinkSettings{Latency: time.Millisecond}
	srvAddr := &net.UDPAddr{IP: net.ParseIP("10.0.0.1"), Port: 4433}
	spc := n.NewEndpoint(srvAddr, link)
	// Endpoints must exist before the network starts: make a few for
	// clients, handed out in turn.
	var clientConns []net.PacketConn
	for i := range 8 {
		clientConns = append(clientConns, n.NewEndpoint(&net.UDPAddr{IP: net.ParseIP("10.0.0.2"), Port: 10000 + i}, link))
	}
	require.NoError(t, n.Start())
	srv, err := garou.NewServer(append([]garou.ServerOption{garou.WithLogger(quiet)}, opts...)...)
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(context.Background(), spc) }()
	t.Cleanup(func() {
		require.NoError(t, srv.Close())
		require.NoError(t, <-errc)
		for _, c := range clientConns {
			c.Close()
		}
		spc.Close()
		n.Close()
	})
	used := 0
	return srv, srvAddr.String(), func(context.Context) (net.PacketConn, error) {
		if used == len(clientConns) {
			return nil, errors.New("no simulated endpoint left")
		}
		used++
		return clientConns[used-1], nil
	}
}

func simDial(t *testing.T, srv *garou.Server, addr string, sock func(context.Context) (net.PacketConn, error), name string, opts ...garou.ClientOption) *garou.Client {
	t.Helper()
	cli, err := garou.Dial(context.Background(), addr, name, append([]garou.ClientOption{
		garou.WithFingerprint(srv.Fingerprint()), garou.WithPacketConn(sock), garou.WithReconnect(0),
	}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	return cli
}

// TestIdleTimeoutApplied shows the server's idle timeout in quic.Config: a
// client that sends nothing (no keep-alive) is dropped after it, and its
// leave is told with reason "timeout"; a client with keep-alives stays.
func TestIdleTimeoutApplied(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const idle = 90 * time.Second
		srv, addr, sock := simServer(t, garou.WithIdleTimeout(idle))
		watcher := simDial(t, srv, addr, sock, "watcher", garou.WithKeepAlive(20*time.Second), garou.WithIdleTimeout(time.Hour))
		start := time.Now()
		silent := simDial(t, srv, addr, sock, "silent", garou.WithKeepAlive(0), garou.WithIdleTimeout(time.Hour))
		require.Equal(t, "silent", nextCtx(t, context.Background(), watcher, garou.TypeJoin).User.Name)

		m := nextCtx(t, context.Background(), watcher, garou.TypeLeave)
		took := time.Since(start)
		require.Equal(t, "silent", m.User.Name)
		require.Equal(t, "timeout", m.Reason)
		require.GreaterOrEqual(t, took, idle)
		require.Less(t, took, idle+5*time.Second)

		_, err := silent.Receive(context.Background())
		require.Error(t, err)
		// The watcher, kept alive, is still there long after.
		time.Sleep(10 * idle) // simulated time: advances the bubble's clock
		require.Equal(t, []string{"watcher"}, names(srv.Users()))
	})
}

// TestKeepAliveKeepsQuietClientConnected shows the client's keep-alive in
// quic.Config: a client that says nothing for ten minutes stays connected
// to a server with a 30 s idle timeout.
func TestKeepAliveKeepsQuietClientConnected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, addr, sock := simServer(t, garou.WithIdleTimeout(30*time.Second))
		quiet := simDial(t, srv, addr, sock, "quiet", garou.WithKeepAlive(10*time.Second))
		time.Sleep(10 * time.Minute)
		require.Equal(t, []string{"quiet"}, names(srv.Users()))
		require.NoError(t, quiet.Send(context.Background(), "still here"))
		require.Equal(t, "still here", nextCtx(t, context.Background(), quiet, garou.TypeText).Text)
	})
}

// TestHandshakeDeadline: a connection that never opens its stream, or
// opens it and never says hello, is closed at the handshake deadline with
// CloseHandshakeTimeout, and its handshake slot is freed.
func TestHandshakeDeadline(t *testing.T) {
	for _, openStream := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			const deadline = 3 * time.Second
			srv, addr, sock := simServer(t, garou.WithHandshakeTimeout(deadline), garou.WithMaxHandshakes(1))
			pc, err := sock(context.Background())
			require.NoError(t, err)
			raddr, err := net.ResolveUDPAddr("udp", addr)
			require.NoError(t, err)
			tr := &quic.Transport{Conn: pc}
			defer tr.Close()
			start := time.Now()
			qc, err := tr.Dial(context.Background(), raddr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{garou.ALPN}}, nil)
			require.NoError(t, err)
			if openStream {
				str, err := qc.OpenStreamSync(context.Background())
				require.NoError(t, err)
				_, err = str.Write([]byte{0}) // a partial length prefix, then nothing
				require.NoError(t, err)
				// The server says why before closing: a "bye" frame.
				body, err := io.ReadAll(str)
				require.NoError(t, err)
				require.InDelta(t, deadline.Seconds(), time.Since(start).Seconds(), 0.1)
				require.Contains(t, string(body), `"code":"handshake_timeout"`)
			}
			<-qc.Context().Done()
			// At the deadline, or after the linger when the stream was open.
			require.LessOrEqual(t, time.Since(start), deadline+6*time.Second)
			require.GreaterOrEqual(t, time.Since(start), deadline)
			code, ok := garou.CloseCodeOf(context.Cause(qc.Context()))
			require.True(t, ok, "%v", context.Cause(qc.Context()))
			require.Equal(t, garou.CloseHandshakeTimeout, code)
			// The slot is free again: a real client gets in.
			cli := simDial(t, srv, addr, sock, "after")
			require.Equal(t, "after", cli.User().Name)
		})
	}
}
