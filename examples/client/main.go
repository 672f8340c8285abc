// Command client is an interactive Garou chat client.
//
//	go run ./examples/client -name Alice [-addr 127.0.0.1:4433] [-fingerprint FP | -insecure] [-room lobby] [-token T]
//
// Each line typed is said in the current room (the one joined last).
// Commands:
//
//	/users           who is online
//	/join ROOM       join a room and make it the current one
//	/leave [ROOM]    leave a room (default: the current one)
//	/room ROOM       make a joined room the current one
//	/msg NAME TEXT   a direct message to NAME only
//	//TEXT           say a text that starts with "/"
//	/help            this list
//	/quit or quit    leave (Ctrl-D on an empty line too)
//
// On a terminal the line being typed stays intact while messages arrive
// above it, and a line entered makes way for what became of it: the text
// as the room received it, or the outcome of the command. Otherwise lines
// are read from standard input as they come. Names,
// texts, rooms and reasons from the network are sanitised before they are
// shown: control characters and escape sequences never reach the terminal.
//
// The exit status is 0 after /quit, Ctrl-D or end of input, 1 when the
// client cannot connect or is disconnected, and 2 for bad flags.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/internal/term"
)

// requestTimeout bounds one command's round trip, reconnecting included.
const requestTimeout = 15 * time.Second

func main() {
	os.Exit(run())
}

type options struct {
	name, addr, fingerprint, room, token string
	insecure                             bool
}

func parseFlags() (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: client -name NAME [-addr HOST:PORT] [-fingerprint FP | -insecure] [-room ROOM]\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.name, "name", "", "your `name` (required)")
	fs.StringVar(&o.addr, "addr", garou.DefaultAddr, "server `address`")
	fs.StringVar(&o.fingerprint, "fingerprint", "", "SHA-256 `fingerprint` of the server certificate, as the server prints it")
	fs.BoolVar(&o.insecure, "insecure", false, "accept any server certificate (development only)")
	fs.StringVar(&o.room, "room", garou.DefaultRoom, "`room` to join first")
	fs.StringVar(&o.token, "token", "", "`token` for the server's authenticator")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return nil, err
	}
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	case o.name == "":
		fs.Usage()
		return nil, errors.New("-name is required")
	case o.insecure && o.fingerprint != "":
		return nil, errors.New("-fingerprint and -insecure exclude each other")
	}
	return o, nil
}

func run() int {
	o, err := parseFlags()
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	opts := []garou.ClientOption{garou.WithRooms(o.room)}
	switch {
	case o.fingerprint != "":
		opts = append(opts, garou.WithFingerprint(o.fingerprint))
	case o.insecure:
		opts = append(opts, garou.WithInsecureSkipVerify())
	}
	if o.token != "" {
		opts = append(opts, garou.WithToken(o.token))
	}
	// Connection state changes reach the session through states; the
	// handler runs on a goroutine of the library's, which may block.
	states := make(chan garou.StateChange, 16)
	quit := make(chan struct{})
	defer close(quit)
	opts = append(opts, garou.WithStateHandler(func(sc garou.StateChange) {
		select {
		case states <- sc:
		case <-quit:
		}
	}))
	fmt.Fprintf(os.Stderr, "connecting to %s as %q ...\n", o.addr, o.name)
	cli, err := garou.Dial(ctx, o.addr, o.name, opts...)
	if errors.Is(err, garou.ErrInvalidOption) || errors.Is(err, garou.ErrInvalidName) {
		fmt.Fprintln(os.Stderr, "client:", term.Sanitize(err.Error()))
		return 2
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "client: cannot connect to %s as %q: %s\n", o.addr, o.name, explain(err))
		return 1
	}
	defer cli.Close()

	ui, err := newUI()
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		return 1
	}
	s := &session{cli: cli, ui: ui, room: o.room, asked: o.name, states: states}
	code := s.run(ctx)
	ui.close()
	return code
}

// explain describes a failure to connect, with the server's own reason
// when it gave one.
func explain(err error) string {
	if ce, ok := errors.AsType[*garou.CloseError](err); ok {
		if !ce.Code.Reconnect() {
			return "the server refused: " + term.Sanitize(orText(ce.Reason, ce.Code.String()))
		}
		return "the server closed the connection: " + term.Sanitize(orText(ce.Reason, ce.Code.String()))
	}
	msg := term.Sanitize(err.Error())
	var bad *tls.CertificateVerificationError
	var ne net.Error
	switch {
	case errors.Is(err, garou.ErrNoAnswer):
		msg += " (is the server running at that address?)"
	case errors.As(err, &bad):
		msg += " (pin the certificate with the -fingerprint the server printed)"
	case errors.As(err, &ne) && ne.Timeout():
		msg += " (no answer: is the server running at that address?)"
	}
	return msg
}

