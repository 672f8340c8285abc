package garou_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/stretchr/testify/require"
)

// TestAddrOnceReady: a server run with ListenAndServe on port 0 tells its
// address once Ready is closed; Ready is also closed when it cannot serve.
func TestAddrOnceReady(t *testing.T) {
	srv, err := garou.NewServer(garou.WithLogger(quiet), garou.WithAddr("127.0.0.1:0"))
	require.NoError(t, err)
	require.Nil(t, srv.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe(context.Background()) }()
	<-srv.Ready()
	addr, ok := srv.Addr().(*net.UDPAddr)
	require.True(t, ok, "%v", srv.Addr())
	require.NotZero(t, addr.Port)
	c := dial(t, srv, "alice")
	require.Equal(t, "alice", c.User().Name)
	require.NoError(t, srv.Close())
	require.NoError(t, <-errc)

	// The port is taken: ListenAndServe fails, Ready is closed, Addr nil.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer pc.Close()
	taken, err := garou.NewServer(garou.WithLogger(quiet), garou.WithAddr(pc.LocalAddr().String()))
	require.NoError(t, err)
	require.Error(t, taken.ListenAndServe(context.Background()))
	<-taken.Ready()
	require.Nil(t, taken.Addr())

	// Closed before it served: Ready is closed too.
	never, err := garou.NewServer(garou.WithLogger(quiet))
	require.NoError(t, err)
	require.NoError(t, never.Close())
	<-never.Ready()
	require.Nil(t, never.Addr())
}

// TestServeContextEndIsGraceful: ending Serve's context delivers every text
// accepted before, then tells every client the server is shutting down;
// Serve returns nil and nobody can connect any more.
func TestServeContextEndIsGraceful(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, served := serveCtx(t, ctx)
	a := dial(t, srv, "a", garou.WithReconnect(0))
	b := dial(t, srv, "b", garou.WithReconnect(0))
	const n = 50
	var want []string
	for i := range n {
		text := fmt.Sprintf("text %d", i)
		require.NoError(t, a.Send(ctxT(t), text))
		want = append(want, text)
	}
	cancel()
	for _, c := range []*garou.Client{a, b} {
		texts := textsUntilShutdown(t, c)
		require.Equal(t, want, texts)
	}
	require.NoError(t, served())
	_, err := dialErr(t, srv, "late", garou.WithConnectTimeout(300*time.Millisecond))
	require.Error(t, err)
}

// TestServeContextEndIsBounded: a client that neither reads its bye nor
// closes cannot hold the shutdown past the shutdown timeout; it is then
// closed with the shutdown code.
func TestServeContextEndIsBounded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, served := serveCtx(t, ctx, garou.WithShutdownTimeout(100*time.Millisecond))
	m := rawDial(t, srv)
	m.hello("mallory")
	start := time.Now()
	cancel()
	require.NoError(t, served())
	// Without the timeout, the server would linger for the client (5s).
	require.Less(t, time.Since(start), 3*time.Second)
	require.Equal(t, garou.CloseServerShutdown, connClosed(t, m.qc))
}

// gatedHistory holds the Append of the text "held" until gate is closed,
// and with it the room's order, as a slow store would.
type gatedHistory struct {
	garou.HistoryStore
	entered chan struct{}
	gate    chan struct{}
}

func (h *gatedHistory) Append(ctx context.Context, room string, m garou.ChatMessage) error {
	if m.Text == "held" {
		close(h.entered)
		<-h.gate
	}
	return h.HistoryStore.Append(ctx, room, m)
}

// TestPublishHonoursItsContext: a Publish that waits for a room held by a
// slow history store gives up when its context ends, and its text is never
// sequenced.
func TestPublishHonoursItsContext(t *testing.T) {
	h := &gatedHistory{HistoryStore: garou.NewMemoryHistory(10), entered: make(chan struct{}), gate: make(chan struct{})}
	srv := startServer(t, garou.WithHistoryStore(h))
	release := func() {
		select {
		case <-h.gate:
		default:
			close(h.gate)
		}
	}
	t.Cleanup(release) // before the server's cleanup: the room must be free
	alice := dial(t, srv, "alice")

	sent := make(chan error, 1)
	go func() { sent <- alice.Send(ctxT(t), "held") }()
	<-h.entered

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := srv.Publish(ctx, garou.DefaultRoom, "too late")
	require.ErrorIs(t, err, context.DeadlineExceeded)

	release()
	require.NoError(t, <-sent)
	msg, err := srv.Publish(ctxT(t), garou.DefaultRoom, "in time")
	require.NoError(t, err)
	require.Equal(t, uint64(2), msg.Seq)

	got := next(t, alice, garou.TypeText)
	require.Equal(t, "held", got.Text)
	got = next(t, alice, garou.TypeText)
	require.Equal(t, "in time", got.Text)
	require.Nil(t, got.From)
	require.Equal(t, uint64(2), got.Seq)
}

