package garou_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"

	"github.com/garou-chat/garou"
)

// A server and a client in one program: the client says hello and, like
// every member of the room, receives its own text back with its sequence
// number.
func ExampleDial() {
	ctx := context.Background()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer pc.Close()
	srv, err := garou.NewServer(garou.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, pc) }()

	cli, err := garou.Dial(ctx, pc.LocalAddr().String(), "alice", garou.WithFingerprint(srv.Fingerprint()))
	if err != nil {
		log.Fatal(err)
	}
	if err := cli.Send(ctx, "hello, world"); err != nil {
		log.Fatal(err)
	}
	msg, err := cli.Receive(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s #%d %s: %s\n", msg.Room, msg.Seq, msg.From.Name, msg.Text)

	cli.Close()
	srv.Shutdown(ctx)
	fmt.Println(<-done)
	// Output:
	// lobby #1 alice: hello, world
	// <nil>
}

// The host program speaks in a room itself and refuses unknown tokens.
func ExampleServer_Publish() {
	ctx := context.Background()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer pc.Close()
	srv, err := garou.NewServer(
		garou.WithLogger(slog.New(slog.DiscardHandler)),
		garou.WithAuthenticator(func(_ context.Context, h garou.Hello) (garou.Identity, error) {
			if h.Token != "secret" {
				return garou.Identity{}, garou.Refuse("unknown token")
			}
			return garou.Identity{ID: "player-1"}, nil // the name of the hello
		}),
	)
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(ctx, pc)
	defer srv.Close()
	addr, pin := pc.LocalAddr().String(), garou.WithFingerprint(srv.Fingerprint())

	_, err = garou.Dial(ctx, addr, "mallory", pin, garou.WithToken("guess"))
	fmt.Println(err)

	cli, err := garou.Dial(ctx, addr, "bob", pin, garou.WithToken("secret"), garou.WithRooms("match-7"))
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	if _, err := srv.Publish(ctx, "match-7", "round 2 starts"); err != nil {
		log.Fatal(err)
	}
	msg, err := cli.Receive(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: %s (from the server: %v)\n", msg.Room, msg.Text, msg.From == nil)
	// Output:
	// garou: connection closed by the server: unauthorized: unknown token
	// match-7: round 2 starts (from the server: true)
}

// A server on a port the system picks: Ready tells when its address is
// known. Ending the context shuts the server down gracefully.
func ExampleServer_Ready() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	srv, err := garou.NewServer(garou.WithLogger(slog.New(slog.DiscardHandler)), garou.WithAddr("127.0.0.1:0"))
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe(ctx) }()
	<-srv.Ready()
	if srv.Addr() == nil {
		log.Fatal(<-done)
	}

	cli, err := garou.Dial(ctx, srv.Addr().String(), "alice", garou.WithFingerprint(srv.Fingerprint()))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("connected as", cli.User().Name)
	cli.Close()

	stop()
	fmt.Println(<-done)
	// Output:
	// connected as alice
	// <nil>
}
