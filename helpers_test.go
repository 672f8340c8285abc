package garou_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.DiscardHandler)

// startServer serves on a fresh 127.0.0.1 socket until the test ends.
func startServer(t testing.TB, opts ...garou.ServerOption) *garou.Server {
	t.Helper()
	srv, _ := serveCtx(t, context.Background(), opts...)
	return srv
}

// serveCtx serves on a fresh 127.0.0.1 socket until ctx ends or the test
// ends, and returns once the server accepts connections; served waits for
// Serve's result.
func serveCtx(t testing.TB, ctx context.Context, opts ...garou.ServerOption) (srv *garou.Server, served func() error) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	srv, err = garou.NewServer(append([]garou.ServerOption{garou.WithLogger(quiet)}, opts...)...)
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ctx, pc) }()
	served = sync.OnceValue(func() error { return <-errc })
	t.Cleanup(func() {
		require.NoError(t, srv.Close())
		require.NoError(t, served())
		pc.Close()
	})
	<-srv.Ready()
	require.NotNil(t, srv.Addr())
	return srv, served
}

// addrOf is the address clients dial to reach srv.
func addrOf(srv *garou.Server) string {
	<-srv.Ready()
	return srv.Addr().String()
}

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

// chatAll has every client send perClient texts "i:k" concurrently and
// returns, per client, the texts it received in order, once every client
// has received all of them. A text received twice fails the test.
func chatAll(t *testing.T, cls []*garou.Client, perClient int) [][]string {
	t.Helper()
	var wg sync.WaitGroup
	for i, c := range cls {
		wg.Go(func() {
			for k := range perClient {
				assert.NoError(t, c.Send(ctxT(t), fmt.Sprintf("%d:%d", i, k)))
			}
		})
	}
	orders := make([][]string, len(cls))
	for i, c := range cls {
		wg.Go(func() {
			seen := map[string]bool{}
			for len(orders[i]) < len(cls)*perClient {
				m, err := c.Receive(ctxT(t))
				if !assert.NoError(t, err) {
					return
				}
				if m.Type != garou.TypeText {
					continue
				}
				assert.False(t, seen[m.Text], "duplicate %q", m.Text)
				seen[m.Text] = true
				orders[i] = append(orders[i], m.Text)
			}
		})
	}
	wg.Wait()
	return orders
}

// requireOneOrder checks that every client saw the same order, in which
// each sender's texts come in the order sent.
func requireOneOrder(t *testing.T, orders [][]string) {
	t.Helper()
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

// textsUntilShutdown receives until c's connection ends, which must be by
// the server's shutdown, and returns the texts received on the way.
func textsUntilShutdown(t *testing.T, c *garou.Client) []string {
	t.Helper()
	var texts []string
	for {
		m, err := c.Receive(ctxT(t))
		if err != nil {
			code, ok := garou.CloseCodeOf(err)
			require.True(t, ok, "%v", err)
			require.Equal(t, garou.CloseServerShutdown, code)
			return texts
		}
		if m.Type == garou.TypeText {
			texts = append(texts, m.Text)
		}
	}
}

// allPages reads a user list page by page to its end, checking that the
// pages follow each other in the order of user IDs.
func allPages(t *testing.T, page func(cursor string) (garou.Page, error)) []garou.User {
	t.Helper()
	var all []garou.User
	cursor := ""
	for range 1000 {
		p, err := page(cursor)
		require.NoError(t, err)
		require.LessOrEqual(t, len(p.Users), garou.PageSize)
		for _, u := range p.Users {
			if len(all) > 0 {
				require.Less(t, all[len(all)-1].ID, u.ID, "pages in the order of user IDs")
			}
			all = append(all, u)
		}
		if p.Next == "" {
			require.Len(t, all, p.Count, "the count is the whole list's")
			return all
		}
		cursor = p.Next
	}
	t.Fatal("more than 1000 pages")
	return nil
}
