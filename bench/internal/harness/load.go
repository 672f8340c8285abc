package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/garou-chat/garou/bench/internal/impl"
)

// Result is what one load process measured.
type Result struct {
	Impl     string `json:"impl"`
	Scenario string `json:"scenario"`
	Round    int    `json:"round"`
	Clients  int    `json:"clients"`
	// Crowd is the crowd ("N" or "N/R") of a crowd run, Rooms its rooms
	// (of an acks run too).
	Crowd string `json:"crowd,omitempty"`
	Rooms int    `json:"rooms,omitempty"`

	// Expected and Received count deliveries: one text arriving at one
	// client. Lost is their difference.
	Expected int64 `json:"expected"`
	Received int64 `json:"received"`
	Lost     int64 `json:"lost"`
	// Errors counts failed dials and sends and connections that ended
	// early; FirstErr is the first of them.
	Errors   int64  `json:"errors"`
	FirstErr string `json:"first_err,omitempty"`

	// Seconds is the measured wall time: first send to last delivery, or
	// first dial to last connection for idle.
	Seconds float64 `json:"seconds"`
	// Rate is deliveries per second, connections per second for idle, or
	// acknowledged texts per second for acks.
	Rate float64 `json:"rate"`
	// ServerCPU is the server's user+system CPU over the measured time, in
	// microseconds; CPUPerDelivery divides it by Received (for acks, the
	// texts acknowledged).
	ServerCPU      float64 `json:"server_cpu_us"`
	CPUPerDelivery float64 `json:"cpu_us_per_delivery"`

	// LoadCPU is the load process's CPU over the same time; Busy is both
	// processes' CPU as a share of all the host's cores (near 100% means
	// the host, not the server, is the limit).
	LoadCPU float64 `json:"load_cpu_us"`
	// LoadPerDelivery divides LoadCPU by Received: the clients' receive
	// path (and the load's own bookkeeping, the same for every
	// implementation), in microseconds (burst, paced).
	LoadPerDelivery float64 `json:"load_us_per_delivery"`
	Busy            float64 `json:"busy_pct"`
	// Other is the CPU that other processes of the host used meanwhile,
	// as a share of all cores: past a few percent the figures are
	// disturbed.
	Other float64 `json:"other_pct"`

	// Latency quantiles in milliseconds (paced; for acks, from each send
	// to its acknowledgement).
	P50  float64 `json:"p50_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p999_ms"`

	// Memory per connection in KiB (idle): the server's VmRSS growth, and
	// its live heap plus stacks growth after a forced collection.
	RSSPerConn  float64 `json:"rss_kib_per_conn"`
	LivePerConn float64 `json:"live_kib_per_conn"`
	// GoroutinesPerConn is the growth of the server's goroutines divided
	// by the connections (idle, crowd): the implementation's and quic-go's.
	GoroutinesPerConn float64 `json:"goroutines_per_conn"`
	// CPUPerConnect is the server's CPU from the first dial to the last
	// welcome divided by the connections, in milliseconds (idle, crowd).
	CPUPerConnect float64 `json:"cpu_ms_per_connect"`

	// Crowd: Connected clients; Finished says all of them connected
	// within the budget. FirstTenth and LastTenth are the server's CPU per
	// connect over the first and the last tenth of the clients to connect
	// (the last tenth reached if the run did not finish), in
	// milliseconds; LoadPerConnect the load process's CPU per connect.
	// P50, P99 and Max are the first text's delivery latencies,
	// P50Next and P99Next the second's, in milliseconds.
	Connected      int     `json:"connected,omitempty"`
	Finished       bool    `json:"finished,omitempty"`
	FirstTenth     float64 `json:"first_tenth_ms,omitempty"`
	LastTenth      float64 `json:"last_tenth_ms,omitempty"`
	LoadPerConnect float64 `json:"load_ms_per_connect,omitempty"`
	Max            float64 `json:"max_ms,omitempty"`
	P50Next        float64 `json:"p50_next_ms,omitempty"`
	P99Next        float64 `json:"p99_next_ms,omitempty"`
	// StormP50 and StormMax are the delivery latencies, in milliseconds,
	// of the StormTexts texts a member said while the crowd connected.
	StormTexts int     `json:"storm_texts,omitempty"`
	StormP50   float64 `json:"storm_p50_ms,omitempty"`
	StormMax   float64 `json:"storm_max_ms,omitempty"`

	// Lossy: Loss is the loss rate each way in percent as given; Dropped
	// the share of packets, in percent, the loss rule dropped during the
	// run; PingMs the round trip ping measured before the runs.
	Loss    string  `json:"loss,omitempty"`
	Dropped float64 `json:"dropped_pct,omitempty"`
	PingMs  float64 `json:"ping_ms,omitempty"`

	// Reconnect: Reconnects timed, half of them with 0-RTT. P50, P90 and
	// Max are the times from the network coming back to the first missed
	// text without 0-RTT, EarlyP50, EarlyP90 and EarlyMax with it, in
	// milliseconds; EarlyHellos the 0-RTT client's hellos the server took
	// in 0-RTT. Duplicated counts texts received twice or out of order,
	// and gap notices (reconnect, migrate).
	Reconnects  int     `json:"reconnects,omitempty"`
	P90         float64 `json:"p90_ms,omitempty"`
	EarlyP50    float64 `json:"early_p50_ms,omitempty"`
	EarlyP90    float64 `json:"early_p90_ms,omitempty"`
	EarlyMax    float64 `json:"early_max_ms,omitempty"`
	EarlyHellos int     `json:"early_hellos,omitempty"`
	Duplicated  int64   `json:"duplicated,omitempty"`

	// Migrate: Moves made; the longest pauses between deliveries, in
	// milliseconds, at the mover and the still client over the burst
	// (MoverPause, StillPause) and over the moves and the 100 ms after
	// each (MovePause, StillMovePause); MoveMs the longest Migrate call.
	Moves          int     `json:"moves,omitempty"`
	MoverPause     float64 `json:"mover_pause_ms,omitempty"`
	StillPause     float64 `json:"still_pause_ms,omitempty"`
	MovePause      float64 `json:"move_pause_ms,omitempty"`
	StillMovePause float64 `json:"still_move_pause_ms,omitempty"`
	MoveMs         float64 `json:"move_ms,omitempty"`
}