func orText(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// session is a connected client and its user interface.
type session struct {
	cli *garou.Client
	ui  ui

	asked  string                   // the name asked for; the server may give another
	states <-chan garou.StateChange // the connection's state changes

	mu      sync.Mutex
	room    string               // the current room: where typed lines go
	typists map[string]time.Time // room + "\x00" + name → until when shown typing
}

// input is one line read, or why reading ended.
type input struct {
	line string
	err  error
}

// run reads commands until the user quits or the connection ends, and
// returns the exit status.
func (s *session) run(ctx context.Context) int {
	u := s.cli.User()
	s.ui.setPrompt(s.prompt())
	s.printf("connected as %s; type /help for commands", term.Sanitize(u.Name))
	if u.Name != s.asked {
		s.printf("note: the server named you %s", term.Sanitize(u.Name))
	}
	s.users(ctx)
	// Typing a line (not a command) tells the room, at most every 2 s.
	s.ui.onType(func(line string) {
		room := s.current()
		if room == "" || strings.HasPrefix(line, "/") {
			return
		}
		tctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_ = s.cli.Typing(tctx, room)
	})

	// The network: every message received is printed as it arrives.
	lost := make(chan error, 1)
	received := make(chan struct{})
	go func() {
		defer close(received)
		for {
			m, err := s.cli.Receive(context.Background())
			if err != nil {
				lost <- err
				return
			}
			if s.typing(m) {
				continue
			}
			s.ui.print(format(m))
			s.refused(m)
		}
	}()

	// The keyboard: one line at a time, the next read starting only once
	// the previous line has been handled, so that no prompt is drawn after
	// the last command.
	lines := make(chan input)
	next := make(chan struct{})
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			line, err := s.ui.readLine()
			select {
			case lines <- input{line, err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
			select {
			case <-next:
			case <-done:
				return
			}
		}
	}()

	code, last := s.loop(ctx, lines, next, lost)
	// Leave, let what had arrived be shown, then say the last word.
	s.cli.Close()
	<-received
	s.printf("%s", last)
	return code
}

// loop handles the lines typed until the user quits or the connection
// ends, and returns the exit status and a last line to show.
func (s *session) loop(ctx context.Context, lines <-chan input, next chan<- struct{}, lost <-chan error) (int, string) {
	for {
		select {
		case in := <-lines:
			if in.err != nil {
				if !errors.Is(in.err, io.EOF) {
					return 1, "reading input: " + term.Sanitize(in.err.Error())
				}
				return 0, "bye"
			}
			if !s.handle(ctx, in.line) {
				return 0, "bye"
			}
			next <- struct{}{}
		case sc := <-s.states:
			switch sc.State {
			case garou.StateReconnecting:
				s.printf("connection lost (%s); reconnecting, attempt %d", explainLost(sc.Err), sc.Attempt)
			case garou.StateResumed:
				s.printf("reconnected")
			}
		case err := <-lost:
			return 1, "disconnected: " + explainLost(err)
		case <-ctx.Done():
			return 0, "bye"
		}
	}
}

// explainLost describes why the connection ended.
func explainLost(err error) string {
	if ce, ok := errors.AsType[*garou.CloseError](err); ok {
		if ce.Reason != "" {
			return term.Sanitize(ce.Code.String() + ": " + ce.Reason)
		}
		return term.Sanitize(ce.Code.String())
	}
	return term.Sanitize(err.Error())
}

// refused follows the server's refusal of a room asked for in the hello
// (by a join hook, say): typed lines can no longer go there, and the
// prompt must not say they do.
func (s *session) refused(m garou.ChatMessage) {
	if m.Type != garou.TypeError || m.Room == "" || m.Room != s.current() || slices.Contains(s.cli.Rooms(), m.Room) {
		return
	}
	cur := ""
	if rooms := s.cli.Rooms(); len(rooms) > 0 {
		cur = rooms[len(rooms)-1]
	}
	s.setCurrent(cur)
}

// typing follows who is typing: a typing signal shows its sender in the
// prompt for garou.TypingTimeout, and a text from the sender ends it. It
// reports whether m was a typing signal, which is not printed.
func (s *session) typing(m garou.ChatMessage) bool {
	if m.From == nil || m.Type != garou.TypeTyping && m.Type != garou.TypeText {
		return false
	}
	key := m.Room + "\x00" + m.From.Name
	s.mu.Lock()
	_, was := s.typists[key]
	if m.Type == garou.TypeTyping {
		if s.typists == nil {
			s.typists = make(map[string]time.Time)
		}
		s.typists[key] = time.Now().Add(garou.TypingTimeout)
	} else {
		delete(s.typists, key)
	}
	s.mu.Unlock()
	if m.Type == garou.TypeTyping {
		s.ui.setPrompt(s.prompt())
		// Shown until it expires, unless renewed or ended meanwhile.
		time.AfterFunc(garou.TypingTimeout+10*time.Millisecond, func() { s.ui.setPrompt(s.prompt()) })
		return true
	}
	if was {
		s.ui.setPrompt(s.prompt())
	}
	return false
}

func (s *session) current() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.room
}

