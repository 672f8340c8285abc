// Command clusterbench measures Garou servers sharing one NATS JetStream
// (natsbroker) against one server alone: 12 clients in one room, spread
// over the servers, in a burst and paced; and NATS's own publish rate with
// the broker's stream settings, the bound of a room's texts. Everything
// runs in this one process on 127.0.0.1: an embedded nats-server, the
// Garou servers and the clients. See the README beside go.mod.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/natsbroker"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

type config struct {
	clients    int
	burstMsgs  int
	window     int
	pacedMsgs  int
	pacedEvery time.Duration
	servers    []int
	memory     bool
	bwindow    int
	rawMsgs    int
	profile    string
	profileAt  int
	rounds     int
	replicas   int
	compare    bool
}

func main() {
	cfg := config{}
	var servers, storage string
	flag.IntVar(&cfg.clients, "clients", 12, "clients in the room, spread over the servers")
	flag.IntVar(&cfg.burstMsgs, "burst-msgs", 500, "burst: texts each client sends")
	flag.IntVar(&cfg.window, "window", 4, "burst: texts each client has in flight (Sends not yet acknowledged)")
	flag.IntVar(&cfg.pacedMsgs, "paced-msgs", 30, "paced: texts each client sends")
	flag.DurationVar(&cfg.pacedEvery, "paced-every", 100*time.Millisecond, "paced: each client sends a text this often")
	flag.StringVar(&servers, "servers", "0,1,2,3", "comma-separated: how many servers share NATS (0: one server alone, no broker)")
	flag.StringVar(&storage, "storage", "file", "the stream's storage: file or memory")
	flag.IntVar(&cfg.replicas, "replicas", 1, "the stream's replicas: 1, one NATS server; more, a NATS cluster of that many in the process")
	flag.BoolVar(&cfg.compare, "compare", false, "run each configuration on NATS also with the broker's StartPublish hidden: each server then publishes a room's texts one at a time, each once the previous is kept (as before PublishStarter)")
	flag.IntVar(&cfg.bwindow, "broker-window", 0, "natsbroker.WithWindow (0: its default)")
	flag.IntVar(&cfg.rawMsgs, "raw-msgs", 3000, "raw JetStream publishes per measurement")
	flag.IntVar(&cfg.rounds, "rounds", 3, "rounds, each running every configuration once; the table shows medians")
	flag.StringVar(&cfg.profile, "cpuprofile", "", "write a CPU profile of the burst of -profile-servers servers to this file")
	flag.IntVar(&cfg.profileAt, "profile-servers", 2, "the configuration -cpuprofile profiles")
	flag.Parse()
	for f := range strings.SplitSeq(servers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			fmt.Fprintf(os.Stderr, "clusterbench: bad -servers %q\n", servers)
			os.Exit(2)
		}
		cfg.servers = append(cfg.servers, n)
	}
	switch storage {
	case "file":
	case "memory":
		cfg.memory = true
	default:
		fmt.Fprintf(os.Stderr, "clusterbench: -storage must be file or memory, not %q\n", storage)
		os.Exit(2)
	}
	if err := run(cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "clusterbench:", err)
		os.Exit(1)
	}
}

var quiet = slog.New(slog.DiscardHandler)

// result is one configuration's figures.
type result struct {
	variant
	burst              float64 // deliveries/s
	burstP50, burstP99 time.Duration
	pacedP50, pacedP99 time.Duration
	self, other        float64 // shares of all cores, during the burst
	min, max           float64 // the burst's deliveries/s, over the rounds
}

// variant is one configuration: n servers (0: one alone, no broker),
// with the broker's StartPublish hidden if one.
type variant struct {
	n   int
	one bool
}