func (r Result) summary() string {
	var b strings.Builder
	switch r.Scenario {
	case Burst:
		fmt.Fprintf(&b, "%.0f deliveries/s, %.2f µs server CPU/delivery", r.Rate, r.CPUPerDelivery)
	case Acks:
		fmt.Fprintf(&b, "%.0f acknowledged texts/s, ack p50 %.2f ms p99 %.2f ms, %.2f µs server CPU/text, CPU bench %.0f%% other %.0f%%", r.Rate, r.P50, r.P99, r.CPUPerDelivery, r.Busy, r.Other)
	case Paced, Lossy:
		fmt.Fprintf(&b, "p50 %.2f ms p99 %.2f ms p99.9 %.2f ms, %.2f µs server CPU/delivery", r.P50, r.P99, r.P999, r.CPUPerDelivery)
	case Idle:
		fmt.Fprintf(&b, "%.1f KiB RSS/conn, %.1f KiB live/conn, %.2f goroutines/conn, %.0f connects/s, %.2f ms server CPU/connect, CPU bench %.0f%% other %.0f%%",
			r.RSSPerConn, r.LivePerConn, r.GoroutinesPerConn, r.Rate, r.CPUPerConnect, r.Busy, r.Other)
	case Crowd:
		if !r.Finished {
			fmt.Fprintf(&b, "did not finish within budget, reached %d of %d; ", r.Connected, r.Clients)
		}
		fmt.Fprintf(&b, "%d connected in %.1fs, %.2f ms server CPU/connect (first tenth %.2f, last %.2f), %.2f ms load CPU/connect, %.1f KiB RSS/conn, %.1f KiB live/conn, %d texts during the storm p50 %.1f ms max %.1f ms",
			r.Connected, r.Seconds, r.CPUPerConnect, r.FirstTenth, r.LastTenth, r.LoadPerConnect, r.RSSPerConn, r.LivePerConn, r.StormTexts, r.StormP50, r.StormMax)
		if r.Expected > 0 {
			fmt.Fprintf(&b, ", first text p50 %.1f ms p99 %.1f ms max %.1f ms, second text p50 %.1f ms p99 %.1f ms, lost %d",
				r.P50, r.P99, r.Max, r.P50Next, r.P99Next, r.Lost)
		}
		fmt.Fprintf(&b, ", CPU bench %.0f%% other %.0f%%", r.Busy, r.Other)
	case Reconnect:
		fmt.Fprintf(&b, "first missed text without 0-RTT p50 %.1f ms p90 %.1f ms, with 0-RTT p50 %.1f ms p90 %.1f ms (%d hellos in 0-RTT), lost %d, duplicated %d, CPU bench %.0f%% other %.0f%%",
			r.P50, r.P90, r.EarlyP50, r.EarlyP90, r.EarlyHellos, r.Lost, r.Duplicated, r.Busy, r.Other)
	case Migrate:
		fmt.Fprintf(&b, "%d moves, longest pause around them %.1f ms (still client %.1f ms), in the burst %.1f ms (still %.1f ms), lost %d, duplicated %d, CPU bench %.0f%% other %.0f%%",
			r.Moves, r.MovePause, r.StillMovePause, r.MoverPause, r.StillPause, r.Lost, r.Duplicated, r.Busy, r.Other)
	}
	if r.Scenario == Lossy {
		fmt.Fprintf(&b, ", %.2f%% of packets dropped", r.Dropped)
	}
	if r.Scenario == Burst || r.Scenario == Paced || r.Scenario == Lossy {
		fmt.Fprintf(&b, ", %.2f µs load CPU/delivery, CPU bench %.0f%% other %.0f%%", r.LoadPerDelivery, r.Busy, r.Other)
	}
	if r.Scenario == Burst || r.Scenario == Paced || r.Scenario == Lossy || (r.Scenario == Idle && r.Lost != 0) {
		fmt.Fprintf(&b, ", lost %d", r.Lost)
	}
	if r.Errors > 0 {
		fmt.Fprintf(&b, ", %d errors (first: %s)", r.Errors, r.FirstErr)
	}
	return b.String()
}

