package harness

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/garou-chat/garou/bench/internal/impl"
)

// parseCrowd reads a crowd: "N" is N clients in one room, "N/R" N clients
// over R rooms.
func parseCrowd(spec string) (clients, rooms int, err error) {
	n, r, hasRooms := strings.Cut(spec, "/")
	clients, err = strconv.Atoi(n)
	rooms = 1
	if err == nil && hasRooms {
		rooms, err = strconv.Atoi(r)
	}
	if err != nil || clients < 1 || rooms < 1 || rooms > clients {
		return 0, 0, fmt.Errorf("crowd %q: want N or N/R with 1 <= R <= N", spec)
	}
	return clients, rooms, nil
}

// profileName names the profiles of one run.
func profileName(cfg Config, impl string) string {
	sc := cfg.Scenarios
	if sc == Crowd {
		sc += "-" + strings.ReplaceAll(cfg.Crowds, "/", "over")
	}
	return fmt.Sprintf("%s-%s-r%d", sc, impl, cfg.Round)
}

// ensureFiles makes sure this process, and the server it starts, may open
// a socket per client: it raises the soft RLIMIT_NOFILE to the hard one if
// needed (Go does so at startup too), and says so if that is not enough.
func ensureFiles(clients int) error {
	need := uint64(clients) + 256
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return err
	}
	if rl.Cur >= need {
		return nil
	}
	if rl.Max >= need {
		rl.Cur = rl.Max
		return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	return fmt.Errorf("%d clients need about %d file descriptors, the hard limit is %d: raise it (ulimit -Hn)", clients, need, rl.Max)
}

// roomName is the room of client i: the implementation's default room when
// there is one room.
func roomName(i, rooms int) string {
	if rooms == 1 {
		return ""
	}
	return fmt.Sprintf("room-%d", i%rooms)
}

