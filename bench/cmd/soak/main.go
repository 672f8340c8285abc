// Command soak runs a Garou server and many clients in one process for a
// while, with mixed chat, direct messages, joins, leaves and reconnects
// (sockets cut under the clients), and reports deliveries, losses, server
// memory at start and end, and goroutines left at the end. It is run by
// hand, not in CI:
//
//	go run ./cmd/soak -clients 200 -duration 60s
//
// Losses are counted in the rooms a client never leaves (the lobby and its
// home room): every text sequenced there after the client joined must
// reach it exactly once and in order, across its reconnects.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/garou-chat/garou"
)

func main() {
	clients := flag.Int("clients", 200, "number of clients")
	duration := flag.Duration("duration", 60*time.Second, "how long the clients act")
	homes := flag.Int("rooms", 10, "number of home rooms (each client has one)")
	rate := flag.Float64("rate", 2, "actions per second per client")
	flag.Parse()
	if err := run(*clients, *homes, *duration, *rate); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

// stats are the soak's counters.
type stats struct {
	sent, deliveries, directs, gaps, losses, dupes atomic.Int64
	joins, leaves, reconnects, refused             atomic.Int64
}

func run(n, homes int, duration time.Duration, rate float64) error {
	goroutinesBefore := runtime.NumGoroutine()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer pc.Close()
	srv, err := garou.NewServer(
		garou.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))),
		garou.WithMaxConnections(2*n), garou.WithMaxConnectionsPerAddr(2*n), garou.WithMaxHandshakes(n),
	)
	if err != nil {
		return err
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(context.Background(), pc) }()
	addr := pc.LocalAddr().String()

	var st stats
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	cls := make([]*soaker, n)
	for i := range cls {
		cls[i] = &soaker{id: i, st: &st, home: fmt.Sprintf("home-%d", i%homes), last: map[string]uint64{}}
		if err := cls[i].dial(addr, srv.Fingerprint()); err != nil {
			return fmt.Errorf("client %d: %w", i, err)
		}
	}
	fmt.Printf("%d clients connected; acting for %v at %.1f actions/s each\n", n, duration, rate)
	var wg sync.WaitGroup
	for _, c := range cls {
		wg.Go(c.receive)
	}
	memStart := serverMemory()
	var actors sync.WaitGroup
	for _, c := range cls {
		actors.Go(func() { c.act(ctx, rate, n) })
	}
	// Heap every quarter of the run: growth that levels off is buffers and
	// history filling up; growth that goes on is a leak.
	actors.Go(func() {
		t := time.NewTicker(duration / 4)
		defer t.Stop()
		for i := 1; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				fmt.Printf("  at %v: heap %.1f MiB, %d goroutines\n", time.Duration(i)*duration/4, serverMemory(), runtime.NumGoroutine())
			}
		}
	})
	actors.Wait()

	// Let every client catch up with the last text of its measured rooms.
	drain, dcancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer dcancel()
	for _, c := range cls {
		c.catchUp(drain, srv)
	}
	memEnd := serverMemory()
	for _, c := range cls {
		c.close(srv)
	}
	wg.Wait()
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-serveErr; err != nil {
		return err
	}
	pc.Close()
	runtime.GC()
	goroutinesAfter := waitGoroutines(goroutinesBefore)

	fmt.Printf("texts accepted      %d\n", st.sent.Load())
	fmt.Printf("texts delivered     %d (in measured and churn rooms)\n", st.deliveries.Load())
	fmt.Printf("direct messages     %d\n", st.directs.Load())
	fmt.Printf("joins / leaves      %d / %d\n", st.joins.Load(), st.leaves.Load())
	fmt.Printf("reconnects          %d (socket cut under the client)\n", st.reconnects.Load())
	fmt.Printf("refused (rate, ...) %d\n", st.refused.Load())
	fmt.Printf("gap notices         %d\n", st.gaps.Load())
	fmt.Printf("lost deliveries     %d\n", st.losses.Load())
	fmt.Printf("duplicates          %d\n", st.dupes.Load())
	fmt.Printf("heap in use         %.1f MiB after connect, %.1f MiB at end (server and clients, after GC)\n", memStart, memEnd)
	fmt.Printf("goroutines          %d before, %d after everything closed\n", goroutinesBefore, goroutinesAfter)
	if st.losses.Load() != 0 || st.dupes.Load() != 0 {
		return errors.New("messages were lost or duplicated")
	}
	return nil
}

func serverMemory() float64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapInuse) / (1 << 20)
}

// waitGoroutines gives exiting goroutines a moment, then counts them.
func waitGoroutines(want int) int {
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > want && time.Now().Before(deadline) {
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond) // polling a count, not synchronising
	}
	return runtime.NumGoroutine()
}

// soaker is one client and what it has received.
type soaker struct {
	id   int
	st   *stats
	home string
	cli  *garou.Client

	sockMu sync.Mutex
	sock   net.PacketConn

	mu    sync.Mutex
	last  map[string]uint64 // measured room → last seq received
	churn []string          // rooms joined besides lobby and home
}

