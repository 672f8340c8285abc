package natsbroker_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/natsbroker"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.DiscardHandler)

// startNATS runs a NATS server with JetStream in the test process, on a
// free port of 127.0.0.1, until the test ends.
func startNATS(t testing.TB) *server.Server {
	return startNATSAt(t, -1, t.TempDir())
}

// startNATSAt is startNATS on port (-1: a free one) with its JetStream
// files in dir.
func startNATSAt(t testing.TB, port int, dir string) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	require.NoError(t, err)
	go ns.Start()
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	require.True(t, ns.ReadyForConnections(10*time.Second), "NATS did not start")
	return ns
}

// newBroker connects to ns, as a server of the service does with its own
// connection, and returns a broker on the stream.
func newBroker(t testing.TB, ns *server.Server, opts ...natsbroker.Option) (*natsbroker.Broker, *nats.Conn) {
	t.Helper()
	return brokerAt(t, ns.ClientURL(), opts...)
}

// brokerAt is newBroker through the NATS URL url. Its connection tries
// again every few milliseconds when cut.
func brokerAt(t testing.TB, url string, opts ...natsbroker.Option) (*natsbroker.Broker, *nats.Conn) {
	t.Helper()
	nc, err := nats.Connect(url, nats.ReconnectWait(5*time.Millisecond), nats.MaxReconnects(-1), nats.ReconnectJitter(0, 0))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	b, err := natsbroker.New(ctxT(t), nc, append([]natsbroker.Option{natsbroker.WithCheckInterval(10 * time.Millisecond)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, b.Close()) })
	return b, nc
}

// nodes starts n Garou servers, each with its own broker on ns, sharing
// one data directory (made by the first), so one certificate: a client
// pins one fingerprint for all.
func nodes(t testing.TB, ns *server.Server, n int) []*garou.Server {
	return wrappedNodes(t, ns, n, nil)
}

// wrappedNodes is nodes with the broker of each server i wrapped by wrap.
func wrappedNodes(t testing.TB, ns *server.Server, n int, wrap func(i int, b garou.Broker) garou.Broker) []*garou.Server {
	srvs, _ := nodesConns(t, ns, n, wrap)
	return srvs
}

// nodesConns is wrappedNodes that returns each server's NATS connection
// too.
func nodesConns(t testing.TB, ns *server.Server, n int, wrap func(i int, b garou.Broker) garou.Broker) ([]*garou.Server, []*nats.Conn) {
	t.Helper()
	brokers := make([]garou.Broker, n)
	conns := make([]*nats.Conn, n)
	for i := range n {
		brokers[i], conns[i] = newBroker(t, ns)
		if wrap != nil {
			brokers[i] = wrap(i, brokers[i])
		}
	}
	return serve(t, brokers...), conns
}

// serve starts a Garou server on each broker, sharing one data directory.
func serve(t testing.TB, brokers ...garou.Broker) []*garou.Server {
	return serveWith(t, nil, brokers...)
}

// serveWith is serve with the options opts after the tests' own.
func serveWith(t testing.TB, opts []garou.ServerOption, brokers ...garou.Broker) []*garou.Server {
	t.Helper()
	dir := t.TempDir()
	var srvs []*garou.Server
	for _, b := range brokers {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		require.NoError(t, err)
		srv, err := garou.NewServer(append([]garou.ServerOption{garou.WithLogger(quiet), garou.WithBroker(b), garou.WithDataDir(dir),
			garou.WithPresenceInterval(0), garou.WithRateLimit(0, 0)}, opts...)...)
		require.NoError(t, err)
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(context.Background(), pc) }()
		// Registered after the broker, so run before it closes: the
		// server stops its rooms with NATS still there.
		t.Cleanup(func() {
			require.NoError(t, srv.Close())
			require.NoError(t, <-errc)
			pc.Close()
		})
		<-srv.Ready()
		srvs = append(srvs, srv)
	}
	return srvs
}

