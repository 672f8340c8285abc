package garou_test

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.DiscardHandler)

// startServer serves on a fresh 127.0.0.1 socket until the test ends.
func startServer(t testing.TB, opts ...garou.ServerOption) *garou.Server {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	srv, err := garou.NewServer(append([]garou.ServerOption{garou.WithLogger(quiet)}, opts...)...)
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(context.Background(), pc) }()
	t.Cleanup(func() {
		require.NoError(t, srv.Close())
		require.NoError(t, <-errc)
		pc.Close()
	})
	addrs[srv] = pc.LocalAddr().String()
	return srv
}

var addrs = map[*garou.Server]string{}

func addrOf(srv *garou.Server) string { return addrs[srv] }

// dial connects name to srv, pinning its certificate, and closes the client
// when the test ends.
func dial(t testing.TB, srv *garou.Server, name string, opts ...garou.ClientOption) *garou.Client {
	t.Helper()
	cli, err := dialErr(t, srv, name, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	return cli
}

func dialErr(t testing.TB, srv *garou.Server, name string, opts ...garou.ClientOption) (*garou.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return garou.Dial(ctx, addrOf(srv), name, append([]garou.ClientOption{garou.WithFingerprint(srv.Fingerprint())}, opts...)...)
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// next returns the next message of one of the given types, skipping others.
func next(t testing.TB, cli *garou.Client, types ...garou.MessageType) garou.ChatMessage {
	t.Helper()
	return nextCtx(t, ctxT(t), cli, types...)
}

// nextCtx is next with the caller's context (in a synctest bubble, where
// time is simulated, a long one).
func nextCtx(t testing.TB, ctx context.Context, cli *garou.Client, types ...garou.MessageType) garou.ChatMessage {
	t.Helper()
	for {
		m, err := cli.Receive(ctx)
		require.NoError(t, err)
		for _, ty := range types {
			if m.Type == ty {
				return m
			}
		}
	}
}
