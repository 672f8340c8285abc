// Command server runs a Garou chat server until it is interrupted.
//
//	go run -C examples/server . [-addr 127.0.0.1:4433] [-cert cert.pem -key key.pem] [-data DIR] [-log debug] ...
//
// (It is a module of its own, so that the library does not depend on
// bbolt: run it from the repository's root with -C, as above, or from its
// directory with "go run .".)
// Every server option has a flag (-h lists them with their defaults). It
// prints the address it listens on and the command a client connects with,
// which pins the fingerprint of the server's certificate, e.g.
//
//	go run ./examples/client -name NAME -addr 127.0.0.1:4433 -fingerprint FP
//
// Without -cert and -key it makes a self-signed development certificate at
// start, so the fingerprint changes on every run, unless -data names a
// directory to keep it in. With -data the server also keeps its texts
// there, in a bolt file (history.db, github.com/garou-chat/garou/boltstore),
// with its TLS and QUIC keys and its session key: a restart, even after a
// crash, is one its clients barely notice (they resume every room by
// number, under the same user, and a text whose acknowledgement was lost
// is not said twice). Without -data texts are kept in memory. Ctrl-C or SIGTERM shuts it
// down gracefully: every text accepted is delivered, every client is told
// the server is shutting down, and those still there after 5s are
// disconnected; a second Ctrl-C stops it at once. It logs one line per
// client connected and per client gone. The log level comes from -log, or
// from the environment variable GAROU_LOG.
//
// With -nats URL the server is one of several sharing a NATS JetStream (see
// natsbroker's README, and examples/cluster for a whole service in one
// process): start each with the same -nats and the same certificate
// (-cert and -key, or one -data directory), and give clients every
// server's address (garou.WithServers).
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/boltstore"
	"github.com/garou-chat/garou/natsbroker"
	"github.com/nats-io/nats.go"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command line.