func run(cfg config, w io.Writer) error {
	var variants []variant
	for _, n := range cfg.servers {
		variants = append(variants, variant{n: n})
		if cfg.compare && n > 0 {
			variants = append(variants, variant{n: n, one: true})
		}
	}
	by := make(map[variant][]result)
	for round := range cfg.rounds {
		// Every configuration in each round, so that what else runs on
		// the host weighs on all of them alike.
		for _, v := range variants {
			fmt.Fprintf(os.Stderr, "round %d, %s: burst\n", round+1, v)
			burst, err := room(cfg, v, cfg.window, cfg.burstMsgs, 0, round == 0)
			if err != nil {
				return fmt.Errorf("%s burst: %w", v, err)
			}
			fmt.Fprintf(os.Stderr, "round %d, %s: paced\n", round+1, v)
			paced, err := room(cfg, v, 1, cfg.pacedMsgs, cfg.pacedEvery, false)
			if err != nil {
				return fmt.Errorf("%s paced: %w", v, err)
			}
			by[v] = append(by[v], result{variant: v, burst: burst.rate, burstP50: burst.p50, burstP99: burst.p99,
				pacedP50: paced.p50, pacedP99: paced.p99, self: burst.self, other: burst.other})
		}
	}
	var results []result
	for _, v := range variants {
		results = append(results, medianOf(by[v]))
	}
	fmt.Fprintln(os.Stderr, "raw JetStream publishes")
	raw, err := rawPublish(cfg)
	if err != nil {
		return fmt.Errorf("raw publishes: %w", err)
	}
	report(w, cfg, results, raw)
	return nil
}

func (v variant) String() string {
	switch {
	case v.n == 0:
		return "1, alone (no broker)"
	case v.one:
		return fmt.Sprintf("%d on NATS, one at a time", v.n)
	}
	return fmt.Sprintf("%d on NATS", v.n)
}

// medianOf returns the median of each figure of rs.
func medianOf(rs []result) result {
	med := func(f func(result) float64) float64 {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = f(r)
		}
		slices.Sort(xs)
		if len(xs)%2 == 1 {
			return xs[len(xs)/2]
		}
		return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
	}
	dur := func(f func(result) time.Duration) time.Duration {
		return time.Duration(med(func(r result) float64 { return float64(f(r)) }))
	}
	return result{
		variant:  rs[0].variant,
		burst:    med(func(r result) float64 { return r.burst }),
		burstP50: dur(func(r result) time.Duration { return r.burstP50 }),
		burstP99: dur(func(r result) time.Duration { return r.burstP99 }),
		pacedP50: dur(func(r result) time.Duration { return r.pacedP50 }),
		pacedP99: dur(func(r result) time.Duration { return r.pacedP99 }),
		self:     med(func(r result) float64 { return r.self }),
		other:    med(func(r result) float64 { return r.other }),
		min:      slices.MinFunc(rs, func(a, b result) int { return cmpF(a.burst, b.burst) }).burst,
		max:      slices.MaxFunc(rs, func(a, b result) int { return cmpF(a.burst, b.burst) }).burst,
	}
}

