// Package harness runs the benchmark: the orchestrator, the load
// generator and the server, each in a process of its own started from the
// same binary.
package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/garou-chat/garou/bench/internal/impl"
)

// Scenarios, in the order they run.
const (
	Burst = "burst"
	Paced = "paced"
	Idle  = "idle"
	Crowd = "crowd"
	Lossy = "lossy"
	// Acks measures acknowledged texts per second: each client waits for
	// the acknowledgement of its text before saying the next.
	Acks = "acks"
	// Reconnect and Migrate run Garou alone on the emulated network of
	// lossy, at -lossy-rtt without loss (package mobility).
	Reconnect = "reconnect"
	Migrate   = "migrate"
)

// Config is every knob of a run. The orchestrator hands all of it to each
// load process.
type Config struct {
	Impls     string
	Scenarios string
	Rounds    int

	BurstClients int
	BurstMsgs    int
	TextSize     int
	Window       int

	PacedClients  int
	PacedRate     float64
	PacedDuration time.Duration

	IdleConns       int
	DialConcurrency int
	Settle          time.Duration

	Crowds      string
	CrowdBudget time.Duration

	AcksClients  int
	AcksRooms    int
	AcksDuration time.Duration

	LossyLoss     string
	LossyRTT      time.Duration
	LossyClients  int
	LossyRooms    int
	LossyRate     float64
	LossyDuration time.Duration
	// Loss is the loss rate of one lossy run, set by the orchestrator
	// for the load process.
	Loss float64

	ReconnectReps   int
	ReconnectMissed int
	MigrateMoves    int
	MigrateDuration time.Duration
	MigrateEvery    time.Duration

	QueueBytes int
	Timeout    time.Duration
	Verbose    bool
	Profile    string
	Round      int
}

// DefaultConfig is the quick run: burst, paced and idle for the three
// implementations take about three minutes on two cores. The crowd
// scenario takes longer and runs only when asked for.
func DefaultConfig() Config {
	return Config{
		Impls:           "quic-min,ws-tls,garou",
		Scenarios:       "burst,paced,idle",
		Rounds:          1,
		BurstClients:    50,
		BurstMsgs:       1000,
		TextSize:        100,
		Window:          64,
		PacedClients:    100,
		PacedRate:       500,
		PacedDuration:   10 * time.Second,
		IdleConns:       1000,
		DialConcurrency: 32,
		Settle:          2 * time.Second,
		Crowds:          "1000,5000,10000,10000/100",
		CrowdBudget:     2 * time.Minute,
		AcksClients:     128,
		AcksRooms:       128,
		AcksDuration:    5 * time.Second,
		LossyLoss:       "0,1,2,5",
		LossyRTT:        20 * time.Millisecond,
		LossyClients:    80,
		LossyRooms:      8,
		LossyRate:       400,
		LossyDuration:   10 * time.Second,
		ReconnectReps:   50,
		ReconnectMissed: 3,
		MigrateMoves:    3,
		MigrateDuration: 3 * time.Second,
		MigrateEvery:    4 * time.Millisecond,
		QueueBytes:      4 << 20,
		Timeout:         2 * time.Minute,
	}
}