// crowd connects N clients into R rooms (client i into room i mod R),
// DialConcurrency at a time, within CrowdBudget; measures the server's CPU
// per connect, overall and per tenth of the crowd, and its memory per
// connection once they are connected and it has settled; then the first
// member of each room says one text, and once every client has it and
// Settle has passed, a second one, and every client's delivery latency of
// each is measured. The first text is the first thing a quiet connection
// carries since its handshake: quic-go then also probes the path MTU, on
// both sides, and may retransmit on a round-trip time measured during the
// handshake; the second shows the fan-out of connections in use. A crowd
// that did not connect within the budget is reported as far as it got,
// without the texts.
func crowd(ctx context.Context, cfg Config, im impl.Impl, srv *serverProc, rooms int, res *Result, e *errs) {
	n := res.Clients
	before, err := srv.Stats()
	if err != nil {
		e.add(fmt.Errorf("stats: %w", err))
		return
	}
	clients := make([]impl.Client, n)
	var pair [2]impl.Client // in a room of their own, see storm below
	var closing atomic.Bool
	var receivers sync.WaitGroup
	defer func() {
		// The server goes first: closing thousands of clients one by one
		// would make it send every remaining member a leave notice each.
		closing.Store(true)
		_ = srv.Stop(10 * time.Second)
		closeAll(cfg, clients)
		closeAll(cfg, pair[:])
		receivers.Wait()
	}()

	// lat[t][i] is the delivery latency of text t to client i, plus 1 so
	// that 0 means none yet; got[t] counts the clients that have it.
	var lat [crowdTexts][]atomic.Int64
	for t := range lat {
		lat[t] = make([]atomic.Int64, n)
	}
	var got [crowdTexts]atomic.Int64
	// readTexts gives on the number and delivery latency (ns) of each text
	// c receives, until c is closed.
	readTexts := func(c impl.Client, on func(t int, lat int64)) {
		for {
			_, text, err := c.Receive()
			if err != nil {
				if !closing.Load() {
					e.add(fmt.Errorf("receive: %w", err))
				}
				return
			}
			now := time.Now().UnixNano()
			ts, ok1 := sentAt(text)
			if _, t, ok2 := textID(text); ok1 && ok2 {
				on(t, now-ts)
			}
		}
	}
	// storm are the latencies of the texts one of two clients in a room
	// of their own says while the crowd connects, to both: the server's
	// other rooms must not starve while it connects a crowd. (In the
	// crowd's room, each text would cost a delivery to every member so
	// far, which would count in the CPU per connect.)
	var stormMu sync.Mutex
	var storm []float64
	for j := range pair {
		c, err := im.Dial(ctx, srv.Addr, srv.FP, "storm"+strconv.Itoa(j), stormRoom)
		if err != nil {
			e.add(fmt.Errorf("dial: %w", err))
			return
		}
		pair[j] = c
		receivers.Go(func() {
			readTexts(c, func(t int, lat int64) {
				if t == stormText {
					stormMu.Lock()
					storm = append(storm, float64(lat)/1e6)
					stormMu.Unlock()
				}
			})
		})
	}
	stormDone := make(chan struct{})
	var pinging sync.WaitGroup
	pinging.Go(func() {
		tick := time.NewTicker(stormEvery)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
			case <-stormDone:
				return
			}
			text := makeText(cfg.TextSize, time.Now().UnixNano(), 0, stormText)
			if err := pair[0].Send(ctx, text); err != nil && !closing.Load() {
				e.add(fmt.Errorf("send: %w", err))
			}
		}
	})
	receive := func(i int, c impl.Client) {
		defer receivers.Done()
		// Garou's clients also receive (and Receive skips) the presence of
		// everyone who connects after them.
		readTexts(c, func(t int, l int64) {
			if t < crowdTexts && lat[t][i].CompareAndSwap(0, l+1) {
				got[t].Add(1)
			}
		})
	}

	// The server's CPU when the first k·tenth clients had connected.
	tenth := max(n/10, 1)
	marks := make([]atomic.Int64, n/tenth+1)
	var connected atomic.Int64
	var lastWelcome atomic.Int64
	c0 := markCPU(srv)
	marks[0].Store(c0.server)
	start := time.Now()
	deadline := start.Add(cfg.CrowdBudget)
	bctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var cut atomic.Bool // the budget ended a dial or stopped the dialing
	sem := make(chan struct{}, cfg.DialConcurrency)
	var dials sync.WaitGroup
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-bctx.Done():
		}
		if bctx.Err() != nil {
			cut.Store(true)
			break
		}
		dials.Go(func() {
			defer func() { <-sem }()
			dctx, cancel := context.WithTimeout(bctx, 30*time.Second)
			defer cancel()
			c, err := im.Dial(dctx, srv.Addr, srv.FP, "c"+strconv.Itoa(i), roomName(i, rooms))
			if err != nil {
				if bctx.Err() == nil && time.Now().Before(deadline) {
					e.add(fmt.Errorf("dial: %w", err))
				} else {
					cut.Store(true)
				}
				return
			}
			clients[i] = c
			receivers.Add(1)
			go receive(i, c)
			for now := time.Now().UnixNano(); ; {
				if last := lastWelcome.Load(); last >= now || lastWelcome.CompareAndSwap(last, now) {
					break
				}
			}
			if k := connected.Add(1); k%int64(tenth) == 0 && int(k/int64(tenth)) < len(marks) {
				marks[k/int64(tenth)].Store(srv.CPU())
			}
		})
	}
	dials.Wait()
	close(stormDone)
	pinging.Wait()
	c1 := markCPU(srv)
	k := int(connected.Load())
	res.Connected = k
	res.Finished = !cut.Load()
	cancel()
	end := time.Now()
	if t := lastWelcome.Load(); res.Finished && t != 0 {
		end = time.Unix(0, t)
	}
	res.Seconds = end.Sub(start).Seconds()
	res.ServerCPU = float64(c1.server - c0.server)
	res.LoadCPU = float64(c1.load - c0.load)
	busyShares(res, c0, c1)
	if k > 0 {
		res.Rate = float64(k) / res.Seconds
		res.CPUPerConnect = res.ServerCPU / 1e3 / float64(k)
		res.LoadPerConnect = res.LoadCPU / 1e3 / float64(k)
	}
	if reached := k / tenth; reached >= 1 {
		perConnect := func(j int) float64 { return float64(marks[j].Load()-marks[j-1].Load()) / 1e3 / float64(tenth) }
		res.FirstTenth = perConnect(1)
		res.LastTenth = perConnect(reached)
	}
	logf(cfg, "%s: %d of %d connected in %.2fs", im.Name, k, n, res.Seconds)
	stormMu.Lock()
	if len(storm) > 0 {
		slices.Sort(storm)
		res.StormTexts = len(storm)
		res.StormP50, res.StormMax = quantile(storm, 0.50), storm[len(storm)-1]
	}
	stormMu.Unlock()
	if !settledMemory(ctx, cfg, im, srv, before, k, res, e) {
		return
	}
	if !res.Finished || k == 0 {
		return
	}

	// Each text: one per room, from its first connected member, all at
	// once.
	senders := map[int]impl.Client{}
	for i, c := range clients {
		if c != nil {
			if _, ok := senders[i%rooms]; !ok {
				senders[i%rooms] = c
			}
		}
	}
	for t := range crowdTexts {
		if t > 0 { // let the first text's acknowledgements and probes end
			select {
			case <-time.After(cfg.Settle):
			case <-ctx.Done():
			}
		}
		var sends sync.WaitGroup
		for i, c := range senders {
			sends.Go(func() {
				text := makeText(cfg.TextSize, time.Now().UnixNano(), i, t)
				if err := c.Send(ctx, text); err != nil && !closing.Load() {
					e.add(fmt.Errorf("send: %w", err))
				}
			})
		}
		waitCount(ctx, &got[t], int64(k), stallLimit)
		sends.Wait()
		res.Expected += int64(k)
		res.Received += got[t].Load()
		var ls []float64
		for i := range lat[t] {
			if v := lat[t][i].Load(); v != 0 {
				ls = append(ls, float64(v-1)/1e6)
			}
		}
		slices.Sort(ls)
		if len(ls) == 0 {
			continue
		}
		if t == 0 {
			res.P50, res.P99, res.Max = quantile(ls, 0.50), quantile(ls, 0.99), ls[len(ls)-1]
		} else {
			res.P50Next, res.P99Next = quantile(ls, 0.50), quantile(ls, 0.99)
		}
	}
	res.Lost = max(res.Expected-res.Received, 0)
	if ctx.Err() != nil {
		e.add(errors.New("timed out"))
	}
}

// crowdTexts is how many texts a crowd is sent, one after the other.
const crowdTexts = 2

// stormText numbers the texts said in stormRoom while the crowd connects,
// one every stormEvery: a join storm must not starve the server's texts.
const (
	stormText  = crowdTexts
	stormEvery = 100 * time.Millisecond
	stormRoom  = "storm"
)

// quantile of sorted values, nearest rank.
func quantile(sorted []float64, q float64) float64 {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// waitCount waits until n reaches want, ctx ends, or n has not moved for
// stall.
func waitCount(ctx context.Context, n *atomic.Int64, want int64, stall time.Duration) {
	waitProgress(ctx, 20*time.Millisecond, stall, func() (int64, bool) {
		cur := n.Load()
		return cur, cur >= want
	})
}