func cmpF(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

type roomResult struct {
	rate        float64
	p50, p99    time.Duration
	self, other float64
}

// room runs clients in one room over n servers on one NATS (n = 0: one
// server alone): each sends per texts, window at a time, one every every
// if not 0, while receiving everyone's.
func room(cfg config, v variant, window, per int, every time.Duration, profile bool) (roomResult, error) {
	n := v.n
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var cleanup []func()
	defer func() {
		for _, f := range slices.Backward(cleanup) {
			f()
		}
	}()
	var brokers []garou.Broker
	if n > 0 {
		urls, stop, err := startNATS(cfg.replicas)
		cleanup = append(cleanup, stop)
		if err != nil {
			return roomResult{}, err
		}
		for i := range n {
			nc, err := nats.Connect(urls[i%len(urls)])
			if err != nil {
				return roomResult{}, err
			}
			cleanup = append(cleanup, nc.Close)
			b, err := newBroker(ctx, nc, cfg)
			if err != nil {
				return roomResult{}, err
			}
			cleanup = append(cleanup, func() { b.Close() })
			if v.one {
				brokers = append(brokers, oneAtATime{b})
			} else {
				brokers = append(brokers, b)
			}
		}
	} else {
		brokers = []garou.Broker{nil}
	}
	dir, err := os.MkdirTemp("", "clusterbench-")
	if err != nil {
		return roomResult{}, err
	}
	cleanup = append(cleanup, func() { os.RemoveAll(dir) })
	var srvs []*garou.Server
	for _, b := range brokers {
		opts := []garou.ServerOption{garou.WithLogger(quiet), garou.WithRateLimit(0, 0), garou.WithPresenceInterval(0), garou.WithDataDir(dir)}
		if b != nil {
			opts = append(opts, garou.WithBroker(b))
		}
		srv, err := garou.NewServer(opts...)
		if err != nil {
			return roomResult{}, err
		}
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return roomResult{}, err
		}
		done := make(chan error, 1)
		go func() { done <- srv.Serve(context.Background(), pc) }()
		cleanup = append(cleanup, func() { srv.Close(); <-done; pc.Close() })
		<-srv.Ready()
		srvs = append(srvs, srv)
	}
	cls := make([]*garou.Client, cfg.clients)
	for i := range cls {
		srv := srvs[i%len(srvs)]
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := garou.Dial(dctx, srv.Addr().String(), fmt.Sprint("c", i), garou.WithFingerprint(srv.Fingerprint()),
			garou.WithReceiveBuffer(1<<16))
		dcancel()
		if err != nil {
			return roomResult{}, err
		}
		cleanup = append(cleanup, func() { c.Close() })
		cls[i] = c
	}
	// One text each first, received by all: every room is open on every
	// server and every connection warm before the clock starts.
	if err := exchange(ctx, cls, 1, 1, 0, nil); err != nil {
		return roomResult{}, fmt.Errorf("warm-up: %w", err)
	}
	if cfg.profile != "" && profile && n == cfg.profileAt && !v.one {
		f, err := os.Create(cfg.profile)
		if err != nil {
			return roomResult{}, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return roomResult{}, err
		}
		defer pprof.StopCPUProfile()
	}
	lat := make([][]time.Duration, len(cls))
	start := time.Now()
	cpu := startCPU()
	if err := exchange(ctx, cls, per, window, every, lat); err != nil {
		return roomResult{}, err
	}
	el := time.Since(start)
	self, other := cpu.stop()
	all := slices.Concat(lat...)
	slices.Sort(all)
	total := len(cls) * per * len(cls)
	return roomResult{rate: float64(total) / el.Seconds(), p50: all[len(all)/2], p99: all[len(all)*99/100], self: self, other: other}, nil
}