// errs counts errors and keeps the first.
type errs struct {
	n     atomic.Int64
	mu    sync.Mutex
	first error
}

func (e *errs) add(err error) {
	if e.n.Add(1) == 1 {
		e.mu.Lock()
		e.first = err
		e.mu.Unlock()
	}
}

func (e *errs) fill(r *Result) {
	r.Errors = e.n.Load()
	e.mu.Lock()
	if e.first != nil {
		r.FirstErr = e.first.Error()
	}
	e.mu.Unlock()
}

func logf(cfg Config, format string, args ...any) {
	if cfg.Verbose {
		fmt.Fprintf(os.Stderr, "  "+format+"\n", args...)
	}
}

// runScenario starts a server process and runs one scenario against it.
func runScenario(ctx context.Context, cfg Config, im impl.Impl, scenario string) Result {
	res := Result{Impl: im.Name, Scenario: scenario}
	clients := map[string]int{Burst: cfg.BurstClients, Paced: cfg.PacedClients, Idle: cfg.IdleConns, Lossy: cfg.LossyClients, Acks: cfg.AcksClients}[scenario]
	rooms := 1
	if scenario == Crowd {
		res.Crowd = cfg.Crowds
		clients, rooms, _ = parseCrowd(cfg.Crowds) // validated
		res.Rooms = rooms
		if err := ensureFiles(clients); err != nil {
			res.Errors, res.FirstErr = 1, err.Error()
			return res
		}
	}
	res.Clients = clients
	profile := ""
	if cfg.Profile != "" {
		profile = filepath.Join(cfg.Profile, profileName(cfg, im.Name))
	}
	srv, err := startServer(ctx, im.Name, clients+16, cfg.QueueBytes, cfg.loadTimeout(scenario)+time.Minute, profile)
	if err != nil {
		res.Errors, res.FirstErr = 1, err.Error()
		return res
	}
	var e errs
	switch scenario {
	case Burst:
		burst(ctx, cfg, im, srv, &res, &e)
	case Paced:
		paced(ctx, cfg, im, srv, &res, &e)
	case Idle:
		idle(ctx, cfg, im, srv, &res, &e)
	case Crowd:
		crowd(ctx, cfg, im, srv, rooms, &res, &e)
	case Lossy:
		lossy(ctx, cfg, im, srv, &res, &e)
	case Acks:
		acks(ctx, cfg, im, srv, &res, &e)
	}
	if err := srv.Stop(10 * time.Second); err != nil {
		logf(cfg, "%s: server exit: %v", im.Name, err)
	}
	e.fill(&res)
	return res
}

