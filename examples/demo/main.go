// Command demo runs a Garou server and three scripted clients in one
// process and prints what one of them, alice, receives.
//
//	go run ./examples/demo
//
// alice, bob and carol connect to the lobby and chat; alice and bob meet in
// a second room; carol sends alice a direct message; alice asks who is
// online; then everybody leaves and the server shuts down. Every step waits
// for alice to receive what it caused before the next one starts, so the
// transcript is the same on every run. The demo ends by itself in about a
// second, and fails (exit status 1) if anything takes longer than 10 s.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/internal/term"
)

// timeout bounds the whole demo.
const timeout = 10 * time.Second

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(out io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	// The server, on a socket of its own on a free port.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer pc.Close()
	srv, err := garou.NewServer(garou.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), pc) }()
	defer func() {
		srv.Close() // after a successful run, Shutdown has already stopped it
		<-served
	}()
	addr := pc.LocalAddr().String()
	fmt.Fprintf(out, "Garou demo: a server on %s and three clients, alice, bob and carol.\n", addr)
	fmt.Fprintf(out, "Indented lines are the messages alice receives, in order: type, room, content.\n")
	fmt.Fprintf(out, "Lines with \"»\" are what alice does, the answers she gets, and the end.\n\n")

	dial := func(name string) (*garou.Client, error) {
		// Without reconnecting: the shutdown at the end would be retried.
		return garou.Dial(ctx, addr, name, garou.WithFingerprint(srv.Fingerprint()), garou.WithReconnect(0))
	}
	d := &demo{ctx: ctx, out: out}

	alice, err := dial("alice")
	if err != nil {
		return err
	}
	defer alice.Close()
	d.alice = alice
	d.did("alice connects and is in the lobby")

	bob, err := dial("bob")
	if err != nil {
		return err
	}
	defer bob.Close()
	if err := d.await(garou.TypeJoin, "bob"); err != nil {
		return err
	}
	carol, err := dial("carol")
	if err != nil {
		return err
	}
	defer carol.Close()
	if err := d.await(garou.TypeJoin, "carol"); err != nil {
		return err
	}

	// Chat in the lobby. Every member receives every text, the sender too,
	// numbered in one order.
	lobby := []struct {
		c    *garou.Client
		text string
	}{
		{alice, "hi everyone"},
		{bob, "hello alice!"},
		{carol, "hey both, shall we play?"},
	}
	for _, l := range lobby {
		if err := l.c.Send(ctx, l.text); err != nil {
			return err
		}
		if err := d.await(garou.TypeText, l.c.User().Name); err != nil {
			return err
		}
	}

	// A second room.
	members, err := alice.Join(ctx, "games", 0)
	if err != nil {
		return err
	}
	d.did("alice joins games; members: %s", names(members.Users))
	if _, err := bob.Join(ctx, "games", 0); err != nil {
		return err
	}
	if err := d.await(garou.TypeJoin, "bob"); err != nil {
		return err
	}
	if _, err := bob.SendTo(ctx, "games", "chess, anyone?"); err != nil {
		return err
	}
	if err := d.await(garou.TypeText, "bob"); err != nil {
		return err
	}
	if _, err := alice.SendTo(ctx, "games", "always. you are white"); err != nil {
		return err
	}
	if err := d.await(garou.TypeText, "alice"); err != nil {
		return err
	}

	// A direct message: only alice receives it.
	if err := carol.SendDirect(ctx, "alice", "psst: the cake is in the kitchen"); err != nil {
		return err
	}
	if err := d.await(garou.TypeDirect, "carol"); err != nil {
		return err
	}

	// The user list is a reply to alice's request.
	users, err := alice.Users(ctx, "")
	if err != nil {
		return err
	}
	d.did("alice asks who is online: %s", names(users.Users))

	// Leaving: a room, then the server altogether.
	if err := bob.Leave(ctx, "games"); err != nil {
		return err
	}
	if err := d.await(garou.TypeLeave, "bob"); err != nil {
		return err
	}
	carol.Close()
	if err := d.await(garou.TypeLeave, "carol"); err != nil {
		return err
	}
	bob.Close()
	if err := d.await(garou.TypeLeave, "bob"); err != nil { // from the lobby
		return err
	}

	// A graceful shutdown: alice is told, and her connection closes with
	// CloseServerShutdown.
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(ctx) }()
	_, err = alice.Receive(ctx)
	code, ok := garou.CloseCodeOf(err)
	if !ok {
		return fmt.Errorf("expected the server to close alice's connection, got %v", err)
	}
	d.did("the server shuts down; alice's connection closes with %q", code)
	if err := <-shut; err != nil {
		return err
	}
	fmt.Fprintln(out, "\ndone.")
	return nil
}

// demo prints alice's transcript.
type demo struct {
	ctx   context.Context
	out   io.Writer
	alice *garou.Client
}

// did prints something alice did or was answered.
func (d *demo) did(format string, args ...any) {
	fmt.Fprintf(d.out, "» %s\n", fmt.Sprintf(format, args...))
}

// await prints what alice receives until a message of type typ about who
// (its sender, or the user who joined or left) arrives.
func (d *demo) await(typ garou.MessageType, who string) error {
	for {
		m, err := d.alice.Receive(d.ctx)
		if err != nil {
			return fmt.Errorf("waiting for %s from %s: %w", typ, who, err)
		}
		fmt.Fprintf(d.out, "  %s\n", describe(m))
		if m.Type != typ {
			continue
		}
		switch {
		case m.From != nil && m.From.Name == who, m.User != nil && m.User.Name == who:
			return nil
		}
	}
}

// describe says what a message is, in one line.
func describe(m garou.ChatMessage) string {
	room := m.Room
	if room == "" {
		room = "-"
	}
	var what string
	switch m.Type {
	case garou.TypeText:
		from := "(server)"
		if m.From != nil {
			from = m.From.Name
		}
		what = fmt.Sprintf("#%d %s: %s", m.Seq, from, m.Text)
	case garou.TypeDirect:
		what = fmt.Sprintf("%s -> %s: %s", m.From.Name, m.To, m.Text)
	case garou.TypeJoin:
		what = m.User.Name + " joined"
	case garou.TypeLeave:
		what = fmt.Sprintf("%s left (%s)", m.User.Name, m.Reason)
	case garou.TypeGap:
		what = fmt.Sprintf("texts #%d to #%d are lost", m.GapFrom, m.GapTo)
	case garou.TypeError:
		what = fmt.Sprintf("%s: %s", m.Code, m.Text)
	default:
		what = m.Text
	}
	// Only the demo's own clients speak here, but text from a network is
	// made safe for a terminal all the same.
	return term.Sanitize(fmt.Sprintf("%-6s  %-6s  %s", m.Type, room, what))
}

func names(users []garou.User) string {
	s := make([]string, len(users))
	for i, u := range users {
		s[i] = u.Name
	}
	if len(s) == 0 {
		return "(none)"
	}
	return strings.Join(s, ", ")
}