// exchange has each client send per texts (window at a time, one every
// every if not 0) and receive everyone's; with lat, the time each text
// took to reach each client.
func exchange(ctx context.Context, cls []*garou.Client, per, window int, every time.Duration, lat [][]time.Duration) error {
	total := len(cls) * per
	pad := strings.Repeat("x", 80)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for i, c := range cls {
		for k0 := range window {
			wg.Go(func() {
				var tick <-chan time.Time
				if every > 0 {
					// Spread over the interval, not all at once.
					t := time.NewTimer(every * time.Duration(i) / time.Duration(len(cls)))
					<-t.C
					tk := time.NewTicker(every)
					defer tk.Stop()
					tick = tk.C
				}
				for k := k0; k < per; k += window {
					if tick != nil && k > 0 {
						<-tick
					}
					text := strconv.FormatInt(time.Now().UnixNano(), 10) + " " + pad
					if err := c.Send(ctx, text); err != nil {
						cancel(err)
						return
					}
				}
			})
		}
		wg.Go(func() {
			for got := 0; got < total; {
				m, err := c.Receive(ctx)
				if err != nil {
					cancel(err)
					return
				}
				switch m.Type {
				case garou.TypeGap:
					cancel(fmt.Errorf("client %d: a gap %d-%d", i, m.GapFrom, m.GapTo))
					return
				case garou.TypeText:
				default:
					continue
				}
				got++
				if lat != nil {
					sent, _ := strconv.ParseInt(m.Text[:strings.IndexByte(m.Text, ' ')], 10, 64)
					lat[i] = append(lat[i], time.Since(time.Unix(0, sent)))
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// newBroker makes a broker, trying again for a while: a NATS cluster
// just started may not have placed its peers yet.
func newBroker(ctx context.Context, nc *nats.Conn, cfg config) (*natsbroker.Broker, error) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := natsbroker.New(ctx, nc, brokerOptions(cfg)...)
		if err == nil || time.Now().After(deadline) {
			return b, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// oneAtATime is a broker without its StartPublish: the server publishes a
// room's texts with Publish, one at a time.
type oneAtATime struct{ fullBroker }

type fullBroker interface {
	garou.NameHolder
	garou.PresenceBroker
}

func brokerOptions(cfg config) []natsbroker.Option {
	var opts []natsbroker.Option
	if cfg.memory {
		opts = append(opts, natsbroker.WithMemoryStorage())
	}
	if cfg.bwindow > 0 {
		opts = append(opts, natsbroker.WithWindow(cfg.bwindow))
	}
	if cfg.replicas > 1 {
		opts = append(opts, natsbroker.WithReplicas(cfg.replicas))
	}
	return opts
}

// startNATS starts an embedded NATS with JetStream on 127.0.0.1, its
// files in new directories: one server, or with replicas > 1 a cluster of
// that many. It returns the client URL of each server, and the stop.
func startNATS(replicas int) ([]string, func(), error) {
	var nss []*server.Server
	var dirs []string
	stop := func() {
		for _, ns := range nss {
			ns.Shutdown()
			ns.WaitForShutdown()
		}
		for _, d := range dirs {
			os.RemoveAll(d)
		}
	}
	n := max(replicas, 1)
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, stop, err
		}
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
		ln.Close()
	}
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	var urls []string
	for i := range n {
		dir, err := os.MkdirTemp("", "clusterbench-nats-")
		if err != nil {
			return nil, stop, err
		}
		dirs = append(dirs, dir)
		opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true}
		if n > 1 {
			opts.ServerName = fmt.Sprint("n", i)
			opts.Routes = server.RoutesFromStr(strings.Join(routes, ","))
			opts.Cluster = server.ClusterOpts{Name: "bench", Host: "127.0.0.1", Port: ports[i]}
		}
		ns, err := server.NewServer(opts)
		if err != nil {
			return nil, stop, err
		}
		go ns.Start()
		nss = append(nss, ns)
	}
	for _, ns := range nss {
		if !ns.ReadyForConnections(10 * time.Second) {
			return nil, stop, errors.New("NATS did not start")
		}
		urls = append(urls, ns.ClientURL())
	}
	if n > 1 {
		deadline := time.Now().Add(20 * time.Second)
		for !slices.ContainsFunc(nss, (*server.Server).JetStreamIsLeader) {
			if time.Now().After(deadline) {
				return nil, stop, errors.New("NATS elected no JetStream leader")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return urls, stop, nil
}

// rawResult is NATS's own publish rate, texts/s, with the broker's stream
// settings: texts claiming slots of one room as the broker does (its own
// subject each, expecting it empty), one at a time (each once the previous
// is kept), and pipelined (the broker's window on its way at once).
type rawResult struct{ single, pipelined float64 }

func rawPublish(cfg config) (rawResult, error) {
	urls, stop, err := startNATS(cfg.replicas)
	defer stop()
	if err != nil {
		return rawResult{}, err
	}
	nc, err := nats.Connect(urls[0])
	if err != nil {
		return rawResult{}, err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The broker makes the stream, with its settings.
	b, err := newBroker(ctx, nc, cfg)
	if err != nil {
		return rawResult{}, err
	}
	defer b.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return rawResult{}, err
	}
	data := make([]byte, 150) // a text as the broker stores it, about
	id := func() string {
		var r [16]byte
		_, _ = rand.Read(r[:])
		return hex.EncodeToString(r[:])
	}
	slot := func(n int) *nats.Msg {
		msg := nats.NewMsg("garou.room.cmF3." + strconv.Itoa(n))
		msg.Header.Set("Garou-Seq", strconv.Itoa(n))
		msg.Data = data
		return msg
	}
	start := time.Now()
	for i := range cfg.rawMsgs {
		if _, err := js.PublishMsg(ctx, slot(i+1), jetstream.WithMsgID(id()), jetstream.WithExpectLastSequencePerSubject(0)); err != nil {
			return rawResult{}, err
		}
	}
	single := float64(cfg.rawMsgs) / time.Since(start).Seconds()
	window := cfg.bwindow
	if window == 0 {
		window = natsbroker.DefaultWindow
	}
	start = time.Now()
	var sent []jetstream.PubAckFuture
	for i := range cfg.rawMsgs {
		if len(sent) == window {
			select {
			case <-sent[0].Ok():
			case err := <-sent[0].Err():
				return rawResult{}, err
			}
			sent = sent[1:]
		}
		f, err := js.PublishMsgAsync(slot(cfg.rawMsgs+i+1), jetstream.WithMsgID(id()), jetstream.WithExpectLastSequencePerSubject(0))
		if err != nil {
			return rawResult{}, err
		}
		sent = append(sent, f)
	}
	for _, f := range sent {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return rawResult{}, err
		}
	}
	pipelined := float64(cfg.rawMsgs) / time.Since(start).Seconds()
	return rawResult{single: single, pipelined: pipelined}, nil
}

func report(w io.Writer, cfg config, results []result, raw rawResult) {
	storage := "file"
	if cfg.memory {
		storage = "memory"
	}
	batch := "WithWindow default"
	if cfg.bwindow > 0 {
		batch = fmt.Sprintf("WithWindow(%d)", cfg.bwindow)
	}
	fmt.Fprintf(w, "## Cluster: %d clients in one room, stream storage %s, %d replicas, %s, %d cores\n\n", cfg.clients, storage, max(cfg.replicas, 1), batch, runtime.NumCPU())
	fmt.Fprintf(w, "Burst: %d texts per client, %d in flight each. Paced: a text per client every %v (%.0f texts/s in the room), %d each.\n\n",
		cfg.burstMsgs, cfg.window, cfg.pacedEvery, float64(cfg.clients)/cfg.pacedEvery.Seconds(), cfg.pacedMsgs)
	var alone *result
	for i := range results {
		if results[i].n == 0 {
			alone = &results[i]
		}
	}
	ratio := func(x, by float64) string {
		if alone == nil || by == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", x/by)
	}
	fmt.Fprintf(w, "Medians of %d rounds.\n\n", cfg.rounds)
	fmt.Fprintln(w, "| servers | burst deliveries/s (min-max) | ÷ alone | burst p50 / p99 ms | paced p50 ms | paced p99 ms | p99 ÷ alone | CPU bench | other |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range results {
		name := r.variant.String()
		var burstBy, p99By float64
		if alone != nil {
			burstBy, p99By = alone.burst, float64(alone.pacedP99)
		}
		fmt.Fprintf(w, "| %s | %.0f (%.0f-%.0f) | %s | %s / %s | %s | %s | %s | %.0f%% | %.0f%% |\n", name, r.burst, r.min, r.max, ratio(r.burst, burstBy),
			ms(r.burstP50), ms(r.burstP99), ms(r.pacedP50), ms(r.pacedP99), ratio(float64(r.pacedP99), p99By), 100*r.self, 100*r.other)
	}
	fmt.Fprintf(w, "\nNATS alone, same stream settings, one room's slots: %.0f texts/s publishing one at a time (%.0f deliveries/s to %d clients); %.0f texts/s pipelined as the broker does (%.0f deliveries/s).\n",
		raw.single, raw.single*float64(cfg.clients), cfg.clients, raw.pipelined, raw.pipelined*float64(cfg.clients))
	fmt.Fprintln(w, "\n`CPU bench` is this process's share of all cores during the burst (servers, NATS and clients), `other` the rest of the host's meanwhile: compare ratios of one run.")
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }

// cpuMeter measures this process's CPU and the host's other CPU, as
// shares of all cores.
type cpuMeter struct {
	start      time.Time
	self       time.Duration
	busy, idle uint64
}

func startCPU() *cpuMeter {
	m := &cpuMeter{start: time.Now(), self: selfCPU()}
	m.busy, m.idle = hostTicks()
	return m
}

func (m *cpuMeter) stop() (self, other float64) {
	el := time.Since(m.start)
	cores := float64(runtime.NumCPU())
	s := (selfCPU() - m.self).Seconds() / (el.Seconds() * cores)
	busy, idle := hostTicks()
	if total := float64(busy-m.busy) + float64(idle-m.idle); total > 0 {
		other = max(float64(busy-m.busy)/total-s, 0)
	}
	return s, other
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// hostTicks reads the host's busy and idle ticks from /proc/stat (0, 0
// where there is none).
func hostTicks() (busy, idle uint64) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		if i == 3 || i == 4 { // idle, iowait
			idle += n
		} else if i < 8 {
			busy += n
		}
	}
	return busy, idle
}