// dialAll connects n clients named prefix0, prefix1, ..., at most
// cfg.DialConcurrency at a time. Failed dials leave nil entries.
func dialAll(ctx context.Context, cfg Config, im impl.Impl, srv *serverProc, prefix string, n int, e *errs) []impl.Client {
	return dialRooms(ctx, cfg, im, srv, prefix, n, 1, e)
}

// dialRooms is dialAll with client i in room i mod rooms.
func dialRooms(ctx context.Context, cfg Config, im impl.Impl, srv *serverProc, prefix string, n, rooms int, e *errs) []impl.Client {
	clients := make([]impl.Client, n)
	sem := make(chan struct{}, cfg.DialConcurrency)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			c, err := im.Dial(dctx, srv.Addr, srv.FP, prefix+strconv.Itoa(i), roomName(i, rooms))
			if err != nil {
				e.add(fmt.Errorf("dial: %w", err))
				return
			}
			clients[i] = c
		})
	}
	wg.Wait()
	return clients
}

func closeAll(cfg Config, clients []impl.Client) {
	sem := make(chan struct{}, cfg.DialConcurrency)
	var wg sync.WaitGroup
	for _, c := range clients {
		if c == nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_ = c.Close()
		})
	}
	wg.Wait()
}

// makeText builds a text of cfg.TextSize bytes that starts with the send
// time in Unix nanoseconds.
func makeText(size int, ts int64, sender, k int) string {
	b := make([]byte, 0, size)
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(sender), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(k), 10)
	b = append(b, ' ')
	for len(b) < size {
		b = append(b, 'x')
	}
	return string(b)
}

func sentAt(text string) (int64, bool) {
	i := strings.IndexByte(text, ' ')
	if i < 0 {
		return 0, false
	}
	ts, err := strconv.ParseInt(text[:i], 10, 64)
	return ts, err == nil
}

// textID returns the sender and number makeText put in a text. It runs
// once per burst delivery in the load process, whose CPU is compared
// across implementations, so it does not allocate.
func textID(text string) (sender, k int, ok bool) {
	_, rest, ok1 := strings.Cut(text, " ")
	s, rest, ok2 := strings.Cut(rest, " ")
	n, _, ok3 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || !ok3 {
		return 0, 0, false
	}
	sender, err1 := strconv.Atoi(s)
	k, err2 := strconv.Atoi(n)
	return sender, k, err1 == nil && err2 == nil
}

// receiver counts the texts one client receives.
type receiver struct {
	expected int64
	count    atomic.Int64
	last     atomic.Int64 // Unix nanoseconds of the delivery that completed it
	done     chan struct{}
	exited   chan struct{}
	onText   func(text string) // burst: flow control
	lat      *hist             // paced: latencies; read after done
}

func (r *receiver) run(c impl.Client, closing *atomic.Bool, e *errs) {
	defer close(r.exited)
	completed := false
	for {
		_, text, err := c.Receive()
		if err != nil {
			if !closing.Load() {
				e.add(fmt.Errorf("receive: %w", err))
			}
			if !completed {
				close(r.done)
			}
			return
		}
		now := time.Now().UnixNano()
		if r.lat != nil {
			if ts, ok := sentAt(text); ok {
				r.lat.add(now - ts)
			}
		}
		if r.onText != nil {
			r.onText(text)
		}
		if r.count.Add(1) == r.expected && !completed {
			completed = true
			r.last.Store(now)
			close(r.done)
		}
	}
}

// waitAll waits for every receiver to finish, for the context to end, or
// for deliveries to stall for stall.
func waitAll(ctx context.Context, rs []*receiver, stall time.Duration) {
	waitProgress(ctx, 100*time.Millisecond, stall, func() (int64, bool) {
		done := true
		var total int64
		for _, r := range rs {
			total += r.count.Load()
			select {
			case <-r.done:
			default:
				done = false
			}
		}
		return total, done
	})
}