func (s *soaker) name() string { return fmt.Sprintf("soak%03d", s.id) }

func (s *soaker) dial(addr, fp string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli, err := garou.Dial(ctx, addr, s.name(),
		garou.WithFingerprint(fp),
		garou.WithRooms(garou.DefaultRoom, s.home),
		garou.WithReconnectBackoff(10*time.Millisecond, 200*time.Millisecond),
		garou.WithPacketConn(func(context.Context) (net.PacketConn, error) {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err == nil {
				s.sockMu.Lock()
				s.sock = pc
				s.sockMu.Unlock()
			}
			return pc, err
		}))
	s.cli = cli
	return err
}

func (s *soaker) measured(room string) bool { return room == garou.DefaultRoom || room == s.home }

func (s *soaker) receive() {
	for {
		m, err := s.cli.Receive(context.Background())
		if err != nil {
			return
		}
		switch m.Type {
		case garou.TypeText:
			s.st.deliveries.Add(1)
			if !s.measured(m.Room) {
				continue
			}
			s.mu.Lock()
			last := s.last[m.Room]
			switch {
			case last == 0:
			case m.Seq <= last:
				s.st.dupes.Add(1)
			case m.Seq > last+1:
				s.st.losses.Add(int64(m.Seq - last - 1))
			}
			s.last[m.Room] = max(last, m.Seq)
			s.mu.Unlock()
		case garou.TypeGap:
			s.st.gaps.Add(1)
			s.mu.Lock()
			if s.measured(m.Room) && m.GapTo > s.last[m.Room] {
				s.last[m.Room] = m.GapTo
			}
			s.mu.Unlock()
		case garou.TypeDirect:
			s.st.directs.Add(1)
		}
	}
}

func (s *soaker) act(ctx context.Context, rate float64, n int) {
	rng := rand.New(rand.NewPCG(uint64(s.id), 42))
	for {
		wait := time.Duration(rng.ExpFloat64() / rate * float64(time.Second))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		actx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s.step(actx, rng, n)
		cancel()
	}
}

func (s *soaker) step(ctx context.Context, rng *rand.Rand, n int) {
	roll := rng.Float64()
	switch {
	case roll < 0.70:
		room := garou.DefaultRoom
		if rng.IntN(2) == 0 {
			room = s.home
		}
		if _, err := s.cli.SendTo(ctx, room, fmt.Sprintf("%s says %d", s.name(), rng.Int())); err != nil {
			s.st.refused.Add(1)
			return
		}
		s.st.sent.Add(1)
	case roll < 0.75:
		to := fmt.Sprintf("soak%03d", rng.IntN(n))
		if err := s.cli.SendDirect(ctx, to, "psst"); err != nil {
			s.st.refused.Add(1)
		}
	case roll < 0.85:
		room := fmt.Sprintf("churn-%d", rng.IntN(20))
		s.mu.Lock()
		already := strings.Contains(strings.Join(s.churn, ","), room+",") || len(s.churn) >= 3
		s.mu.Unlock()
		if already {
			return
		}
		if _, err := s.cli.Join(ctx, room, 5); err == nil {
			s.st.joins.Add(1)
			s.mu.Lock()
			s.churn = append(s.churn, room)
			s.mu.Unlock()
		}
	case roll < 0.93:
		s.mu.Lock()
		if len(s.churn) == 0 {
			s.mu.Unlock()
			return
		}
		room := s.churn[0]
		s.churn = s.churn[1:]
		s.mu.Unlock()
		if err := s.cli.Leave(ctx, room); err == nil {
			s.st.leaves.Add(1)
		}
	case roll < 0.95:
		s.sockMu.Lock()
		s.sock.Close() // the network fails under the client
		s.sockMu.Unlock()
		s.st.reconnects.Add(1)
	default:
		_, _ = s.cli.Users(ctx, "")
	}
}

// catchUp waits until the client has received the last text of its
// measured rooms, and counts what never came as lost.
func (s *soaker) catchUp(ctx context.Context, srv *garou.Server) {
	want := map[string]uint64{}
	for _, r := range srv.Rooms() {
		if s.measured(r.Name) {
			want[r.Name] = r.LastSeq
		}
	}
	for {
		s.mu.Lock()
		behind := false
		for room, seq := range want {
			if s.last[room] < seq {
				behind = true
			}
		}
		s.mu.Unlock()
		if !behind {
			return
		}
		select {
		case <-ctx.Done():
			s.mu.Lock()
			for room, seq := range want {
				if s.last[room] < seq {
					s.st.losses.Add(int64(seq - s.last[room]))
				}
			}
			s.mu.Unlock()
			return
		case <-time.After(20 * time.Millisecond): // polling progress
		}
	}
}

func (s *soaker) close(*garou.Server) { _ = s.cli.Close() }
