package harness

import (
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// baselines are the implementations the ratio columns compare with, in
// the order of the "x quic / x ws" cells.
var baselines = []string{"quic-min", "ws-tls"}

// summary is the median of one implementation's rounds in one scenario.
type summary struct {
	Result
	rounds int
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// summarize takes the median of every figure over the rounds, and the
// worst of the losses and errors.
func summarize(rs []Result) summary {
	s := summary{Result: rs[0], rounds: len(rs)}
	pick := func(f func(Result) float64) float64 {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = f(r)
		}
		return median(xs)
	}
	s.Rate = pick(func(r Result) float64 { return r.Rate })
	s.Seconds = pick(func(r Result) float64 { return r.Seconds })
	s.CPUPerDelivery = pick(func(r Result) float64 { return r.CPUPerDelivery })
	s.LoadPerDelivery = pick(func(r Result) float64 { return r.LoadPerDelivery })
	s.Busy = pick(func(r Result) float64 { return r.Busy })
	s.Other = pick(func(r Result) float64 { return r.Other })
	s.P50 = pick(func(r Result) float64 { return r.P50 })
	s.P99 = pick(func(r Result) float64 { return r.P99 })
	s.P999 = pick(func(r Result) float64 { return r.P999 })
	s.RSSPerConn = pick(func(r Result) float64 { return r.RSSPerConn })
	s.LivePerConn = pick(func(r Result) float64 { return r.LivePerConn })
	s.GoroutinesPerConn = pick(func(r Result) float64 { return r.GoroutinesPerConn })
	s.CPUPerConnect = pick(func(r Result) float64 { return r.CPUPerConnect })
	s.FirstTenth = pick(func(r Result) float64 { return r.FirstTenth })
	s.LastTenth = pick(func(r Result) float64 { return r.LastTenth })
	s.LoadPerConnect = pick(func(r Result) float64 { return r.LoadPerConnect })
	s.Max = pick(func(r Result) float64 { return r.Max })
	s.P50Next = pick(func(r Result) float64 { return r.P50Next })
	s.P99Next = pick(func(r Result) float64 { return r.P99Next })
	s.StormP50 = pick(func(r Result) float64 { return r.StormP50 })
	s.StormMax = pick(func(r Result) float64 { return r.StormMax })
	s.Dropped = pick(func(r Result) float64 { return r.Dropped })
	s.PingMs = pick(func(r Result) float64 { return r.PingMs })
	s.P90 = pick(func(r Result) float64 { return r.P90 })
	s.EarlyP50 = pick(func(r Result) float64 { return r.EarlyP50 })
	s.EarlyP90 = pick(func(r Result) float64 { return r.EarlyP90 })
	s.EarlyMax = pick(func(r Result) float64 { return r.EarlyMax })
	s.MoverPause = pick(func(r Result) float64 { return r.MoverPause })
	s.StillPause = pick(func(r Result) float64 { return r.StillPause })
	s.MovePause = pick(func(r Result) float64 { return r.MovePause })
	s.StillMovePause = pick(func(r Result) float64 { return r.StillMovePause })
	s.MoveMs = pick(func(r Result) float64 { return r.MoveMs })
	for _, r := range rs {
		s.Lost = max(s.Lost, r.Lost)
		s.Duplicated = max(s.Duplicated, r.Duplicated)
		s.EarlyHellos = min(s.EarlyHellos, r.EarlyHellos)
		s.Moves = min(s.Moves, r.Moves)
		s.Errors = max(s.Errors, r.Errors)
		if s.FirstErr == "" {
			s.FirstErr = r.FirstErr
		}
		s.Connected = min(s.Connected, r.Connected)
		s.Finished = s.Finished && r.Finished
	}
	return s
}

// group summarizes the results of one scenario (and of one variant: for
// crowd a crowd, for lossy a loss rate) per implementation, in the order
// they ran.
func group(results []Result, scenario, variant string) (order []string, by map[string]summary) {
	raw := map[string][]Result{}
	for _, r := range results {
		if r.Scenario != scenario || r.Crowd+r.Loss != variant {
			continue
		}
		if _, ok := raw[r.Impl]; !ok {
			order = append(order, r.Impl)
		}
		raw[r.Impl] = append(raw[r.Impl], r)
	}
	by = map[string]summary{}
	for k, v := range raw {
		by[k] = summarize(v)
	}
	return order, by
}

// num formats a figure with three significant digits, and thousands
// separators for large ones.
func num(x float64) string {
	switch {
	case math.IsNaN(x) || math.IsInf(x, 0):
		return "–"
	case math.Abs(x) >= 1000:
		s := strconv.FormatInt(int64(math.Round(x)), 10)
		var b strings.Builder
		for i, c := range s {
			if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
				b.WriteByte(',')
			}
			b.WriteRune(c)
		}
		return b.String()
	case math.Abs(x) >= 100:
		return strconv.FormatFloat(x, 'f', 0, 64)
	case math.Abs(x) >= 10:
		return strconv.FormatFloat(x, 'f', 1, 64)
	default:
		return strconv.FormatFloat(x, 'f', 2, 64)
	}
}