// lineWriter sends each write (one log record each) to a channel.
type lineWriter chan string

func (w lineWriter) Write(p []byte) (int, error) {
	w <- string(p)
	return len(p), nil
}

// TestLogsConnectAndDisconnect: at the default level the server logs where
// it serves once (the fingerprint is the host's to show), and one line per
// client welcomed and per client gone, with who and why.
func TestLogsConnectAndDisconnect(t *testing.T) {
	lines := make(lineWriter, 100)
	log := slog.New(slog.NewTextHandler(lines, nil))
	srv := startServer(t, garou.WithLogger(log))
	alice := dial(t, srv, "alice")
	require.NoError(t, alice.Close())

	var got []string
	for {
		l := <-lines
		got = append(got, l)
		if strings.Contains(l, "garou: disconnected") {
			break
		}
	}
	require.Len(t, got, 3, "%q", got)
	require.Contains(t, got[0], `level=INFO msg="garou: serving" addr=`+addrOf(srv)+"\n")
	require.Contains(t, got[1], `level=INFO msg="garou: welcomed" remote=127.0.0.1:`)
	require.Contains(t, got[1], "user=alice id="+alice.User().ID+" resumed=false")
	require.Contains(t, got[2], `level=INFO msg="garou: disconnected" remote=127.0.0.1:`)
	require.Contains(t, got[2], "user=alice id="+alice.User().ID+" reason=quit")
}

// TestShutdownDeliversATextBeingKept: a text past its checks and waiting
// on the history store when Shutdown begins is delivered and acknowledged
// before the clients are told the server is going.
func TestShutdownDeliversATextBeingKept(t *testing.T) {
	h := &gatedHistory{HistoryStore: garou.NewMemoryHistory(10), entered: make(chan struct{}), gate: make(chan struct{})}
	srv := startServer(t, garou.WithHistoryStore(h))
	alice := dial(t, srv, "alice", garou.WithReconnect(0))
	bob := dial(t, srv, "bob", garou.WithReconnect(0), garou.WithRooms(garou.DefaultRoom, "side"))
	awaitJoin(t, alice, "bob")

	sent := make(chan error, 1)
	go func() { sent <- alice.Send(ctxT(t), "held") }()
	<-h.entered
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(ctxT(t)) }()
	// Wait until the shutdown has begun: another room refuses texts.
	require.Eventually(t, func() bool {
		_, err := srv.Publish(ctxT(t), "side", "probe")
		var e *garou.Error
		return errors.As(err, &e) && e.Code == garou.CodeShutdown
	}, 5*time.Second, time.Millisecond)
	close(h.gate)

	require.NoError(t, <-sent, "the text was accepted: its ack comes before the bye")
	for {
		m := next(t, bob, garou.TypeText)
		if m.Room == garou.DefaultRoom {
			require.Equal(t, "held", m.Text)
			break
		}
	}
	require.NoError(t, <-shut)
}

// forgetCounter counts the rooms a history store is told to forget.
type forgetCounter struct {
	garou.HistoryStore
	forgot chan string
}

func (h *forgetCounter) Forget(ctx context.Context, room string) error {
	h.forgot <- room
	return h.HistoryStore.Forget(ctx, room)
}

// TestShutdownKeepsHistory: a room emptied by its last member leaving is
// forgotten with its history; a room emptied by a shutdown is not, so that
// a durable store serves it to the server's next run.
func TestShutdownKeepsHistory(t *testing.T) {
	h := &forgetCounter{HistoryStore: garou.NewMemoryHistory(10), forgot: make(chan string, 10)}
	srv, _ := serveCtx(t, context.Background(), garou.WithHistoryStore(h))
	alice := dial(t, srv, "alice", garou.WithRooms("brief", "kept"))
	require.NoError(t, alice.Leave(ctxT(t), "brief"))
	require.Equal(t, "brief", <-h.forgot)
	_, err := srv.Publish(ctxT(t), "kept", "still here after a restart")
	require.NoError(t, err)
	require.NoError(t, srv.Shutdown(ctxT(t)))
	require.NoError(t, srv.Close())
	select {
	case room := <-h.forgot:
		t.Fatalf("forgot %q at shutdown", room)
	default:
	}
	msgs, _, err := h.After(ctxT(t), "kept", 0)
	require.NoError(t, err)
	require.Len(t, msgs, 1)
}