func dial(t testing.TB, srv *garou.Server, name string, opts ...garou.ClientOption) *garou.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, err := garou.Dial(ctx, srv.Addr().String(), name, append([]garou.ClientOption{garou.WithFingerprint(srv.Fingerprint())}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	return cli
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// nextText returns the client's next text, failing on a gap.
func nextText(t *testing.T, cli *garou.Client) garou.ChatMessage {
	t.Helper()
	for {
		m, err := cli.Receive(ctxT(t))
		require.NoError(t, err)
		require.NotEqual(t, garou.TypeGap, m.Type, "a gap: %+v", m)
		if m.Type == garou.TypeText {
			return m
		}
	}
}

// Clients on different servers in one room see one order, numbered 1, 2,
// 3, ... with no hole, while they all send at once.
func TestOneOrderAcrossServers(t *testing.T) {
	ns := startNATS(t)
	srvs := nodes(t, ns, 2)
	cls := []*garou.Client{dial(t, srvs[0], "ana"), dial(t, srvs[1], "bo"), dial(t, srvs[1], "cy")}
	const per = 50
	var wg sync.WaitGroup
	for i, c := range cls {
		wg.Go(func() {
			for k := range per {
				assert.NoError(t, c.Send(ctxT(t), fmt.Sprintf("%d:%d", i, k)))
			}
		})
	}
	orders := make([][]string, len(cls))
	for i, c := range cls {
		wg.Go(func() {
			for n := range len(cls) * per {
				m := nextText(t, c)
				assert.Equal(t, uint64(n+1), m.Seq, "client %d: a hole or a repeat", i)
				orders[i] = append(orders[i], m.Text)
			}
		})
	}
	wg.Wait()
	for i := 1; i < len(orders); i++ {
		require.Equal(t, orders[0], orders[i], "client %d saw another order", i)
	}
	next := map[int]int{}
	for _, s := range orders[0] {
		var from, k int
		_, err := fmt.Sscanf(s, "%d:%d", &from, &k)
		require.NoError(t, err)
		require.Equal(t, next[from], k, "sender %d out of order", from)
		next[from]++
	}
}

// A client whose server goes resumes on the other with exactly what it
// missed: no gap, no repeat, numbered on.
func TestResumeOnAnotherServer(t *testing.T) {
	ns := startNATS(t)
	srvs := nodes(t, ns, 2)
	ana := dial(t, srvs[1], "ana")
	bo := dial(t, srvs[0], "bo", garou.WithServers(srvs[1].Addr().String()), garou.WithReconnectBackoff(time.Millisecond, 10*time.Millisecond))
	for i := range 3 {
		require.NoError(t, ana.Send(ctxT(t), fmt.Sprint("before", i)))
		require.Equal(t, fmt.Sprint("before", i), nextText(t, bo).Text)
	}
	require.NoError(t, srvs[0].Close())
	for i := range 20 {
		require.NoError(t, ana.Send(ctxT(t), fmt.Sprint("after", i)))
	}
	for i := range 20 {
		m := nextText(t, bo)
		require.Equal(t, fmt.Sprint("after", i), m.Text)
		require.Equal(t, uint64(4+i), m.Seq)
	}
	require.NoError(t, bo.Send(ctxT(t), "back"))
	for m := nextText(t, ana); m.Text != "back"; m = nextText(t, ana) {
	}
}

// stallAfterPublish keeps a text, then never answers: its server goes
// before it acknowledges the text.
type stallAfterPublish struct {
	garou.Broker
	kept chan garou.ChatMessage
}

func (b stallAfterPublish) Publish(ctx context.Context, room string, m garou.ChatMessage, key string) (garou.ChatMessage, error) {
	m, err := b.Broker.Publish(ctx, room, m, key)
	if err != nil {
		return m, err
	}
	b.kept <- m
	<-ctx.Done()
	return garou.ChatMessage{}, ctx.Err()
}

// A Send whose server kept the text but went before acknowledging it is
// retried by the client on the other server, and kept once: everyone sees
// it once, with the number it was first given.
func TestSendRetriedOnAnotherServerKeptOnce(t *testing.T) {
	ns := startNATS(t)
	kept := make(chan garou.ChatMessage, 1)
	srvs := wrappedNodes(t, ns, 2, func(i int, b garou.Broker) garou.Broker {
		if i == 0 {
			return stallAfterPublish{b, kept}
		}
		return b
	})
	ana := dial(t, srvs[1], "ana")
	bo := dial(t, srvs[0], "bo", garou.WithServers(srvs[1].Addr().String()), garou.WithReconnectBackoff(time.Millisecond, 10*time.Millisecond))
	sent := make(chan error, 1)
	go func() { sent <- bo.Send(ctxT(t), "once") }()
	first := <-kept
	require.NoError(t, srvs[0].Close())
	require.NoError(t, <-sent)
	require.NoError(t, ana.Send(ctxT(t), "then"))
	m := nextText(t, ana)
	require.Equal(t, "once", m.Text)
	require.Equal(t, first.Seq, m.Seq)
	require.Equal(t, first.ID, m.ID)
	m = nextText(t, ana)
	require.Equal(t, "then", m.Text)
	require.Equal(t, first.Seq+1, m.Seq)
}

// A text published twice with one key, on two servers' brokers, is kept
// once: the second Publish returns the first's number and ID.
func TestRetryOnAnotherServerStoredOnce(t *testing.T) {
	ns := startNATS(t)
	b1, _ := newBroker(t, ns)
	b2, nc2 := newBroker(t, ns)
	from := &garou.User{ID: "u1", Name: "ana"}
	text := func(id string) garou.ChatMessage {
		return garou.ChatMessage{Type: garou.TypeText, Room: "r", ID: id, From: from, Text: "hello", Time: time.Now().UTC()}
	}
	first, err := b1.Publish(ctxT(t), "r", text("a-1"), "u1\x00k1")
	require.NoError(t, err)
	require.Equal(t, uint64(1), first.Seq)
	again, err := b2.Publish(ctxT(t), "r", text("b-1"), "u1\x00k1")
	require.NoError(t, err)
	require.Equal(t, first.Seq, again.Seq)
	require.Equal(t, "a-1", again.ID)
	other, err := b2.Publish(ctxT(t), "r", text("b-2"), "u1\x00k2")
	require.NoError(t, err)
	require.Equal(t, uint64(2), other.Seq)

	js, err := jetstream.New(nc2)
	require.NoError(t, err)
	s, err := js.Stream(ctxT(t), natsbroker.DefaultStream)
	require.NoError(t, err)
	info, err := s.Info(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, uint64(2), info.State.Msgs, "the retry was stored")
	msgs, oldest, err := b1.After(ctxT(t), "r", 0)
	require.NoError(t, err)
	require.Equal(t, uint64(1), oldest)
	require.Len(t, msgs, 2)
	require.Equal(t, []string{"a-1", "b-2"}, []string{msgs[0].ID, msgs[1].ID})
}

// Two brokers publishing to one room at once number it densely, and a
// read returns it whole, in batches.
func TestConcurrentPublishDense(t *testing.T) {
	ns := startNATS(t)
	b1, _ := newBroker(t, ns)
	b2, _ := newBroker(t, ns)
	const per = 300
	var wg sync.WaitGroup
	for i, b := range []*natsbroker.Broker{b1, b2} {
		wg.Go(func() {
			for k := range per {
				_, err := b.Publish(ctxT(t), "room one", garou.ChatMessage{Type: garou.TypeText, ID: fmt.Sprintf("%d-%d", i, k), Text: "x", Time: time.Now().UTC()}, "")
				assert.NoError(t, err)
			}
		})
	}
	wg.Wait()
	var all []garou.ChatMessage
	for seq := uint64(0); ; {
		msgs, _, err := b2.After(ctxT(t), "room one", seq)
		require.NoError(t, err)
		if len(msgs) == 0 {
			break
		}
		all = append(all, msgs...)
		seq = msgs[len(msgs)-1].Seq
	}
	require.Len(t, all, 2*per)
	for i, m := range all {
		require.Equal(t, uint64(i+1), m.Seq)
	}
}

// A server cut from NATS for a while misses texts said on another; once
// back, it reads them, and its clients get every one, in order, with no
// gap.
func TestServerCutFromNATSBackfills(t *testing.T) {
	ns := startNATS(t)
	p := startProxy(t, ns.Addr().String())
	b1, nc1 := brokerAt(t, "nats://"+p.addr())
	b2, _ := newBroker(t, ns)
	srvs := serve(t, b1, b2)
	bo := dial(t, srvs[0], "bo")
	ana := dial(t, srvs[1], "ana")
	for i := range 2 {
		require.NoError(t, ana.Send(ctxT(t), fmt.Sprint("before", i)))
		require.Equal(t, fmt.Sprint("before", i), nextText(t, bo).Text)
	}
	reconnected := nc1.StatusChanged(nats.CONNECTED)
	p.cut()
	for i := range 5 {
		require.NoError(t, ana.Send(ctxT(t), fmt.Sprint("during", i)))
	}
	p.restore()
	<-reconnected
	for i := range 5 {
		m := nextText(t, bo)
		require.Equal(t, fmt.Sprint("during", i), m.Text)
		require.Equal(t, uint64(3+i), m.Seq)
	}
}

// proxy forwards TCP connections to a NATS server, and can cut them.
type proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
}

func startProxy(t testing.TB, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{ln: ln, target: target, conns: make(map[net.Conn]struct{})}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[u] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() { pipe(u, c) })
		p.wg.Go(func() { pipe(c, u) })
	}
}

func pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// cut closes every connection and refuses new ones until restore.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *proxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// A direct message reaches its user on another server; one to a user on
// no server is refused as for one server.
func TestDirectAcrossServers(t *testing.T) {
	ns := startNATS(t)
	srvs := nodes(t, ns, 2)
	ana := dial(t, srvs[0], "ana", garou.WithRooms())
	bo := dial(t, srvs[1], "Bo", garou.WithRooms())
	require.NoError(t, ana.SendDirect(ctxT(t), "bo", "psst"))
	m, err := bo.Receive(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, garou.TypeDirect, m.Type)
	require.Equal(t, "psst", m.Text)
	require.Equal(t, "ana", m.From.Name)
	err = ana.SendDirect(ctxT(t), "cy", "anyone?")
	var e *garou.Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, garou.CodeNoSuchUser, e.Code)
}

// Kick and Publish work from a server the user, or the room's members,
// are not on.
func TestKickAndPublishFromAnyServer(t *testing.T) {
	ns := startNATS(t)
	srvs := nodes(t, ns, 2)
	bo := dial(t, srvs[1], "bo", garou.WithRooms("far"))
	msg, err := srvs[0].Publish(ctxT(t), "far", "news")
	require.NoError(t, err)
	require.Equal(t, uint64(1), msg.Seq)
	m := nextText(t, bo)
	require.Equal(t, "news", m.Text)
	require.Nil(t, m.From)
	require.Equal(t, uint64(1), m.Seq)

	require.ErrorIs(t, srvs[0].Kick("cy", "no"), garou.ErrNoSuchUser)
	require.NoError(t, srvs[0].Kick("bo", "enough"))
	for {
		_, err := bo.Receive(ctxT(t))
		if err != nil {
			code, ok := garou.CloseCodeOf(err)
			require.True(t, ok, "%v", err)
			require.Equal(t, garou.CloseKicked, code)
			return
		}
	}
}