// count formats a count with thousands separators.
func count(n int) string {
	if n < 1000 {
		return strconv.Itoa(n)
	}
	return num(float64(n))
}

// ratio is x over the baselines' figures, as "1.23 / 0.98" (x quic-min /
// x ws-tls), with "–" for a baseline that did not run, had errors or did
// not connect all of its crowd.
func ratio(x float64, by map[string]summary, f func(summary) float64) string {
	cells := make([]string, len(baselines))
	for i, name := range baselines {
		b, ok := by[name]
		if !ok || f(b) == 0 || b.Errors > 0 || (b.Scenario == Crowd && !b.Finished) {
			cells[i] = "–"
			continue
		}
		cells[i] = strconv.FormatFloat(x/f(b), 'f', 2, 64)
	}
	return strings.Join(cells, " / ")
}

func errCell(s summary) string {
	if s.Errors == 0 {
		return "0"
	}
	msg := s.FirstErr
	if len(msg) > 60 {
		msg = msg[:60] + "…"
	}
	msg = strings.ReplaceAll(msg, "|", "/")
	return fmt.Sprintf("%d (%s)", s.Errors, msg)
}

// WriteReport prints one markdown table per scenario, one row per
// implementation (and crowd), with the median over rounds and ratios to
// quic-min and ws-tls.
func WriteReport(w io.Writer, cfg Config, results []Result) {
	host, _ := os.Hostname()
	fmt.Fprintf(w, "# garoubench %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(w, "%s, %s/%s, %d CPUs, GOMAXPROCS %d, host %s; rounds %d (median shown; lost and errors: worst round).\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0), host, cfg.Rounds)
	fmt.Fprintf(w, "Server and load run in separate processes on the same host; \"x quic / x ws\" are the ratios to quic-min and ws-tls in this run.\n")
	fmt.Fprintf(w, "CPU bench / other: share of all cores used by the server and load processes / by the rest of the host.\n")
	disturbed := 0.0
	for _, r := range results {
		disturbed = max(disturbed, r.Other)
	}
	defer func() {
		if disturbed > 10 {
			fmt.Fprintf(w, "\nWarning: other processes used up to %.0f%% of the host's CPU during a measurement; the figures are disturbed.\n", disturbed)
		}
	}()
	for _, sc := range splitList(cfg.Scenarios) {
		if sc == Crowd {
			writeCrowds(w, cfg, results)
			continue
		}
		if sc == Lossy {
			writeLossy(w, cfg, results)
			continue
		}
		if sc == Reconnect {
			writeReconnect(w, cfg, results)
			continue
		}
		if sc == Migrate {
			writeMigrate(w, cfg, results)
			continue
		}
		order, by := group(results, sc, "")
		if len(order) == 0 {
			continue
		}
		fmt.Fprintln(w)
		switch sc {
		case Burst:
			fmt.Fprintf(w, "## burst: %d clients × %d texts of %d B, window %d (%s deliveries)\n\n",
				cfg.BurstClients, cfg.BurstMsgs, cfg.TextSize, cfg.Window,
				num(float64(cfg.BurstClients)*float64(cfg.BurstClients)*float64(cfg.BurstMsgs)))
			fmt.Fprintln(w, "| impl | deliveries/s | x quic / x ws | server CPU µs/delivery | x quic / x ws | load CPU µs/delivery | x quic / x ws | seconds | CPU bench / other | lost | errors |")
			fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
			for _, name := range order {
				s := by[name]
				fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %.0f%% / %.0f%% | %d | %s |\n", name,
					num(s.Rate), ratio(s.Rate, by, func(s summary) float64 { return s.Rate }),
					num(s.CPUPerDelivery), ratio(s.CPUPerDelivery, by, func(s summary) float64 { return s.CPUPerDelivery }),
					num(s.LoadPerDelivery), ratio(s.LoadPerDelivery, by, func(s summary) float64 { return s.LoadPerDelivery }),
					num(s.Seconds), s.Busy, s.Other, s.Lost, errCell(s))
			}
			writeDurable(w, sc, results)
		case Paced:
			fmt.Fprintf(w, "## paced: %d clients, %s texts/s for %v (%s deliveries/s), latency from due send time to each delivery\n\n",
				cfg.PacedClients, num(cfg.PacedRate), cfg.PacedDuration, num(cfg.PacedRate*float64(cfg.PacedClients)))
			fmt.Fprintln(w, "| impl | deliveries/s | p50 ms | p99 ms | p99.9 ms | p99 x quic / x ws | server CPU µs/delivery | x quic / x ws | CPU bench / other | lost | errors |")
			fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
			for _, name := range order {
				s := by[name]
				fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %.0f%% / %.0f%% | %d | %s |\n", name,
					num(s.Rate), num(s.P50), num(s.P99), num(s.P999),
					ratio(s.P99, by, func(s summary) float64 { return s.P99 }),
					num(s.CPUPerDelivery), ratio(s.CPUPerDelivery, by, func(s summary) float64 { return s.CPUPerDelivery }),
					s.Busy, s.Other, s.Lost, errCell(s))
			}
		case Acks:
			fmt.Fprintf(w, "## acks: %d clients in %d rooms, each says a text of %d B and waits for its acknowledgement before the next, for %v\n\n",
				cfg.AcksClients, cfg.AcksRooms, cfg.TextSize, cfg.AcksDuration)
			fmt.Fprintln(w, "Garou's acknowledgement is the return of Send (with a durable store: the text is on disk); a baseline's is its own text coming back.")
			fmt.Fprintln(w)
			fmt.Fprintln(w, "| impl | acknowledged texts/s | x quic / x ws | ack p50 ms | p99 ms | p99.9 ms | server CPU µs/text | x quic / x ws | CPU bench / other | errors |")
			fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
			for _, name := range order {
				s := by[name]
				fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %.0f%% / %.0f%% | %s |\n", name,
					num(s.Rate), ratio(s.Rate, by, func(s summary) float64 { return s.Rate }),
					num(s.P50), num(s.P99), num(s.P999),
					num(s.CPUPerDelivery), ratio(s.CPUPerDelivery, by, func(s summary) float64 { return s.CPUPerDelivery }),
					s.Busy, s.Other, errCell(s))
			}
			writeDurable(w, sc, results)
		case Idle:
			fmt.Fprintf(w, "## idle: %d connections, memory measured %v after the last one\n\n", cfg.IdleConns, cfg.Settle)
			fmt.Fprintln(w, "| impl | RSS KiB/conn | x quic / x ws | live heap+stack KiB/conn | x quic / x ws | goroutines/conn | connects/s | x quic / x ws | server CPU ms/connect | x quic / x ws | CPU bench / other | errors |")
			fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
			for _, name := range order {
				s := by[name]
				fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %.2f | %s | %s | %s | %s | %.0f%% / %.0f%% | %s |\n", name,
					num(s.RSSPerConn), ratio(s.RSSPerConn, by, func(s summary) float64 { return s.RSSPerConn }),
					num(s.LivePerConn), ratio(s.LivePerConn, by, func(s summary) float64 { return s.LivePerConn }),
					s.GoroutinesPerConn,
					num(s.Rate), ratio(s.Rate, by, func(s summary) float64 { return s.Rate }),
					num(s.CPUPerConnect), ratio(s.CPUPerConnect, by, func(s summary) float64 { return s.CPUPerConnect }),
					s.Busy, s.Other, errCell(s))
			}
		}
	}
}

