package harness

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/garou-chat/garou/bench/internal/impl"
)

// acks: AcksClients clients, client i in room i mod AcksRooms, each says
// a text and waits for its acknowledgement before saying the next, for
// AcksDuration. A Garou client's acknowledgement is the return of its
// Send (with a durable history store: the text is on disk); a baseline's,
// which has none, is its own text coming back. Every member of a room
// receives its texts and drains them as an application would.
func acks(ctx context.Context, cfg Config, im impl.Impl, srv *serverProc, res *Result, e *errs) {
	n, rooms := cfg.AcksClients, cfg.AcksRooms
	res.Rooms = rooms
	clients := dialRooms(ctx, cfg, im, srv, "c", n, rooms, e)
	var closing atomic.Bool
	defer func() {
		closing.Store(true)
		closeAll(cfg, clients)
	}()
	for _, c := range clients {
		if c == nil {
			return
		}
	}
	logf(cfg, "%s: %d clients connected in %d rooms", im.Name, n, rooms)
	// echo[i] says client i's own text came back (baselines).
	echo := make([]chan struct{}, n)
	var readers sync.WaitGroup
	for i, c := range clients {
		echo[i] = make(chan struct{}, 1)
		readers.Go(func() {
			for {
				_, text, err := c.Receive()
				if err != nil {
					if !closing.Load() {
						e.add(fmt.Errorf("receive: %w", err))
					}
					return
				}
				if s, _, ok := textID(text); ok && s == i {
					select {
					case echo[i] <- struct{}{}:
					default:
					}
				}
			}
		})
	}
	// A send that takes longer than the whole run plus the stall limit is
	// an error, not a reason to wait for the load's timeout.
	sctx, cancel := context.WithTimeout(ctx, cfg.AcksDuration+stallLimit)
	defer cancel()
	lats := make([]hist, n)
	counts := make([]int64, n)
	var senders sync.WaitGroup
	c0 := markCPU(srv)
	start := time.Now()
	deadline := start.Add(cfg.AcksDuration)
	for i, c := range clients {
		senders.Go(func() {
			for k := 0; ; k++ {
				t0 := time.Now()
				if !t0.Before(deadline) {
					return
				}
				if err := c.Send(sctx, makeText(cfg.TextSize, t0.UnixNano(), i, k)); err != nil {
					e.add(fmt.Errorf("send: %w", err))
					return
				}
				if !im.BlockingSend {
					select {
					case <-echo[i]:
					case <-sctx.Done():
						e.add(errors.New("send: own text never came back"))
						return
					}
				}
				lats[i].add(time.Since(t0).Nanoseconds())
				counts[i]++
			}
		})
	}
	senders.Wait()
	end := time.Now()
	c1 := markCPU(srv)
	closing.Store(true)
	closeAll(cfg, clients)
	clients = nil
	readers.Wait()
	var h hist
	for i := range n {
		res.Received += counts[i]
		h.merge(&lats[i])
	}
	res.Expected = res.Received // every text said was acknowledged, or counted as an error
	res.Seconds = end.Sub(start).Seconds()
	if res.Seconds > 0 {
		res.Rate = float64(res.Received) / res.Seconds
	}
	res.ServerCPU = float64(c1.server - c0.server)
	res.LoadCPU = float64(c1.load - c0.load)
	if res.Received > 0 {
		res.CPUPerDelivery = res.ServerCPU / float64(res.Received)
		res.LoadPerDelivery = res.LoadCPU / float64(res.Received)
	}
	busyShares(res, c0, c1)
	res.P50 = h.quantile(0.50) / 1e6
	res.P99 = h.quantile(0.99) / 1e6
	res.P999 = h.quantile(0.999) / 1e6
}