// NATS restarts: with its files kept, the servers number on and their
// clients miss nothing; with everything lost (a memory stream), the
// numbering still never goes back, and a server started afterwards opens
// the room where it is.
func TestNATSRestart(t *testing.T) {
	for _, keep := range []bool{true, false} {
		t.Run(map[bool]string{true: "files", false: "lost"}[keep], func(t *testing.T) {
			dir := t.TempDir()
			ns := startNATSAt(t, -1, dir)
			port := ns.Addr().(*net.TCPAddr).Port
			srvs, conns := nodesConns(t, ns, 2, nil)
			bo := dial(t, srvs[0], "bo")
			ana := dial(t, srvs[1], "ana")
			for i := range 3 {
				require.NoError(t, ana.Send(ctxT(t), fmt.Sprint("before", i)))
				require.Equal(t, fmt.Sprint("before", i), nextText(t, bo).Text)
			}
			var back []<-chan nats.Status
			for _, nc := range conns {
				back = append(back, nc.StatusChanged(nats.CONNECTED))
			}
			ns.Shutdown()
			ns.WaitForShutdown()
			if !keep {
				dir = t.TempDir()
			}
			ns = startNATSAt(t, port, dir)
			for _, c := range back {
				<-c
			}
			seq, err := ana.SendTo(ctxT(t), garou.DefaultRoom, "after")
			require.NoError(t, err)
			require.Equal(t, uint64(4), seq)
			m := nextText(t, bo)
			require.Equal(t, "after", m.Text)
			require.Equal(t, uint64(4), m.Seq)

			// A server made now opens the room at 4, with what is kept.
			late := nodes(t, ns, 1)[0]
			cy := dial(t, late, "cy", garou.WithRooms())
			_, err = cy.Join(ctxT(t), garou.DefaultRoom, 10)
			require.NoError(t, err)
			want := []string{"before0", "before1", "before2", "after"}
			if !keep {
				want = want[3:]
			}
			for i, w := range want {
				m := nextText(t, cy)
				require.Equal(t, w, m.Text)
				require.Equal(t, uint64(5-len(want)+i), m.Seq)
			}
		})
	}
}