func (c *Config) register(fs *flag.FlagSet) {
	fs.StringVar(&c.Impls, "impls", c.Impls, "comma-separated implementations to run")
	fs.StringVar(&c.Scenarios, "scenarios", c.Scenarios, "comma-separated scenarios: burst, paced, idle, acks, crowd, lossy, reconnect, migrate (the last three need root, nft and iptables)")
	fs.IntVar(&c.Rounds, "rounds", c.Rounds, "rounds per implementation and scenario; the table shows the median")
	fs.IntVar(&c.BurstClients, "burst-clients", c.BurstClients, "burst: clients, each sending and receiving")
	fs.IntVar(&c.BurstMsgs, "burst-msgs", c.BurstMsgs, "burst: texts each client sends")
	fs.IntVar(&c.TextSize, "text-size", c.TextSize, "bytes of each text")
	fs.IntVar(&c.Window, "window", c.Window, "burst: texts a client may have in flight (sent, not yet received back); 0 for no limit")
	fs.IntVar(&c.PacedClients, "paced-clients", c.PacedClients, "paced: clients, each sending and receiving")
	fs.Float64Var(&c.PacedRate, "paced-rate", c.PacedRate, "paced: texts per second from all clients together")
	fs.DurationVar(&c.PacedDuration, "paced-duration", c.PacedDuration, "paced: how long the clients send")
	fs.IntVar(&c.IdleConns, "idle-conns", c.IdleConns, "idle: connections")
	fs.IntVar(&c.DialConcurrency, "dial-concurrency", c.DialConcurrency, "connections being set up at once")
	fs.DurationVar(&c.Settle, "idle-settle", c.Settle, "idle and crowd: wait after the last connection before measuring memory")
	fs.StringVar(&c.Crowds, "crowds", c.Crowds, "crowd: comma-separated crowds, each N (clients in one room) or N/R (N clients over R rooms)")
	fs.DurationVar(&c.CrowdBudget, "crowd-budget", c.CrowdBudget, "crowd: time allowed to connect a crowd; past it the run reports how many connected")
	fs.IntVar(&c.AcksClients, "acks-clients", c.AcksClients, "acks: clients, each saying a text and waiting for its acknowledgement before the next")
	fs.IntVar(&c.AcksRooms, "acks-rooms", c.AcksRooms, "acks: rooms; client i is in room i mod rooms")
	fs.DurationVar(&c.AcksDuration, "acks-duration", c.AcksDuration, "acks: how long the clients send")
	fs.StringVar(&c.LossyLoss, "lossy-loss", c.LossyLoss, "lossy: comma-separated loss rates in percent, applied to every packet on input (so each way)")
	fs.DurationVar(&c.LossyRTT, "lossy-rtt", c.LossyRTT, "lossy: round-trip time added to the loopback (half on each packet's way out)")
	fs.IntVar(&c.LossyClients, "lossy-clients", c.LossyClients, "lossy: clients, each sending and receiving")
	fs.IntVar(&c.LossyRooms, "lossy-rooms", c.LossyRooms, "lossy: rooms; client i is in room i mod rooms")
	fs.Float64Var(&c.LossyRate, "lossy-rate", c.LossyRate, "lossy: texts per second from all clients together")
	fs.DurationVar(&c.LossyDuration, "lossy-duration", c.LossyDuration, "lossy: how long the clients send, per loss rate and implementation")
	fs.Float64Var(&c.Loss, "loss", c.Loss, "lossy: the loss rate of this run (set by run for each load process)")
	fs.IntVar(&c.ReconnectReps, "reconnect-reps", c.ReconnectReps, "reconnect: reconnects per round of each client, the one with 0-RTT and the one without")
	fs.IntVar(&c.ReconnectMissed, "reconnect-missed", c.ReconnectMissed, "reconnect: texts said while a client is away")
	fs.IntVar(&c.MigrateMoves, "migrate-moves", c.MigrateMoves, "migrate: moves to a new socket during the burst")
	fs.DurationVar(&c.MigrateDuration, "migrate-duration", c.MigrateDuration, "migrate: how long the burst lasts")
	fs.DurationVar(&c.MigrateEvery, "migrate-every", c.MigrateEvery, "migrate: how often each of the two clients says a text")
	fs.IntVar(&c.QueueBytes, "queue-bytes", c.QueueBytes, "per-client server send queue bound in bytes, for every implementation")
	fs.DurationVar(&c.Timeout, "timeout", c.Timeout, "bound on one scenario run of one implementation")
	fs.BoolVar(&c.Verbose, "v", c.Verbose, "print progress")
	fs.StringVar(&c.Profile, "profile", c.Profile, "directory for CPU and heap profiles of every server process, and CPU profiles of every load process")
	fs.IntVar(&c.Round, "round", c.Round, "round number, for profile names (set by run for each load process)")
}