// writeCrowds prints the crowd table: one row per crowd and implementation.
func writeCrowds(w io.Writer, cfg Config, results []Result) {
	crowds := splitList(cfg.Crowds)
	first := map[string]summary{} // each implementation's first crowd
	var notes []string
	header := false
	for _, crowd := range crowds {
		order, by := group(results, Crowd, crowd)
		if len(order) == 0 {
			continue
		}
		if !header {
			header = true
			fmt.Fprintf(w, "\n## crowd: N clients connect (%d at a time) into one room, or over R rooms (N/R); then the first member of each room says a text, twice\n\n", cfg.DialConcurrency)
			fmt.Fprintf(w, "Connecting is bounded by %v. Memory is measured %v after the last connection. Text latencies are from the send to each delivery: storm texts are said every %v while the crowd connects, in a room of two other clients (the server must not starve its other rooms); the first text is the first thing the connections carry since connecting, the second follows once everyone has the first.\n\n", cfg.CrowdBudget, cfg.Settle, stormEvery)
			fmt.Fprintln(w, "| crowd | impl | connected | connect s | server CPU ms/connect | x quic / x ws | x first crowd | last ÷ first tenth | RSS KiB/conn | x quic / x ws | live KiB/conn | x quic / x ws | storm text p50 ms | max ms | 1st text p50 ms | p99 ms | x quic / x ws | 2nd text p50 ms | p99 ms | x quic / x ws | lost | errors |")
			fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
		}
		for _, name := range order {
			s := by[name]
			f, ok := first[name]
			if !ok {
				first[name], f = s, s
			}
			connected := count(s.Connected)
			if !s.Finished {
				connected = fmt.Sprintf("%s of %s (budget)", count(s.Connected), count(s.Clients))
				notes = append(notes, fmt.Sprintf("%s, crowd %s: did not finish within budget (%v), reached %s of %s",
					name, crowd, cfg.CrowdBudget, count(s.Connected), count(s.Clients)))
			}
			vsFirst, tenths := "–", "–"
			if f.CPUPerConnect > 0 {
				vsFirst = strconv.FormatFloat(s.CPUPerConnect/f.CPUPerConnect, 'f', 2, 64)
			}
			if s.FirstTenth > 0 {
				tenths = strconv.FormatFloat(s.LastTenth/s.FirstTenth, 'f', 2, 64)
			}
			p50, p99, p99x, lost := "–", "–", "–", "–"
			p50n, p99n, p99nx := "–", "–", "–"
			if s.Expected > 0 {
				p50, p99 = num(s.P50), num(s.P99)
				p99x = ratio(s.P99, by, func(s summary) float64 { return s.P99 })
				p50n, p99n = num(s.P50Next), num(s.P99Next)
				p99nx = ratio(s.P99Next, by, func(s summary) float64 { return s.P99Next })
				lost = strconv.FormatInt(s.Lost, 10)
			}
			storm50, storm99 := "–", "–"
			if s.StormTexts > 0 {
				storm50, storm99 = num(s.StormP50), num(s.StormMax)
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
				crowd, name, connected, num(s.Seconds),
				num(s.CPUPerConnect), ratio(s.CPUPerConnect, by, func(s summary) float64 { return s.CPUPerConnect }),
				vsFirst, tenths,
				num(s.RSSPerConn), ratio(s.RSSPerConn, by, func(s summary) float64 { return s.RSSPerConn }),
				num(s.LivePerConn), ratio(s.LivePerConn, by, func(s summary) float64 { return s.LivePerConn }),
				storm50, storm99, p50, p99, p99x, p50n, p99n, p99nx, lost, errCell(s))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintf(w, "- %s.\n", n)
		}
	}
}