// A server goes down in the middle of a burst: its clients move to the
// other server, and every acknowledged text is delivered to every client
// once, in one order, numbered in that order, with no gap.
func TestServerDownMidBurst(t *testing.T) {
	ns := startNATS(t)
	srvs := nodes(t, ns, 2)
	failover := []garou.ClientOption{garou.WithServers(srvs[1].Addr().String()), garou.WithReconnectBackoff(time.Millisecond, 10*time.Millisecond)}
	cls := []*garou.Client{
		dial(t, srvs[0], "s0", failover...),
		dial(t, srvs[0], "s1", failover...),
		dial(t, srvs[1], "s2"),
	}
	const per = 100
	var wg sync.WaitGroup
	for i, c := range cls {
		wg.Go(func() {
			for k := range per {
				assert.NoError(t, c.Send(ctxT(t), fmt.Sprintf("%d:%d", i, k)))
			}
		})
	}
	half := make(chan struct{})
	orders := make([][]string, len(cls))
	for i, c := range cls {
		wg.Go(func() {
			var last uint64
			for n := range len(cls) * per {
				m := nextText(t, c)
				// A number may hold no text (a retry of a text kept
				// before, in the slot it was given): skipped, with
				// nothing missed; a text missed is a gap, which
				// nextText fails on.
				if !assert.Greater(t, m.Seq, last, "client %d: a repeat", i) {
					return
				}
				last = m.Seq
				orders[i] = append(orders[i], m.Text)
				if i == 2 && n == len(cls)*per/2 {
					close(half)
				}
			}
		})
	}
	<-half
	require.NoError(t, srvs[0].Close())
	wg.Wait()
	for i := 1; i < len(orders); i++ {
		require.Equal(t, orders[0], orders[i], "client %d saw another order", i)
	}
	// Each text once, each sender's in the order sent.
	next := map[int]int{}
	for _, s := range orders[0] {
		var from, k int
		_, err := fmt.Sscanf(s, "%d:%d", &from, &k)
		require.NoError(t, err)
		require.Equal(t, next[from], k, "sender %d: a text repeated, lost or out of order", from)
		next[from]++
	}
}