// waitProgress polls progress every interval until it reports done, ctx
// ends, or its count has not moved for stall.
func waitProgress(ctx context.Context, every, stall time.Duration, progress func() (count int64, done bool)) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	prev, lastMove := int64(-1), time.Now()
	for {
		cur, done := progress()
		if done {
			return
		}
		if cur != prev {
			prev, lastMove = cur, time.Now()
		} else if time.Since(lastMove) > stall {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// selfCPU is this process's user+system CPU in microseconds.
func selfCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano()/1e3 + ru.Stime.Nano()/1e3
}

// cpuMark is the CPU time of the server, of this process and of the whole
// host at one moment, in microseconds.
// parent is the CPU time of the process that started this one: the
// orchestrator, whose only work during a measurement is, in a lossy run,
// the emulated network's queue reader. It counts in neither the bench nor
// the other share.
type cpuMark struct{ server, load, parent, host int64 }

func markCPU(srv *serverProc) cpuMark {
	parent, _ := cpuMicros(os.Getppid())
	return cpuMark{server: srv.CPU(), load: selfCPU(), parent: parent, host: hostBusy()}
}

// hostBusy reads the host's non-idle CPU time from /proc/stat.
func hostBusy() int64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i != 3 && i != 4 && i < 8 { // not idle, not iowait, no guest time
			busy += n
		}
	}
	return busy * 1e4 // USER_HZ ticks of 10 ms
}

// finish fills the delivery counts, timing and CPU of a burst or paced run.
func finish(res *Result, rs []*receiver, start time.Time, c0, c1 cpuMark) {
	end := start
	for _, r := range rs {
		res.Received += r.count.Load()
		res.Expected += r.expected
		if t := r.last.Load(); t == 0 {
			end = time.Now() // incomplete: it ran to the stall or timeout
		} else if tt := time.Unix(0, t); tt.After(end) {
			end = tt
		}
	}
	res.Lost = max(res.Expected-res.Received, 0)
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
}

// busyShares fills Busy and Other from res.Seconds, res.ServerCPU,
// res.LoadCPU and the host's CPU between c0 and c1.
func busyShares(res *Result, c0, c1 cpuMark) {
	if res.Seconds > 0 {
		all := 1e6 * res.Seconds * float64(runtime.NumCPU())
		res.Busy = 100 * (res.ServerCPU + res.LoadCPU) / all
		res.Other = max(100*(float64(c1.host-c0.host-(c1.parent-c0.parent))-res.ServerCPU-res.LoadCPU)/all, 0)
	}
}

// connect dials n clients and starts a receiver on each, set up by setup
// first; it returns nil receivers if any dial failed.
func connect(ctx context.Context, cfg Config, im impl.Impl, srv *serverProc, n int, expected int64, e *errs, closing *atomic.Bool, setup func(*receiver)) ([]impl.Client, []*receiver) {
	return connectRooms(ctx, cfg, im, srv, n, 1, func(int) int64 { return expected }, e, closing, setup)
}

// connectRooms is connect with client i in room i mod rooms, expecting
// expected(i) texts.
func connectRooms(ctx context.Context, cfg Config, im impl.Impl, srv *serverProc, n, rooms int, expected func(i int) int64, e *errs, closing *atomic.Bool, setup func(*receiver)) ([]impl.Client, []*receiver) {
	clients := dialRooms(ctx, cfg, im, srv, "c", n, rooms, e)
	for _, c := range clients {
		if c == nil {
			return clients, nil
		}
	}
	rs := make([]*receiver, n)
	for i, c := range clients {
		rs[i] = &receiver{expected: expected(i), done: make(chan struct{}), exited: make(chan struct{})}
		setup(rs[i])
		go rs[i].run(c, closing, e)
	}
	return clients, rs
}

const stallLimit = 15 * time.Second

