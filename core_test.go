package garou_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTwentyClientsFiftyMessages is the core acceptance test: 20 clients in
// one room each send 50 texts concurrently. Every client receives every
// text, in one order identical for all, each sender's texts in the order
// sent; every join and every leave arrives exactly once.
func TestTwentyClientsFiftyMessages(t *testing.T) {
	const clients, perClient = 20, 50
	srv := startServer(t)
	cls := make([]*garou.Client, clients)
	for i := range cls {
		cls[i] = dial(t, srv, fmt.Sprintf("user%02d", i))
	}
	// Everyone is in: client i saw the joins of clients i+1..19.
	for i, c := range cls {
		for j := i + 1; j < clients; j++ {
			m := next(t, c, garou.TypeJoin)
			require.Equal(t, fmt.Sprintf("user%02d", j), m.User.Name)
		}
	}

	orders := chatAll(t, cls, perClient)
	require.Len(t, orders[0], clients*perClient)
	requireOneOrder(t, orders)

	// Leaves: each client closes in turn; every remaining client sees
	// exactly that leave, once.
	for i := range clients - 1 {
		require.NoError(t, cls[i].Close())
		for _, c := range cls[i+1:] {
			m := next0(t, c)
			require.Equal(t, garou.TypeLeave, m.Type)
			require.Equal(t, fmt.Sprintf("user%02d", i), m.User.Name)
			require.Equal(t, "quit", m.Reason)
		}
	}
	require.Len(t, srv.Users(), 1)
}

func next0(t *testing.T, c *garou.Client) garou.ChatMessage {
	t.Helper()
	m, err := c.Receive(ctxT(t))
	require.NoError(t, err)
	return m
}

func TestWelcomeSaysWhoIsOnline(t *testing.T) {
	srv := startServer(t)
	dial(t, srv, "alice")
	bob := dial(t, srv, "bob")
	users, err := bob.Users(ctxT(t), "")
	require.NoError(t, err)
	require.Equal(t, []string{"alice", "bob"}, names(users.Users))
	require.NotEmpty(t, bob.User().ID)
	require.Equal(t, "bob", bob.User().Name)
	require.False(t, bob.User().JoinedAt.IsZero())
}

func names(us []garou.User) []string {
	out := make([]string, len(us))
	for i, u := range us {
		out[i] = u.Name
	}
	return out
}

func TestNameRules(t *testing.T) {
	srv := startServer(t)
	dial(t, srv, "Alice")
	// The client refuses invalid names before connecting.
	for _, bad := range []string{"", strings.Repeat("x", 33), "a\x1bb", "zero\u200bwidth", "tab\tname", " lead", "Аlice"} {
		_, err := dialErr(t, srv, bad)
		require.ErrorIs(t, err, garou.ErrInvalidName, "%q", bad)
	}
	dial(t, srv, "José") // precomposed é
	dial(t, srv, "ape")
	dial(t, srv, "sam")
	// Taken: refused by the server with its code, whatever the case,
	// width, normal form or script it is written in.
	for _, taken := range []string{"Alice", "alice", "ＡＬＩＣＥ", "José", "аре", "ſam"} {
		_, err := dialErr(t, srv, taken)
		require.Error(t, err)
		code, ok := garou.CloseCodeOf(err)
		require.True(t, ok, "%v", err)
		require.Equal(t, garou.CloseNameTaken, code)
	}
	// 32 characters, non-ASCII, is fine.
	dial(t, srv, strings.Repeat("é", 32))
}

func TestConnectionLimitHoldsUnderConcurrentConnects(t *testing.T) {
	const limit, tries = 5, 12
	srv := startServer(t, garou.WithMaxConnections(limit))
	var (
		mu       sync.Mutex
		ok, full int
		wg       sync.WaitGroup
	)
	for i := range tries {
		wg.Go(func() {
			cli, err := dialErr(t, srv, fmt.Sprintf("c%d", i))
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				ok++
				t.Cleanup(func() { cli.Close() })
				return
			}
			code, isClose := garou.CloseCodeOf(err)
			assert.True(t, isClose, "%v", err)
			assert.Equal(t, garou.CloseServerFull, code, "%v", err)
			full++
		})
	}
	wg.Wait()
	require.Equal(t, limit, ok)
	require.Equal(t, tries-limit, full)
	require.Len(t, srv.Users(), limit)
}

func TestShutdownTellsEveryClient(t *testing.T) {
	srv := startServer(t)
	// Without reconnecting: a shutdown is otherwise retried.
	a := dial(t, srv, "a", garou.WithReconnect(0))
	b := dial(t, srv, "b", garou.WithReconnect(0))
	require.NoError(t, a.Send(ctxT(t), "last words"))
	require.NoError(t, srv.Shutdown(ctxT(t)))
	for _, c := range []*garou.Client{a, b} {
		texts := textsUntilShutdown(t, c)
		require.Equal(t, []string{"last words"}, texts)
	}
	_, err := dialErr(t, srv, "late", garou.WithConnectTimeout(300*time.Millisecond))
	require.Error(t, err)
}

func TestCloseIsIdempotent(t *testing.T) {
	srv := startServer(t)
	c := dial(t, srv, "a")
	require.NoError(t, c.Close())
	require.NoError(t, c.Close())
	_, err := c.Receive(context.Background())
	require.ErrorIs(t, err, garou.ErrClosed)
	require.ErrorIs(t, c.Send(context.Background(), "x"), garou.ErrClosed)
	require.NoError(t, srv.Close())
	require.NoError(t, srv.Close())
}

func TestSendRejectsBadTextLocally(t *testing.T) {
	srv := startServer(t, garou.WithMaxMessageSize(8<<10))
	c := dial(t, srv, "a", garou.WithMaxMessageSize(8<<10))
	require.ErrorIs(t, c.Send(ctxT(t), ""), garou.ErrInvalidText)
	require.ErrorIs(t, c.Send(ctxT(t), "bad \xff utf8"), garou.ErrInvalidText)
	require.ErrorIs(t, c.Send(ctxT(t), strings.Repeat("x", 9<<10)), garou.ErrTooLarge)
	require.NoError(t, c.Send(ctxT(t), "still fine"))
}
