package promgarou_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/promgarou"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestCollector: a registry scrapes a real server's figures, over QUIC on
// 127.0.0.1, and the collector passes the registry's lint.
func TestCollector(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv, err := garou.NewServer(garou.WithLogger(slog.New(slog.DiscardHandler)))
	require.NoError(t, err)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer pc.Close()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), pc) }()
	defer func() {
		require.NoError(t, srv.Close())
		require.NoError(t, <-served)
	}()
	<-srv.Ready()

	cli, err := garou.Dial(ctx, pc.LocalAddr().String(), "alice", garou.WithFingerprint(srv.Fingerprint()))
	require.NoError(t, err)
	defer cli.Close()
	require.NoError(t, cli.Send(ctx, "counted"))
	_, err = cli.Members(ctx, "nowhere", "") // refused: not_in_room
	require.Error(t, err)

	c := promgarou.NewCollector(srv)
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	problems, err := testutil.CollectAndLint(c)
	require.NoError(t, err)
	require.Empty(t, problems)
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP garou_texts_total Texts sequenced.
# TYPE garou_texts_total counter
garou_texts_total 1
# HELP garou_users Welcomed users.
# TYPE garou_users gauge
garou_users 1
# HELP garou_refusals_total Requests and frames refused, by error code.
# TYPE garou_refusals_total counter
garou_refusals_total{code="not_in_room"} 1
`), "garou_texts_total", "garou_users", "garou_refusals_total"))
}