// startCluster runs a cluster of three NATS servers with JetStream in the
// test process, and returns once it has elected its JetStream leader.
func startCluster(t testing.TB) []*server.Server {
	t.Helper()
	var ports []string
	for range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		ports = append(ports, fmt.Sprint(ln.Addr().(*net.TCPAddr).Port))
		ln.Close()
	}
	routes := server.RoutesFromStr("nats://127.0.0.1:" + strings.Join(ports, ",nats://127.0.0.1:"))
	var nss []*server.Server
	for i := range 3 {
		port, _ := strconv.Atoi(ports[i])
		ns, err := server.NewServer(&server.Options{
			ServerName: fmt.Sprint("n", i), Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
			NoLog: true, NoSigs: true, Routes: routes,
			Cluster: server.ClusterOpts{Name: "garou", Host: "127.0.0.1", Port: port},
		})
		require.NoError(t, err)
		go ns.Start()
		t.Cleanup(func() {
			ns.Shutdown()
			ns.WaitForShutdown()
		})
		nss = append(nss, ns)
	}
	for _, ns := range nss {
		require.True(t, ns.ReadyForConnections(10*time.Second), "NATS did not start")
	}
	eventually(t, func() bool {
		for _, ns := range nss {
			if ns.JetStreamIsLeader() {
				return true
			}
		}
		return false
	})
	return nss
}

// eventually waits, at most 10 s, until cond holds, checking it every 10 ms:
// for what NATS does in its own time (electing a leader), with no event to
// wait on.
func eventually(t testing.TB, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatal("condition not met within 10 s")
		}
	}
}

// A 3-server NATS cluster loses the leader of the stream (replicated on
// all three) in the middle of a burst: every text is kept once, and every
// client gets every text once, in one order, numbered in that order, with
// no gap.
func TestClusterLosesStreamLeaderMidBurst(t *testing.T) {
	nss := startCluster(t)
	var urls []string
	for _, ns := range nss {
		urls = append(urls, ns.ClientURL())
	}
	var brokers []garou.Broker
	for range 2 {
		var b *natsbroker.Broker
		// The stream can be made once the cluster has its JetStream
		// leader; its servers may take a moment more to agree.
		eventually(t, func() bool {
			nc, err := nats.Connect(strings.Join(urls, ","), nats.ReconnectWait(5*time.Millisecond), nats.MaxReconnects(-1))
			require.NoError(t, err)
			b, err = natsbroker.New(ctxT(t), nc, natsbroker.WithReplicas(3), natsbroker.WithCheckInterval(10*time.Millisecond))
			if err != nil {
				nc.Close()
				return false
			}
			t.Cleanup(nc.Close)
			t.Cleanup(func() { require.NoError(t, b.Close()) })
			return true
		})
		brokers = append(brokers, b)
	}
	srvs := serve(t, brokers...)
	cls := []*garou.Client{dial(t, srvs[0], "s0"), dial(t, srvs[1], "s1"), dial(t, srvs[1], "s2")}
	const per = 100
	var wg sync.WaitGroup
	for i, c := range cls {
		wg.Go(func() {
			for k := range per {
				assert.NoError(t, c.Send(ctxT(t), fmt.Sprintf("%d:%d", i, k)))
			}
		})
	}
	half := make(chan struct{})
	orders := make([][]string, len(cls))
	for i, c := range cls {
		wg.Go(func() {
			var last uint64
			for n := range len(cls) * per {
				m := nextText(t, c)
				// A number may hold no text (a retry of a text kept
				// before, in the slot it was given): skipped, with
				// nothing missed; a text missed is a gap, which
				// nextText fails on.
				if !assert.Greater(t, m.Seq, last, "client %d: a repeat", i) {
					return
				}
				last = m.Seq
				orders[i] = append(orders[i], m.Text)
				if i == 0 && n == len(cls)*per/3 {
					close(half)
				}
			}
		})
	}
	<-half
	nc, err := nats.Connect(strings.Join(urls, ","))
	require.NoError(t, err)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	s, err := js.Stream(ctxT(t), natsbroker.DefaultStream)
	require.NoError(t, err)
	info, err := s.Info(ctxT(t))
	require.NoError(t, err)
	nc.Close()
	require.NotNil(t, info.Cluster)
	for _, ns := range nss {
		if ns.Name() == info.Cluster.Leader {
			ns.Shutdown()
		}
	}
	wg.Wait()
	for i := 1; i < len(orders); i++ {
		require.Equal(t, orders[0], orders[i], "client %d saw another order", i)
	}
	next := map[int]int{}
	for _, s := range orders[0] {
		var from, k int
		_, err := fmt.Sscanf(s, "%d:%d", &from, &k)
		require.NoError(t, err)
		require.Equal(t, next[from], k, "sender %d: a text repeated, lost or out of order", from)
		next[from]++
	}
}

