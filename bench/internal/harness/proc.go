package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/garou-chat/garou/bench/internal/impl"
)

// ChildEnv is set in the environment of the processes the benchmark starts
// from its own binary, so that a test binary knows to act as one.
const ChildEnv = "GAROUBENCH_CHILD"

// command re-executes this binary with args.
func command(ctx context.Context, args ...string) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Env = append(os.Environ(), ChildEnv+"=1", "QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING=true")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	return cmd, nil
}

// Stats is a server's answer to "stats": its resident memory as the kernel
// sees it, then, after a forced collection, its live heap and its stacks.
type Stats struct {
	RSSKiB     int64  `json:"rss_kib"`
	HeapBytes  uint64 `json:"heap_bytes"`
	StackBytes uint64 `json:"stack_bytes"`
	Goroutines int    `json:"goroutines"`
}

// serve is the "serve" subcommand: it runs one server, prints
// "ready ADDR FINGERPRINT", answers "stats" lines on stdin with a JSON line,
// and stops when stdin ends or after lifetime.
func serve(args []string, impls []impl.Impl) error {
	fs := newFlagSet("serve")
	name := fs.String("impl", "", "implementation to serve")
	addr := fs.String("addr", "127.0.0.1:0", "address to listen on")
	maxConns := fs.Int("max-conns", 1000, "clients the server must admit")
	queueBytes := fs.Int("queue-bytes", 4<<20, "per-client send queue bound in bytes")
	lifetime := fs.Duration("lifetime", time.Hour, "stop after this long whatever happens")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	memProfile := fs.String("memprofile", "", "write a heap profile to this file at every stats request")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	im, err := lookup(impls, *name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *lifetime)
	defer cancel()
	var outMu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	say := func(line string) {
		outMu.Lock()
		defer outMu.Unlock()
		out.WriteString(line + "\n")
		out.Flush()
	}
	go func() {
		defer cancel()
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "stats" {
				st := readStats()
				if *memProfile != "" {
					writeHeapProfile(*memProfile)
				}
				b, _ := json.Marshal(st)
				say(string(b))
			}
		}
	}()
	cfg := impl.ServerConfig{
		Addr:       *addr,
		MaxConns:   *maxConns,
		QueueBytes: *queueBytes,
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	return im.Serve(ctx, cfg, func(addr, fp string) { say("ready " + addr + " " + fp) })
}

func readStats() Stats {
	st := Stats{RSSKiB: rssKiB(os.Getpid())}
	// Twice: the first collection moves sync.Pool caches to their victim
	// lists, the second frees them, so only what connections hold counts.
	runtime.GC()
	runtime.GC()
	s := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/stacks:bytes"},
	}
	metrics.Read(s)
	st.HeapBytes = s[0].Value.Uint64()
	st.StackBytes = s[1].Value.Uint64()
	st.Goroutines = runtime.NumGoroutine()
	return st
}

func writeHeapProfile(name string) {
	f, err := os.Create(name)
	if err != nil {
		fmt.Fprintln(os.Stderr, "garoubench:", err)
		return
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "garoubench:", err)
	}
}

// rssKiB reads VmRSS from /proc/PID/status.
func rssKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// cpuMicros reads the user and system time of a process from
// /proc/PID/stat, in microseconds (10 ms resolution).
func cpuMicros(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("malformed /proc stat")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	const usPerTick = 1e6 / 100 // USER_HZ is 100 on Linux
	return (utime + stime) * usPerTick, nil
}

// serverProc is a server running in a child process.
type serverProc struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	Addr string
	FP   string
	mu   sync.Mutex

	stopOnce sync.Once
	stopErr  error
}

func startServer(ctx context.Context, impl string, maxConns, queueBytes int, lifetime time.Duration, profile string) (*serverProc, error) {
	args := []string{"serve", "-impl", impl, "-addr", "127.0.0.1:0",
		"-max-conns", strconv.Itoa(maxConns), "-queue-bytes", strconv.Itoa(queueBytes),
		"-lifetime", lifetime.String()}
	if profile != "" {
		args = append(args, "-cpuprofile", profile+".cpu.pprof", "-memprofile", profile+".heap.pprof")
	}
	cmd, err := command(ctx, args...)
	if err != nil {
		return nil, err
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &serverProc{cmd: cmd, in: in, out: bufio.NewReader(outPipe)}
	type ready struct {
		line string
		err  error
	}
	rc := make(chan ready, 1)
	go func() {
		line, err := p.out.ReadString('\n')
		rc <- ready{line, err}
	}()
	select {
	case r := <-rc:
		f := strings.Fields(r.line)
		if r.err != nil || len(f) != 3 || f[0] != "ready" {
			p.kill()
			return nil, fmt.Errorf("server %s did not start: %q %v", impl, r.line, r.err)
		}
		p.Addr, p.FP = f[1], f[2]
	case <-time.After(30 * time.Second):
		p.kill()
		return nil, fmt.Errorf("server %s did not start within 30s", impl)
	}
	return p, nil
}

func (p *serverProc) Pid() int { return p.cmd.Process.Pid }

// Stats asks the server for its memory figures.
func (p *serverProc) Stats() (Stats, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var st Stats
	if _, err := io.WriteString(p.in, "stats\n"); err != nil {
		return st, err
	}
	line, err := p.out.ReadString('\n')
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal([]byte(line), &st)
}

// CPU returns the server's CPU time so far in microseconds.
func (p *serverProc) CPU() int64 {
	us, _ := cpuMicros(p.Pid())
	return us
}

// Stop ends the server by closing its stdin, and kills it if it has not
// exited within grace. Only the first call does anything; every call
// returns its result.
func (p *serverProc) Stop(grace time.Duration) error {
	p.stopOnce.Do(func() {
		p.in.Close()
		done := make(chan error, 1)
		go func() { done <- p.cmd.Wait() }()
		select {
		case p.stopErr = <-done:
		case <-time.After(grace):
			_ = p.cmd.Process.Kill()
			<-done
			p.stopErr = fmt.Errorf("server did not stop within %v; killed", grace)
		}
	})
	return p.stopErr
}

func (p *serverProc) kill() {
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
}