// writeLossy prints the lossy table: one row per loss rate and
// implementation.
func writeLossy(w io.Writer, cfg Config, results []Result) {
	header := false
	for _, loss := range splitList(cfg.LossyLoss) {
		order, by := group(results, Lossy, loss)
		if len(order) == 0 {
			continue
		}
		if !header {
			header = true
			ping := "–"
			if s := by[order[0]]; s.PingMs > 0 {
				ping = num(s.PingMs) + " ms"
			}
			fmt.Fprintf(w, "\n## lossy: %d clients in %d rooms, %s texts/s for %v, over a loopback with %v round trip (ping: %s) and loss on input (so each way)\n\n",
				cfg.LossyClients, cfg.LossyRooms, num(cfg.LossyRate), cfg.LossyDuration, cfg.LossyRTT, ping)
			fmt.Fprintf(w, "A text reaches the %s members of its sender's room; latency is from its due send time to each delivery. \"dropped\" is the share of all packets the loss rule dropped during the run.\n\n",
				num(float64(cfg.LossyClients)/float64(cfg.LossyRooms)))
			fmt.Fprintln(w, "| loss | impl | dropped | deliveries/s | p50 ms | x quic / x ws | p99 ms | x quic / x ws | p99.9 ms | x quic / x ws | CPU bench / other | lost | errors |")
			fmt.Fprintln(w, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
		}
		for _, name := range order {
			s := by[name]
			fmt.Fprintf(w, "| %s%% | %s | %.2f%% | %s | %s | %s | %s | %s | %s | %s | %.0f%% / %.0f%% | %d | %s |\n",
				loss, name, s.Dropped, num(s.Rate),
				num(s.P50), ratio(s.P50, by, func(s summary) float64 { return s.P50 }),
				num(s.P99), ratio(s.P99, by, func(s summary) float64 { return s.P99 }),
				num(s.P999), ratio(s.P999, by, func(s summary) float64 { return s.P999 }),
				s.Busy, s.Other, s.Lost, errCell(s))
		}
	}
}

// memoryImpl is Garou with its history in memory, which the rows of Garou
// with a durable store (durableImpls) are compared with.
const memoryImpl = "garou"

// durableImpls are the implementations that are Garou with a durable
// history store. Other variants (garou-ws) differ in more than the store
// and are compared with the baselines instead.
var durableImpls = map[string]bool{"garou-bolt": true, "garou-pebble": true}

// writeDurable prints, for burst and acks, each durable Garou's figures
// divided by in-memory Garou's in the same run: the ratio of the medians,
// and the range of the ratios round by round (the implementations of a
// round run one after the other, so a round's ratio compares figures
// taken under about the same load from other processes).
func writeDurable(w io.Writer, sc string, results []Result) {
	order, by := group(results, sc, "")
	mem, ok := by[memoryImpl]
	if !ok || mem.Errors > 0 || mem.Rate == 0 {
		return
	}
	var durable []string
	for _, name := range order {
		if durableImpls[name] {
			durable = append(durable, name)
		}
	}
	if len(durable) == 0 {
		return
	}
	rate := "deliveries/s"
	if sc == Acks {
		rate = "acknowledged texts/s"
	}
	perRound := func(name string, f func(Result) float64) string {
		memBy := map[int]float64{}
		for _, r := range results {
			if r.Scenario == sc && r.Impl == memoryImpl && r.Errors == 0 {
				memBy[r.Round] = f(r)
			}
		}
		var xs []float64
		for _, r := range results {
			if m := memBy[r.Round]; r.Scenario == sc && r.Impl == name && r.Errors == 0 && m > 0 {
				xs = append(xs, f(r)/m)
			}
		}
		if len(xs) == 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f-%.2f", slices.Min(xs), slices.Max(xs))
	}
	fmt.Fprintf(w, "\n### %s: Garou with a durable history store ÷ Garou with its history in memory, same run\n\n", sc)
	fmt.Fprintf(w, "| impl | %s ÷ memory | per round | server CPU µs/%s ÷ memory | per round | errors |\n", rate, map[bool]string{true: "text", false: "delivery"}[sc == Acks])
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---|")
	rateOf := func(r Result) float64 { return r.Rate }
	cpuOf := func(r Result) float64 { return r.CPUPerDelivery }
	for _, name := range durable {
		s := by[name]
		cpu := "–"
		if mem.CPUPerDelivery > 0 {
			cpu = strconv.FormatFloat(s.CPUPerDelivery/mem.CPUPerDelivery, 'f', 2, 64)
		}
		fmt.Fprintf(w, "| %s | %.2f | %s | %s | %s | %s |\n", name, s.Rate/mem.Rate, perRound(name, rateOf), cpu, perRound(name, cpuOf), errCell(s))
	}
}