// A name online on one server is taken on the others.
func TestNameTakenAcrossServers(t *testing.T) {
	ns := startNATS(t)
	srvs := nodes(t, ns, 2)
	dial(t, srvs[0], "ana")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := garou.Dial(ctx, srvs[1].Addr().String(), "ANA", garou.WithFingerprint(srvs[1].Fingerprint()))
	code, ok := garou.CloseCodeOf(err)
	require.True(t, ok, "%v", err)
	require.Equal(t, garou.CloseNameTaken, code)
}

// A client whose path to its server breaks moves to another server with
// its session: the name check lets it through (ending its connection on
// the server it left, if that one has not noticed yet), and its direct
// messages follow it.
func TestMovedClientTakesItsNameAlong(t *testing.T) {
	ns := startNATS(t)
	srvs := nodes(t, ns, 2)
	relay := startRelay(t, srvs[0].Addr().String())
	resumed := make(chan struct{}, 1)
	bo, err := garou.Dial(ctxT(t), relay.pc.LocalAddr().String(), "bo", garou.WithFingerprint(srvs[0].Fingerprint()),
		garou.WithServers(srvs[1].Addr().String()), garou.WithRooms(),
		garou.WithKeepAlive(100*time.Millisecond), garou.WithIdleTimeout(time.Second),
		garou.WithReconnectBackoff(time.Millisecond, 10*time.Millisecond),
		garou.WithStateHandler(func(sc garou.StateChange) {
			if sc.State == garou.StateResumed {
				resumed <- struct{}{}
			}
		}))
	require.NoError(t, err)
	t.Cleanup(func() { bo.Close() })
	ana := dial(t, srvs[0], "ana", garou.WithRooms())
	require.NoError(t, ana.SendDirect(ctxT(t), "bo", "one"))
	require.Equal(t, "one", nextDirect(t, bo).Text)

	relay.cut()
	<-resumed
	// The server bo left ends its connection there: ana is its only
	// user (its Users lists bo still, on the other server).
	eventually(t, func() bool { return srvs[0].Stats().Users == 1 })
	require.NoError(t, ana.SendDirect(ctxT(t), "bo", "two"))
	require.Equal(t, "two", nextDirect(t, bo).Text)
}

func nextDirect(t testing.TB, cli *garou.Client) garou.ChatMessage {
	t.Helper()
	for {
		m, err := cli.Receive(ctxT(t))
		require.NoError(t, err)
		if m.Type == garou.TypeDirect {
			return m
		}
	}
}

// udpRelay forwards one client's UDP datagrams to a server and back, and
// can stop forwarding: the path breaks with neither end told.
type udpRelay struct {
	pc     net.PacketConn
	up     *net.UDPConn
	client atomic.Pointer[net.Addr]
	down   atomic.Bool
	wg     sync.WaitGroup
}

func startRelay(t testing.TB, target string) *udpRelay {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	raddr, err := net.ResolveUDPAddr("udp", target)
	require.NoError(t, err)
	up, err := net.DialUDP("udp", nil, raddr)
	require.NoError(t, err)
	r := &udpRelay{pc: pc, up: up}
	r.wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			r.client.Store(&addr)
			if !r.down.Load() {
				_, _ = up.Write(buf[:n])
			}
		}
	})
	r.wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			n, err := up.Read(buf)
			if err != nil {
				return
			}
			if a := r.client.Load(); a != nil && !r.down.Load() {
				_, _ = pc.WriteTo(buf[:n], *a)
			}
		}
	})
	t.Cleanup(func() {
		pc.Close()
		up.Close()
		r.wg.Wait()
	})
	return r
}

func (r *udpRelay) cut() { r.down.Store(true) }
