package natsbroker_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/natsbroker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// Two hellos of one name on two servers at the same instant: one is
// welcomed, the other refused as taken, every time.
func TestNameRaceAcrossServers(t *testing.T) {
	ns := startNATS(t)
	srvs := nodes(t, ns, 2)
	for round := range 10 {
		name := fmt.Sprintf("cy%d", round)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, srv := range srvs {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				cli, err := garou.Dial(ctx, srv.Addr().String(), name, garou.WithFingerprint(srv.Fingerprint()), garou.WithRooms())
				if err == nil {
					t.Cleanup(func() { cli.Close() })
				}
				errs[i] = err
			})
		}
		wg.Wait()
		welcomed := 0
		for _, err := range errs {
			if err == nil {
				welcomed++
				continue
			}
			code, ok := garou.CloseCodeOf(err)
			require.True(t, ok, "%v", err)
			require.Equal(t, garou.CloseNameTaken, code)
		}
		require.Equal(t, 1, welcomed, "round %d", round)
	}
}

// A name held by a server that stops renewing it (it crashed) is taken
// over at once by the same session, and freed for others after the TTL;
// a hold renewed outlives it.
func TestNameHoldOfCrashedServer(t *testing.T) {
	ns := startNATS(t)
	const ttl = 300 * time.Millisecond
	crashed, _ := newBroker(t, ns, natsbroker.WithNameTTL(ttl))
	b, nc := newBroker(t, ns, natsbroker.WithNameTTL(ttl))
	ctx := ctxT(t)

	_, err := crashed.Hold(ctx, "dee", "s1", "")
	require.NoError(t, err)
	_, err = crashed.Hold(ctx, "eve", "s1", "")
	require.NoError(t, err)
	_, err = b.Hold(ctx, "fay", "s5", "")
	require.NoError(t, err)
	require.NoError(t, crashed.Close()) // its renewals stop, nothing released

	_, err = b.Hold(ctx, "dee", "s2", "")
	require.ErrorIs(t, err, garou.ErrNameTaken)
	// The same session, moved here, takes its name along.
	_, err = b.Hold(ctx, "eve", "s3", "s1")
	require.NoError(t, err)

	js, err := jetstream.New(nc)
	require.NoError(t, err)
	kv, err := js.KeyValue(ctx, natsbroker.DefaultStream+"_NAMES")
	require.NoError(t, err)
	first, err := kv.Get(ctx, "ZmF5") // "fay"
	require.NoError(t, err)
	// Once the crashed server's hold has expired, its name is free; the
	// holds renewed here are not, however long it has been.
	eventually(t, func() bool {
		release, err := b.Hold(ctx, "dee", "s2", "")
		if err != nil {
			require.ErrorIs(t, err, garou.ErrNameTaken)
			return false
		}
		release()
		return true
	})
	eventually(t, func() bool {
		e, err := kv.Get(ctx, "ZmF5")
		require.NoError(t, err)
		return e.Created().Sub(first.Created()) > 2*ttl
	})
	_, err = b.Hold(ctx, "fay", "s6", "")
	require.ErrorIs(t, err, garou.ErrNameTaken)
	_, err = b.Hold(ctx, "eve", "s7", "")
	require.ErrorIs(t, err, garou.ErrNameTaken)
}

// A server out of NATS's reach for longer than the TTL holds its users'
// names again once back; a name another server welcomed meanwhile stays
// there, and the user who had it here is closed as name_taken.
func TestNamesHeldAgainAfterLongOutage(t *testing.T) {
	ns := startNATS(t)
	const ttl = 300 * time.Millisecond
	p := startProxy(t, ns.Addr().String())
	a, nc := newBroker(t, ns, natsbroker.WithNameTTL(ttl))
	b, ncb := brokerAt(t, "nats://"+p.addr(), natsbroker.WithNameTTL(ttl))
	srvs := serve(t, a, b)
	bo := dial(t, srvs[1], "bo", garou.WithRooms())
	cy := dial(t, srvs[1], "cy", garou.WithRooms(), garou.WithReconnectBackoff(time.Millisecond, 10*time.Millisecond))

	js, err := jetstream.New(nc)
	require.NoError(t, err)
	kv, err := js.KeyValue(ctxT(t), natsbroker.DefaultStream+"_NAMES")
	require.NoError(t, err)
	expired := func(key string) func() bool {
		return func() bool {
			_, err := kv.Get(ctxT(t), key)
			return errors.Is(err, jetstream.ErrKeyNotFound)
		}
	}
	reconnected := ncb.StatusChanged(nats.CONNECTED)
	p.cut()
	eventually(t, expired("Ym8")) // "bo"
	eventually(t, expired("Y3k")) // "cy"
	// Meanwhile, cy connects to the other server: the name is free.
	cy2 := dial(t, srvs[0], "cy", garou.WithRooms())
	p.restore()
	<-reconnected

	// bo's name is held again by its server: refused elsewhere.
	eventually(t, func() bool { return !expired("Ym8")() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = garou.Dial(ctx, srvs[0].Addr().String(), "bo", garou.WithFingerprint(srvs[0].Fingerprint()))
	code, ok := garou.CloseCodeOf(err)
	require.True(t, ok, "%v", err)
	require.Equal(t, garou.CloseNameTaken, code)

	// cy on the server that was out of reach lost its name, for good.
	_, err = cy.Receive(ctxT(t))
	code, ok = garou.CloseCodeOf(err)
	require.True(t, ok, "%v", err)
	require.Equal(t, garou.CloseNameTaken, code)
	// The name's direct messages reach its holder.
	require.NoError(t, bo.SendDirect(ctxT(t), "cy", "hi"))
	require.Equal(t, "hi", nextDirect(t, cy2).Text)
}