func (c *Config) validate() error {
	switch {
	case c.Rounds < 1:
		return errors.New("-rounds must be at least 1")
	case c.BurstClients < 1 || c.BurstMsgs < 1 || c.PacedClients < 1 || c.IdleConns < 1:
		return errors.New("client and message counts must be at least 1")
	case c.TextSize < 40:
		return errors.New("-text-size must be at least 40")
	case c.Window < 0:
		return errors.New("-window must not be negative")
	case c.PacedRate <= 0 || c.PacedDuration <= 0:
		return errors.New("-paced-rate and -paced-duration must be positive")
	case c.DialConcurrency < 1:
		return errors.New("-dial-concurrency must be at least 1")
	case c.QueueBytes < 64<<10:
		return errors.New("-queue-bytes must be at least 65536")
	case c.Timeout <= 0:
		return errors.New("-timeout must be positive")
	case c.CrowdBudget <= 0:
		return errors.New("-crowd-budget must be positive")
	}
	for _, sc := range splitList(c.Scenarios) {
		switch sc {
		case Burst, Paced, Idle:
		case Acks:
			if c.AcksClients < 1 || c.AcksRooms < 1 || c.AcksRooms > c.AcksClients || c.AcksDuration <= 0 {
				return errors.New("acks: want 1 <= -acks-rooms <= -acks-clients and a positive -acks-duration")
			}
		case Lossy:
			if _, err := parseLosses(c.LossyLoss); err != nil {
				return err
			}
			if c.LossyClients < 1 || c.LossyRooms < 1 || c.LossyRooms > c.LossyClients || c.LossyRate <= 0 || c.LossyDuration <= 0 || c.LossyRTT < 0 {
				return errors.New("lossy: want 1 <= -lossy-rooms <= -lossy-clients, a positive -lossy-rate and -lossy-duration, and -lossy-rtt >= 0")
			}
		case Reconnect, Migrate:
			if err := c.validateMobility(sc); err != nil {
				return err
			}
		case Crowd:
			if len(splitList(c.Crowds)) == 0 {
				return errors.New("-crowds is empty")
			}
			for _, spec := range splitList(c.Crowds) {
				if _, _, err := parseCrowd(spec); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("unknown scenario %q", sc)
		}
	}
	return nil
}

// loadTimeout bounds one load process: -timeout, or for a crowd long
// enough for its budget, the two settlings, the two texts and the
// teardown.
func (c *Config) loadTimeout(scenario string) time.Duration {
	if scenario == Crowd {
		return max(c.Timeout, c.CrowdBudget+2*c.Settle+2*stallLimit+time.Minute)
	}
	return c.Timeout
}

// args renders the configuration as flags for a child process.
func (c *Config) args() []string {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	c.register(fs)
	var out []string
	fs.VisitAll(func(f *flag.Flag) { out = append(out, "-"+f.Name+"="+f.Value.String()) })
	return out
}

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("garoubench "+name, flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	return fs
}

func lookup(impls []impl.Impl, name string) (impl.Impl, error) {
	for _, im := range impls {
		if im.Name == name {
			return im, nil
		}
	}
	names := make([]string, len(impls))
	for i, im := range impls {
		names[i] = im.Name
	}
	return impl.Impl{}, fmt.Errorf("unknown implementation %q (have %s)", name, strings.Join(names, ", "))
}

func splitList(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

const usage = `garoubench compares Garou with two baseline chat servers.

usage:
  garoubench [run] [flags]   run the scenarios and print the tables
  garoubench load  [flags]   run one scenario (-scenarios) of one implementation (-impls), print its result
                             (lossy: run by run inside its network namespace, at the loss rate -loss)
  garoubench serve [flags]   run one server (started by load)

flags of run and load:
`

// Main runs the command line and returns the exit code.
func Main(args []string, impls []impl.Impl) int {
	sub := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	var err error
	switch sub {
	case "run", "load":
		cfg := DefaultConfig()
		fs := newFlagSet(sub)
		cfg.register(fs)
		fs.Usage = func() {
			fmt.Fprint(os.Stderr, usage)
			fs.PrintDefaults()
		}
		if err = fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return 2
		}
		if err = cfg.validate(); err != nil {
			break
		}
		if sub == "run" {
			err = runAll(cfg, impls, os.Stdout)
		} else {
			err = loadMain(cfg, impls)
		}
	case "serve":
		err = serve(args, impls)
	default:
		err = fmt.Errorf("unknown command %q; try -h", sub)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "garoubench:", err)
		return 1
	}
	return 0
}