// burst: every client sends BurstMsgs texts as fast as its window allows;
// everyone receives everything.
func burst(ctx context.Context, cfg Config, im impl.Impl, srv *serverProc, res *Result, e *errs) {
	n, m := cfg.BurstClients, cfg.BurstMsgs
	// Flow control: a sender may have Window texts that have not yet
	// reached every client. So no client ever lags more than n*Window
	// texts behind, and no server queue needs more than that.
	var windows []chan struct{}
	var reached [][]atomic.Int32
	if cfg.Window > 0 {
		windows = make([]chan struct{}, n)
		reached = make([][]atomic.Int32, n)
		for i := range n {
			windows[i] = make(chan struct{}, cfg.Window)
			reached[i] = make([]atomic.Int32, m)
		}
	}
	setup := func(r *receiver) {
		if windows == nil {
			return
		}
		r.onText = func(text string) {
			i, k, ok := textID(text)
			if ok && i < n && k < m && reached[i][k].Add(1) == int32(n) {
				select {
				case <-windows[i]:
				default:
				}
			}
		}
	}
	var closing atomic.Bool
	clients, rs := connect(ctx, cfg, im, srv, n, int64(n)*int64(m), e, &closing, setup)
	defer func() {
		closing.Store(true)
		closeAll(cfg, clients)
	}()
	if rs == nil {
		return
	}
	logf(cfg, "%s: %d clients connected", im.Name, n)
	senders := 1
	if im.BlockingSend {
		senders = cfg.Window
		if senders == 0 {
			senders = 64
		}
	}
	begin, stop := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	for i, c := range clients {
		var next atomic.Int64
		for range senders {
			wg.Go(func() {
				<-begin
				for {
					k := int(next.Add(1) - 1)
					if k >= m {
						return
					}
					if windows != nil {
						select {
						case windows[i] <- struct{}{}:
						case <-stop:
							return
						}
					}
					text := makeText(cfg.TextSize, time.Now().UnixNano(), i, k)
					if err := c.Send(ctx, text); err != nil {
						if !closing.Load() {
							e.add(fmt.Errorf("send: %w", err))
						}
						return
					}
				}
			})
		}
	}
	c0 := markCPU(srv)
	start := time.Now()
	close(begin)
	waitAll(ctx, rs, stallLimit)
	c1 := markCPU(srv)
	finish(res, rs, start, c0, c1)
	closing.Store(true)
	close(stop)
	closeAll(cfg, clients)
	clients = nil
	wg.Wait()
}

// paced: PacedClients clients send PacedRate texts a second between them
// for PacedDuration, evenly spread; every delivery's latency is measured
// from the time the text was due to be sent.
func paced(ctx context.Context, cfg Config, im impl.Impl, srv *serverProc, res *Result, e *errs) {
	pacedRooms(ctx, cfg, im, srv, cfg.PacedClients, 1, cfg.PacedRate, cfg.PacedDuration, res, e)
}

// pacedRooms is paced with n clients over rooms rooms (client i in room i
// mod rooms), rate texts a second between them for duration; a text
// reaches the members of its sender's room.
func pacedRooms(ctx context.Context, cfg Config, im impl.Impl, srv *serverProc, n, rooms int, rate float64, duration time.Duration, res *Result, e *errs) {
	step := time.Duration(float64(time.Second) / rate) // between two texts of all clients
	interval := step * time.Duration(n)                // between two texts of one client
	plan := make([]int, n)
	perRoom := make([]int64, rooms)
	var total int64
	for i := range n {
		offset := step * time.Duration(i)
		if offset < duration {
			plan[i] = int((duration - offset + interval - 1) / interval)
		}
		total += int64(plan[i])
		perRoom[i%rooms] += int64(plan[i])
	}
	var closing atomic.Bool
	expected := func(i int) int64 { return perRoom[i%rooms] }
	clients, rs := connectRooms(ctx, cfg, im, srv, n, rooms, expected, e, &closing, func(r *receiver) { r.lat = &hist{} })
	defer func() {
		closing.Store(true)
		closeAll(cfg, clients)
	}()
	if rs == nil {
		return
	}
	logf(cfg, "%s: %d clients connected, %d texts planned", im.Name, n, total)
	start := time.Now().Add(100 * time.Millisecond)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			var inflight chan struct{}
			if im.BlockingSend {
				inflight = make(chan struct{}, max(cfg.Window, 1))
			}
			var sends sync.WaitGroup
			defer sends.Wait()
			for k := range plan[i] {
				due := start.Add(step*time.Duration(i) + interval*time.Duration(k))
				if d := time.Until(due); d > 0 {
					select {
					case <-time.After(d):
					case <-stop:
						return
					}
				}
				text := makeText(cfg.TextSize, due.UnixNano(), i, k)
				if inflight == nil {
					if err := c.Send(ctx, text); err != nil {
						if !closing.Load() {
							e.add(fmt.Errorf("send: %w", err))
						}
						return
					}
					continue
				}
				select {
				case inflight <- struct{}{}:
				case <-stop:
					return
				}
				sends.Go(func() {
					defer func() { <-inflight }()
					if err := c.Send(ctx, text); err != nil && !closing.Load() {
						e.add(fmt.Errorf("send: %w", err))
					}
				})
			}
		})
	}
	time.Sleep(time.Until(start))
	c0 := markCPU(srv)
	waitAll(ctx, rs, stallLimit)
	c1 := markCPU(srv)
	finish(res, rs, start, c0, c1)
	closing.Store(true)
	close(stop)
	closeAll(cfg, clients)
	clients = nil
	wg.Wait()
	var h hist
	for _, r := range rs {
		<-r.exited
		h.merge(r.lat)
	}
	res.P50 = h.quantile(0.50) / 1e6
	res.P99 = h.quantile(0.99) / 1e6
	res.P999 = h.quantile(0.999) / 1e6
}