func (s *session) setCurrent(room string) {
	s.mu.Lock()
	s.room = room
	s.mu.Unlock()
	s.ui.setPrompt(s.prompt())
}

func (s *session) prompt() string {
	r := s.current()
	if r == "" {
		return "(no room)> "
	}
	var who []string
	now := time.Now()
	s.mu.Lock()
	for key, until := range s.typists {
		room, name, _ := strings.Cut(key, "\x00")
		switch {
		case now.After(until):
			delete(s.typists, key)
		case room == r:
			who = append(who, term.Sanitize(name))
		}
	}
	s.mu.Unlock()
	slices.Sort(who)
	switch len(who) {
	case 0:
		return term.Sanitize(r) + "> "
	case 1:
		return fmt.Sprintf("%s (%s is typing…)> ", term.Sanitize(r), who[0])
	default:
		return fmt.Sprintf("%s (%s are typing…)> ", term.Sanitize(r), strings.Join(who, ", "))
	}
}

// printf shows a line of the client's own, stamped with the time. Untrusted
// strings in args must already be sanitised.
func (s *session) printf(format string, args ...any) {
	s.ui.print(stamp(time.Now()) + " " + fmt.Sprintf(format, args...))
}

// handle runs one line typed; it returns false when the user quits.
func (s *session) handle(ctx context.Context, line string) bool {
	line = strings.TrimRight(line, "\r\n")
	if strings.TrimSpace(line) == "" {
		return true
	}
	if strings.TrimSpace(line) == "quit" {
		return false
	}
	if !strings.HasPrefix(line, "/") || strings.HasPrefix(line, "//") {
		s.say(ctx, strings.TrimPrefix(line, "/"))
		return true
	}
	cmd, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
	arg = strings.TrimSpace(arg)
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	switch cmd {
	case "/quit", "/exit":
		return false
	case "/help":
		for _, l := range strings.Split(help, "\n") {
			s.ui.print(l)
		}
	case "/users", "/who":
		s.users(ctx)
	case "/join":
		if arg == "" {
			s.printf("usage: /join ROOM")
			return true
		}
		members, err := s.cli.Join(ctx, arg, 0)
		if err != nil {
			s.printf("cannot join %s: %s", term.Sanitize(arg), explainErr(err))
			return true
		}
		s.setCurrent(arg)
		s.printf("joined %s; members (%d): %s", term.Sanitize(arg), members.Count, pageNames(members))
	case "/leave", "/part":
		room := arg
		if room == "" {
			room = s.current()
		}
		if room == "" {
			s.printf("usage: /leave ROOM")
			return true
		}
		if err := s.cli.Leave(ctx, room); err != nil {
			s.printf("cannot leave %s: %s", term.Sanitize(room), explainErr(err))
			return true
		}
		s.printf("left %s", term.Sanitize(room))
		if room == s.current() {
			cur := ""
			if rooms := s.cli.Rooms(); len(rooms) > 0 {
				cur = rooms[len(rooms)-1]
			}
			s.setCurrent(cur)
		}
	case "/room":
		if arg == "" || !slices.Contains(s.cli.Rooms(), arg) {
			s.printf("usage: /room ROOM, one of: %s", sanitizeList(s.cli.Rooms()))
			return true
		}
		s.setCurrent(arg)
	case "/msg", "/dm":
		to, text, _ := strings.Cut(arg, " ")
		text = strings.TrimSpace(text)
		if to == "" || text == "" {
			s.printf("usage: /msg NAME TEXT")
			return true
		}
		if err := s.cli.SendDirect(ctx, to, text); err != nil {
			verb := "not sent"
			if errors.Is(err, garou.ErrOutcomeUnknown) {
				verb = "maybe sent"
			}
			s.printf("%s to %s: %s", verb, term.Sanitize(to), explainErr(err))
			return true
		}
		s.printf("[to %s] %s", term.Sanitize(to), term.Sanitize(text))
	default:
		s.printf("unknown command %s; /help lists them", term.Sanitize(cmd))
	}
	return true
}

