// Command cluster runs a whole Garou service in one process: an embedded
// NATS server with JetStream, three Garou servers sharing it through
// natsbroker, and three clients, one on each server, chatting in one room.
// Each client prints what it receives: the same texts, in the same order,
// numbered 1, 2, 3, ... whichever server it is on. Then the server of the
// first client stops, and that client goes on, on another server, with
// nothing missed.
//
//	go run -C examples/cluster .
//
// (It is a module of its own, so that the library does not depend on
// NATS.) A real service runs NATS on its own, and each Garou server in its
// own process, started as examples/server is with -nats URL.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/natsbroker"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
}

// node is one Garou server of the service, with its own NATS connection.
type node struct {
	srv    *garou.Server
	broker *natsbroker.Broker
	nc     *nats.Conn
	pc     net.PacketConn
	served chan error
}

func (n *node) stop() {
	n.srv.Close()
	<-n.served
	n.pc.Close()
	n.broker.Close()
	n.nc.Close()
}

// run runs the service, prints what happens, and returns what each client
// received in each round: before and after the first server stops.
func run(ctx context.Context, out io.Writer) (rounds [][][]string, err error) {
	dir, err := os.MkdirTemp("", "garou-cluster-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		return nil, err
	}
	go ns.Start()
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}()
	if !ns.ReadyForConnections(10 * time.Second) {
		return nil, errors.New("NATS did not start")
	}
	fmt.Fprintf(out, "NATS with JetStream on %s\n", ns.ClientURL())

	// The servers share one data directory, so one certificate: clients
	// pin one fingerprint for all of them.
	quiet := slog.New(slog.DiscardHandler)
	var nodes []*node
	defer func() {
		for _, n := range nodes {
			n.stop()
		}
	}()
	for i := range 3 {
		nc, err := nats.Connect(ns.ClientURL())
		if err != nil {
			return nil, err
		}
		b, err := natsbroker.New(ctx, nc)
		if err != nil {
			nc.Close()
			return nil, err
		}
		srv, err := garou.NewServer(garou.WithBroker(b), garou.WithDataDir(dir+"/garou"), garou.WithLogger(quiet))
		if err != nil {
			b.Close()
			nc.Close()
			return nil, err
		}
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			b.Close()
			nc.Close()
			return nil, err
		}
		n := &node{srv: srv, broker: b, nc: nc, pc: pc, served: make(chan error, 1)}
		go func() { n.served <- srv.Serve(context.Background(), pc) }()
		<-srv.Ready()
		nodes = append(nodes, n)
		fmt.Fprintf(out, "Garou server %d on %s\n", i+1, pc.LocalAddr())
	}

	names := []string{"ana", "bo", "cy"}
	var clients []*garou.Client
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for i, name := range names {
		// Each client knows the other servers' addresses too: it moves
		// to the next when its own goes.
		var others []string
		for j, n := range nodes {
			if j != i {
				others = append(others, n.pc.LocalAddr().String())
			}
		}
		c, err := garou.Dial(ctx, nodes[i].pc.LocalAddr().String(), name,
			garou.WithFingerprint(nodes[i].srv.Fingerprint()), garou.WithServers(others...),
			garou.WithReconnectBackoff(10*time.Millisecond, 100*time.Millisecond))
		if err != nil {
			return nil, err
		}
		clients = append(clients, c)
	}

	// Every client but the first of skip says text at once.
	say := func(text string, skip int) error {
		var wg sync.WaitGroup
		errs := make([]error, len(clients))
		for i, c := range clients[skip:] {
			wg.Go(func() { errs[i] = c.Send(ctx, fmt.Sprintf("%s: %s", names[skip+i], text)) })
		}
		wg.Wait()
		return errors.Join(errs...)
	}
	if err := say("hello, from my server", 0); err != nil {
		return nil, err
	}
	seen, err := receive(ctx, clients, 3)
	if err != nil {
		return nil, err
	}
	print(out, names, seen)
	rounds = append(rounds, seen)

	fmt.Fprintln(out, "\nserver 1 stops; ana moves to another server")
	nodes[0].stop()
	nodes = nodes[1:]
	if err := say("still here", 1); err != nil { // ana listens, from another server
		return nil, err
	}
	seen, err = receive(ctx, clients, 2)
	if err != nil {
		return nil, err
	}
	print(out, names, seen)
	return append(rounds, seen), nil
}

// receive returns the next n texts each client receives, as "seq text".
func receive(ctx context.Context, clients []*garou.Client, n int) ([][]string, error) {
	seen := make([][]string, len(clients))
	for i, c := range clients {
		for len(seen[i]) < n {
			m, err := c.Receive(ctx)
			if err != nil {
				return nil, err
			}
			switch m.Type {
			case garou.TypeText:
				seen[i] = append(seen[i], fmt.Sprintf("%d %s", m.Seq, m.Text))
			case garou.TypeGap:
				return nil, fmt.Errorf("a gap in %s: %d to %d", m.Room, m.GapFrom, m.GapTo)
			}
		}
	}
	return seen, nil
}

func print(out io.Writer, names []string, seen [][]string) {
	for i, s := range seen {
		fmt.Fprintf(out, "%s received:\n  %s\n", names[i], strings.Join(s, "\n  "))
	}
}