// idle: IdleConns clients connect and do nothing; the server's memory is
// compared before and after.
func idle(ctx context.Context, cfg Config, im impl.Impl, srv *serverProc, res *Result, e *errs) {
	before, err := srv.Stats()
	if err != nil {
		e.add(fmt.Errorf("stats: %w", err))
		return
	}
	c0 := markCPU(srv)
	start := time.Now()
	clients := dialAll(ctx, cfg, im, srv, "c", cfg.IdleConns, e)
	res.Seconds = time.Since(start).Seconds()
	c1 := markCPU(srv)
	var closing atomic.Bool
	defer func() {
		closing.Store(true)
		closeAll(cfg, clients)
	}()
	k := 0
	for _, c := range clients {
		if c == nil {
			continue
		}
		k++
		// Drain whatever arrives (Garou's join notices) as an application
		// would; these clients never send.
		go func() {
			for {
				if _, _, err := c.Receive(); err != nil {
					if !closing.Load() {
						e.add(fmt.Errorf("receive: %w", err))
					}
					return
				}
			}
		}()
	}
	res.Received = int64(k)
	res.Expected = int64(cfg.IdleConns)
	res.ServerCPU = float64(c1.server - c0.server)
	res.LoadCPU = float64(c1.load - c0.load)
	if res.Seconds > 0 {
		res.Rate = float64(k) / res.Seconds
	}
	busyShares(res, c0, c1)
	if k > 0 {
		res.CPUPerConnect = res.ServerCPU / 1e3 / float64(k)
	}
	logf(cfg, "%s: %d connections in %.2fs", im.Name, k, res.Seconds)
	if !settledMemory(ctx, cfg, im, srv, before, k, res, e) {
		return
	}
	if ctx.Err() != nil {
		e.add(errors.New("timed out"))
	}
}

// settledMemory waits cfg.Settle (or until ctx ends) for the server to
// settle, then sets res's memory per connection over the k connections
// made since before. It reports false when the server's stats could not be
// read.
func settledMemory(ctx context.Context, cfg Config, im impl.Impl, srv *serverProc, before Stats, k int, res *Result, e *errs) bool {
	select {
	case <-time.After(cfg.Settle):
	case <-ctx.Done():
	}
	after, err := srv.Stats()
	if err != nil {
		e.add(fmt.Errorf("stats: %w", err))
		return false
	}
	logf(cfg, "%s: before %+v after %+v", im.Name, before, after)
	if k > 0 {
		res.RSSPerConn = float64(after.RSSKiB-before.RSSKiB) / float64(k)
		live := func(s Stats) float64 { return float64(s.HeapBytes + s.StackBytes) }
		res.LivePerConn = (live(after) - live(before)) / 1024 / float64(k)
		res.GoroutinesPerConn = float64(after.Goroutines-before.Goroutines) / float64(k)
	}
	return true
}