// Run runs every scenario of cfg for every implementation, each in load
// and server processes of its own, and returns one result per run.
func Run(ctx context.Context, cfg Config, impls []impl.Impl, progress io.Writer) ([]Result, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	names := splitList(cfg.Impls)
	for _, n := range names {
		if _, err := lookup(impls, n); err != nil {
			return nil, err
		}
	}
	if cfg.Profile != "" {
		if err := os.MkdirAll(cfg.Profile, 0o755); err != nil {
			return nil, err
		}
		abs, err := filepath.Abs(cfg.Profile)
		if err != nil {
			return nil, err
		}
		cfg.Profile = abs
	}
	var results []Result
	for _, sc := range splitList(cfg.Scenarios) {
		scNames := names
		if isMobility(sc) {
			scNames = nil
			if slices.Contains(names, mobilityImpl) {
				scNames = []string{mobilityImpl}
			}
		}
		if len(scNames) == 0 {
			continue
		}
		variants := []string{""}
		var net *lossyNet
		switch sc {
		case Crowd:
			variants = splitList(cfg.Crowds)
		case Lossy, Reconnect, Migrate:
			if sc == Lossy {
				variants = splitList(cfg.LossyLoss)
			}
			var err error
			if net, err = openLossy(ctx, cfg, progress); err != nil {
				return results, err
			}
		}
		for _, variant := range variants {
			var start func(*exec.Cmd) error
			if net != nil {
				var loss float64 // reconnect and migrate: none
				if sc == Lossy {
					loss, _ = strconv.ParseFloat(variant, 64) // validated
				}
				if err := net.set(cfg, loss); err != nil {
					net.close()
					return results, err
				}
				start = net.start
			}
			for round := range cfg.Rounds {
				for _, name := range scNames {
					child := cfg
					child.Impls, child.Scenarios, child.Round = name, sc, round+1
					label := sc
					switch sc {
					case Crowd:
						child.Crowds = variant
						label += " " + variant
					case Lossy:
						child.Loss, _ = strconv.ParseFloat(variant, 64)
						child.LossyLoss = variant
						label += " " + variant + "%"
					}
					res, err := runLoad(ctx, child, start)
					if err != nil {
						res = Result{Impl: name, Scenario: sc, Errors: 1, FirstErr: err.Error()}
						if sc == Crowd {
							res.Crowd = variant
						} else if sc == Lossy {
							res.Loss = variant
						}
					}
					res.Round = round + 1
					if net != nil {
						net.note(&res)
						if err := net.set(cfg, child.Loss); err != nil { // resets the counters
							net.close()
							return results, err
						}
					}
					if progress != nil {
						fmt.Fprintf(progress, "%s %s round %d/%d: %s\n", label, name, round+1, cfg.Rounds, res.summary())
					}
					results = append(results, res)
				}
			}
		}
		if net != nil {
			if err := net.close(); err != nil {
				return results, err
			}
		}
	}
	return results, nil
}

func runAll(cfg Config, impls []impl.Impl, out io.Writer) error {
	results, err := Run(context.Background(), cfg, impls, os.Stderr)
	if err != nil {
		return err
	}
	WriteReport(out, cfg, results)
	return nil
}

// runLoad runs one load process for child, a configuration of one
// implementation, one scenario and, for crowd, one crowd, and reads its
// result.
// start starts the process (nil: cmd.Start), e.g. inside the emulated
// network of a lossy run.
func runLoad(ctx context.Context, child Config, start func(*exec.Cmd) error) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, child.loadTimeout(child.Scenarios)+time.Minute)
	defer cancel()
	cmd, err := command(ctx, append([]string{"load"}, child.args()...)...)
	if err != nil {
		return Result{}, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return Result{}, err
	}
	if start == nil {
		start = (*exec.Cmd).Start
	}
	if err := start(cmd); err != nil {
		return Result{}, err
	}
	var res Result
	found := false
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), "result "); ok {
			if err := json.Unmarshal([]byte(line), &res); err == nil {
				found = true
			}
		}
	}
	werr := cmd.Wait()
	if !found {
		return Result{}, fmt.Errorf("load process gave no result: %v", werr)
	}
	return res, nil
}

// loadMain is the "load" subcommand: one scenario, one implementation.
func loadMain(cfg Config, impls []impl.Impl) error {
	im, err := lookup(impls, cfg.Impls)
	if err != nil {
		return err
	}
	if cfg.Profile != "" {
		f, err := os.Create(filepath.Join(cfg.Profile, profileName(cfg, im.Name)+".load.cpu.pprof"))
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.loadTimeout(cfg.Scenarios))
	defer cancel()
	var res Result
	if isMobility(cfg.Scenarios) {
		res = runMobility(ctx, cfg)
	} else {
		res = runScenario(ctx, cfg, im, cfg.Scenarios)
	}
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	fmt.Printf("result %s\n", b)
	return nil
}