type options struct {
	addr             string
	maxConns         int
	maxConnsPerAddr  int
	maxHandshakes    int
	idleTimeout      time.Duration
	handshakeTimeout time.Duration
	maxMessageSize   int
	sendQueue        int
	history          int
	maxRooms         int
	maxMembers       int
	rate             float64
	burst            int
	certFile         string
	keyFile          string
	logLevel         string
	metrics          string
	dataDir          string
	sessionMaxAge    time.Duration
	natsURL          string
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: server [flags]\n\nRuns a Garou chat server until interrupted (Ctrl-C or SIGTERM).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.addr, "addr", garou.DefaultAddr, "UDP `address` to listen on (port 0 picks a free port)")
	fs.IntVar(&o.maxConns, "max-conns", garou.DefaultMaxConnections, "maximum connected clients")
	fs.IntVar(&o.maxConnsPerAddr, "max-conns-per-addr", garou.DefaultMaxConnsPerAddr, "maximum connections from one IP address")
	fs.IntVar(&o.maxHandshakes, "max-handshakes", garou.DefaultMaxHandshakes, "maximum connections that have not said hello yet")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", garou.DefaultIdleTimeout, "drop a connection silent for this long")
	fs.DurationVar(&o.handshakeTimeout, "handshake-timeout", garou.DefaultHandshakeTimeout, "time a client has from connecting to saying hello")
	fs.IntVar(&o.maxMessageSize, "max-message-size", garou.DefaultMaxMessageSize, "maximum frame size in `bytes`, both directions")
	fs.IntVar(&o.sendQueue, "send-queue", garou.DefaultSendQueueBytes, "`bytes` queued for one client before it is dropped as a slow consumer")
	fs.IntVar(&o.history, "history", garou.DefaultHistorySize, "texts kept per room for joiners and reconnecting clients (0: none)")
	fs.IntVar(&o.maxRooms, "max-rooms", garou.DefaultMaxRoomsPerClient, "maximum rooms one client is in")
	fs.IntVar(&o.maxMembers, "max-members", garou.DefaultMaxRoomMembers, "maximum members of one room")
	fs.Float64Var(&o.rate, "rate", garou.DefaultRate, "texts a client may send per second (0: unlimited)")
	fs.IntVar(&o.burst, "burst", garou.DefaultBurst, "texts a client may send in a burst")
	fs.StringVar(&o.certFile, "cert", "", "PEM certificate `file` (default: a self-signed development certificate)")
	fs.StringVar(&o.keyFile, "key", "", "PEM private key `file` of -cert")
	fs.StringVar(&o.dataDir, "data", "", "`directory` keeping the texts (history.db), the development certificate and the TLS, QUIC and session keys across restarts (default: texts in memory)")
	fs.DurationVar(&o.sessionMaxAge, "session-max-age", garou.DefaultSessionMaxAge, "with -data: how long a session token lets a client come back as the same session after the welcome that issued it")
	fs.StringVar(&o.natsURL, "nats", "", "NATS server `URL`s (comma-separated) with JetStream: this server is then one of several sharing its rooms' texts there (github.com/garou-chat/garou/natsbroker), which keeps them instead of -data's history.db")
	fs.StringVar(&o.metrics, "metrics", "", "serve /metrics (Prometheus text format) and /debug/pprof/ on this loopback `address`, e.g. 127.0.0.1:9090")
	fs.StringVar(&o.logLevel, "log", "", "log `level`: debug, info, warn or error (default $GAROU_LOG, else info)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if (o.certFile == "") != (o.keyFile == "") {
		return nil, errors.New("-cert and -key go together")
	}
	if o.logLevel == "" {
		o.logLevel = os.Getenv("GAROU_LOG")
	}
	return o, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "server:", err)
		return 2
	}
	level, err := parseLevel(o.logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "server:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	opts := []garou.ServerOption{
		garou.WithLogger(log),
		garou.WithMaxConnections(o.maxConns),
		garou.WithMaxConnectionsPerAddr(o.maxConnsPerAddr),
		garou.WithMaxHandshakes(o.maxHandshakes),
		garou.WithIdleTimeout(o.idleTimeout),
		garou.WithHandshakeTimeout(o.handshakeTimeout),
		garou.WithMaxMessageSize(o.maxMessageSize),
		garou.WithSendQueueBytes(o.sendQueue),
		garou.WithHistorySize(o.history),
		garou.WithMaxRoomsPerClient(o.maxRooms),
		garou.WithMaxRoomMembers(o.maxMembers),
		garou.WithRateLimit(o.rate, o.burst),
		garou.WithShutdownTimeout(5 * time.Second),
		garou.WithSessionMaxAge(o.sessionMaxAge),
	}
	if o.natsURL != "" {
		nc, err := nats.Connect(o.natsURL, nats.Name("garou"), nats.MaxReconnects(-1))
		if err != nil {
			fmt.Fprintln(stderr, "server: NATS:", err)
			return 1
		}
		defer nc.Close() // after the broker's Close
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		b, err := natsbroker.New(ctx, nc)
		cancel()
		if err != nil {
			fmt.Fprintln(stderr, "server:", err)
			return 1
		}
		defer b.Close() // after Serve has returned
		opts = append(opts, garou.WithBroker(b))
	}
	if o.dataDir != "" && o.natsURL != "" {
		// The texts are the broker's: the directory keeps the rest.
		opts = append(opts, garou.WithDataDir(o.dataDir))
	} else if o.dataDir != "" {
		if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
			fmt.Fprintln(stderr, "server:", err)
			return 1
		}
		store, err := boltstore.Open(filepath.Join(o.dataDir, "history.db"), boltstore.WithSize(o.history))
		if err != nil {
			fmt.Fprintln(stderr, "server:", err)
			return 1
		}
		defer store.Close() // after Serve has returned
		opts = append(opts, garou.WithDataDir(o.dataDir), garou.WithHistoryStore(store))
	}
	var certHost string
	if o.certFile != "" {
		cert, err := tls.LoadX509KeyPair(o.certFile, o.keyFile)
		if err != nil {
			fmt.Fprintln(stderr, "server: loading the certificate:", err)
			return 1
		}
		if cert.Leaf != nil && len(cert.Leaf.DNSNames) > 0 {
			certHost = cert.Leaf.DNSNames[0]
		}
		opts = append(opts, garou.WithTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}}))
	}
	srv, err := garou.NewServer(opts...)
	if err != nil {
		fmt.Fprintln(stderr, "server:", err)
		return 2
	}

	// Bind the socket here rather than with ListenAndServe, so that the
	// address (port 0 included) is known before anything is printed.
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(context.Background(), "udp", o.addr)
	if err != nil {
		fmt.Fprintln(stderr, "server:", err)
		return 1
	}
	defer pc.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	addr := pc.LocalAddr().String()
	fmt.Fprintf(stdout, "garou server listening on %s\n", addr)
	fmt.Fprintf(stdout, "connect with:\n  %s\n", clientCommand(dialAddr(pc.LocalAddr()), srv.Fingerprint()))
	if certHost != "" {
		_, port, _ := net.SplitHostPort(addr)
		fmt.Fprintf(stdout, "or, where the certificate's authority is trusted:\n  go run ./examples/client -name NAME -addr %s\n",
			net.JoinHostPort(certHost, port))
	}
	if o.metrics != "" {
		maddr, stopMetrics, err := serveMetrics(ctx, o.metrics, srv, stderr)
		if err != nil {
			fmt.Fprintln(stderr, "server:", err)
			return 2
		}
		defer stopMetrics()
		fmt.Fprintf(stdout, "metrics on http://%s/metrics, profiles on http://%s/debug/pprof/\n", maddr, maddr)
	}
	fmt.Fprintln(stdout, "press Ctrl-C to stop")

	// A signal ends ctx, which shuts the server down gracefully; once it
	// has, a second signal kills the process at once.
	context.AfterFunc(ctx, stop)
	if err := srv.Serve(ctx, pc); err != nil {
		fmt.Fprintln(stderr, "server:", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

// parseLevel reads a log level: a name (debug, info, warn, error, any
// case) or a number as slog counts them.
func parseLevel(s string) (slog.Level, error) {
	if s == "" {
		return slog.LevelInfo, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		return slog.Level(n), nil
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// dialAddr is the address a client on this machine dials: an unspecified
// listening address (0.0.0.0, ::) is reached through the loopback.
func dialAddr(a net.Addr) string {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return a.String()
	}
	ip := ua.IP
	switch {
	case ip == nil || ip.Equal(net.IPv4zero):
		ip = net.IPv4(127, 0, 0, 1)
	case ip.Equal(net.IPv6unspecified):
		ip = net.IPv6loopback
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(ua.Port))
}

func clientCommand(addr, fingerprint string) string {
	return fmt.Sprintf("go run ./examples/client -name NAME -addr %s -fingerprint %s", addr, fingerprint)
}