const help = `commands:
  /users           who is online
  /join ROOM       join a room and make it the current one
  /leave [ROOM]    leave a room (default: the current one)
  /room ROOM       make a joined room the current one
  /msg NAME TEXT   a direct message to NAME only
  //TEXT           say a text that starts with "/"
  /quit or quit    leave (Ctrl-D too)
anything else is said in the current room`

// say sends a text to the current room. The text comes back through
// Receive, like everyone's, once the server has sequenced it.
func (s *session) say(ctx context.Context, text string) {
	room := s.current()
	if room == "" {
		s.printf("you are in no room: /join one first")
		return
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	if _, err := s.cli.SendTo(ctx, room, text); err != nil {
		if errors.Is(err, garou.ErrOutcomeUnknown) {
			s.printf("maybe sent: %s", explainErr(err))
			return
		}
		s.printf("not sent: %s", explainErr(err))
	}
}

func (s *session) users(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	users, err := s.cli.Users(ctx, "")
	if err != nil {
		s.printf("cannot list users: %s", explainErr(err))
		return
	}
	s.printf("online (%d): %s", users.Count, pageNames(users))
}

// explainErr describes a failed request.
func explainErr(err error) string {
	if e, ok := errors.AsType[*garou.Error](err); ok {
		return term.Sanitize(orText(e.Text, string(e.Code)))
	}
	switch {
	case errors.Is(err, garou.ErrOutcomeUnknown):
		return "no answer from the server in time; it may have been delivered"
	case errors.Is(err, garou.ErrNotSent):
		return "the connection could not be restored in time"
	case errors.Is(err, context.DeadlineExceeded):
		return "no answer from the server"
	}
	return term.Sanitize(err.Error())
}

func names(users []garou.User) string {
	s := make([]string, len(users))
	for i, u := range users {
		s[i] = u.Name
	}
	return sanitizeList(s)
}

// pageNames lists a page's names, with "…" when more pages follow.
func pageNames(p garou.Page) string {
	if p.Next != "" {
		return names(p.Users) + ", …"
	}
	return names(p.Users)
}

func sanitizeList(s []string) string {
	if len(s) == 0 {
		return "(none)"
	}
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = term.Sanitize(v)
	}
	return strings.Join(out, ", ")
}

func stamp(t time.Time) string {
	if t.IsZero() {
		t = time.Now()
	}
	return t.Local().Format("15:04:05")
}

// format renders a message from the server as one line. Every string in it
// comes from the network and is sanitised.
func format(m garou.ChatMessage) string {
	t := stamp(m.Time)
	room := "[" + term.Sanitize(m.Room) + "]"
	who := func(u *garou.User) string {
		if u == nil {
			return "(server)"
		}
		return term.Sanitize(u.Name)
	}
	switch m.Type {
	case garou.TypeText:
		if m.From == nil {
			return fmt.Sprintf("%s %s *** %s", t, room, term.Sanitize(m.Text))
		}
		return fmt.Sprintf("%s %s %s: %s", t, room, who(m.From), term.Sanitize(m.Text))
	case garou.TypeDirect:
		return fmt.Sprintf("%s [from %s] %s", t, who(m.From), term.Sanitize(m.Text))
	case garou.TypeJoin:
		return fmt.Sprintf("%s %s --> %s joined", t, room, who(m.User))
	case garou.TypeLeave:
		return fmt.Sprintf("%s %s <-- %s left (%s)", t, room, who(m.User), term.Sanitize(orText(m.Reason, "left")))
	case garou.TypePresence:
		return fmt.Sprintf("%s %s --- %d members", t, room, m.Count)
	case garou.TypeGap:
		if m.GapTo == 0 {
			return fmt.Sprintf("%s %s !!! texts from #%d on were lost (the server restarted)", t, room, m.GapFrom)
		}
		return fmt.Sprintf("%s %s !!! missed texts #%d to #%d: no longer kept", t, room, m.GapFrom, m.GapTo)
	case garou.TypeError:
		where := ""
		if m.Room != "" {
			where = " " + room
		}
		return fmt.Sprintf("%s%s error %s: %s", t, where, term.Sanitize(string(m.Code)), term.Sanitize(m.Text))
	}
	return fmt.Sprintf("%s %s (%s message) %s", t, room, term.Sanitize(string(m.Type)), term.Sanitize(m.Text))
}
