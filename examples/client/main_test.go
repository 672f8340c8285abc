//go:build linux

package main_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/internal/ptytest"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// build compiles the program into a temporary directory.
func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "client")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "%s", out)
	return bin
}

func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// server is a Garou server the test runs in process.
type server struct {
	*garou.Server
	addr string
	stop func() // closes the server and its socket
}

func startServer(t *testing.T, opts ...garou.ServerOption) *server {
	t.Helper()
	return startServerOn(t, "127.0.0.1:0", opts...)
}

// startServerOn serves on addr, with opts.
func startServerOn(t *testing.T, addr string, opts ...garou.ServerOption) *server {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	require.NoError(t, err)
	srv, err := garou.NewServer(append([]garou.ServerOption{garou.WithLogger(slog.New(slog.DiscardHandler))}, opts...)...)
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), pc) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			srv.Close()
			<-served
			pc.Close()
		})
	}
	t.Cleanup(stop)
	return &server{Server: srv, addr: pc.LocalAddr().String(), stop: stop}
}

// dial connects a library client.
func (s *server) dial(ctx context.Context, t *testing.T, name string) *garou.Client {
	t.Helper()
	c, err := garou.Dial(ctx, s.addr, name, garou.WithFingerprint(s.Fingerprint()))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// args are the program's arguments to connect to s as name.
func (s *server) args(name string) []string {
	return []string{"-name", name, "-addr", s.addr, "-fingerprint", s.Fingerprint()}
}

// await returns the next message c receives of type typ about who (its
// sender, or who joined or left), skipping others.
func await(ctx context.Context, t *testing.T, c *garou.Client, typ garou.MessageType, who string) garou.ChatMessage {
	t.Helper()
	for {
		m, err := c.Receive(ctx)
		require.NoError(t, err)
		if m.Type != typ {
			continue
		}
		if m.From != nil && m.From.Name == who || m.User != nil && m.User.Name == who {
			return m
		}
	}
}

func startPTY(t *testing.T, bin string, args ...string) *ptytest.PTY {
	t.Helper()
	p, err := ptytest.Start(exec.Command(bin, args...))
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return p
}

// TestInteractive drives the program through a terminal: typing sends, an
// incoming message does not disturb the line being typed, /users lists the
// users, hostile texts reach the terminal only defused, and /quit exits 0.
func TestInteractive(t *testing.T) {
	bin := build(t)
	ctx := timeout(t)
	srv := startServer(t)
	bob := srv.dial(ctx, t, "bob")

	p := startPTY(t, bin, srv.args("alice")...)
	require.NoError(t, p.Expect(ctx, "connecting to "+srv.addr+` as "alice" ...`))
	require.NoError(t, p.Expect(ctx, "connected as alice"))
	require.NoError(t, p.Expect(ctx, "online (2): bob, alice"))
	require.NoError(t, p.Expect(ctx, "lobby> "))
	await(ctx, t, bob, garou.TypeJoin, "alice")

	// A line typed is said in the room, and comes back like everyone's;
	// the room is told that alice is typing as she starts.
	require.NoError(t, p.Write("hello bob\r"))
	// The signal comes as a datagram, the text on the stream: in either
	// order.
	var m garou.ChatMessage
	for typing := false; !typing || m.Type == ""; {
		got, err := bob.Receive(ctx)
		require.NoError(t, err)
		switch {
		case got.From == nil || got.From.Name != "alice":
		case got.Type == garou.TypeTyping:
			typing = true
		case got.Type == garou.TypeText:
			m = got
		}
	}
	require.Equal(t, "hello bob", m.Text)
	require.Equal(t, garou.DefaultRoom, m.Room)
	_, err := p.ExpectRegexp(ctx, regexp.MustCompile(`\d\d:\d\d:\d\d \[lobby\] alice: hello bob\r\n`))
	require.NoError(t, err)

	// A message arrives while a line is half typed: it is printed above
	// the line, which is redrawn intact and can be finished.
	require.NoError(t, p.Write("partial li"))
	require.NoError(t, p.Expect(ctx, "partial li"))
	require.NoError(t, bob.Send(ctx, "interrupting you"))
	_, err = p.ExpectRegexp(ctx, regexp.MustCompile(
		`\r\x1b\[K\d\d:\d\d:\d\d \[lobby\] bob: interrupting you\r\nlobby> partial li`))
	require.NoError(t, err)
	require.NoError(t, p.Write("ne\r"))
	m = await(ctx, t, bob, garou.TypeText, "alice")
	require.Equal(t, "partial line", m.Text)

	// The room's typing shows in the prompt until the typist's text
	// arrives.
	require.NoError(t, bob.Typing(ctx, ""))
	require.NoError(t, p.Expect(ctx, "lobby (bob is typing…)> "))
	require.NoError(t, bob.Send(ctx, "done typing"))
	_, err = p.ExpectRegexp(ctx, regexp.MustCompile(`bob: done typing\r\nlobby> `))
	require.NoError(t, err)

	require.NoError(t, p.Write("/users\r"))
	require.NoError(t, p.Expect(ctx, "online (2): bob, alice"))

	// A direct message, both ways.
	require.NoError(t, p.Write("/msg bob just between us\r"))
	m = await(ctx, t, bob, garou.TypeDirect, "alice")
	require.Equal(t, "just between us", m.Text)
	require.NoError(t, p.Expect(ctx, "[to bob] just between us"))
	require.NoError(t, bob.SendDirect(ctx, "alice", "likewise"))
	require.NoError(t, p.Expect(ctx, "[from bob] likewise"))

	// A second room becomes the current one.
	require.NoError(t, p.Write("/join games\r"))
	require.NoError(t, p.Expect(ctx, "joined games; members (1): alice"))
	require.NoError(t, p.Expect(ctx, "games> "))
	_, err = bob.Join(ctx, "games", 0)
	require.NoError(t, err)
	require.NoError(t, p.Expect(ctx, "[games] --> bob joined"))
	require.NoError(t, p.Write("in games\r"))
	m = await(ctx, t, bob, garou.TypeText, "alice")
	require.Equal(t, "games", m.Room)
	require.Equal(t, "in games", m.Text)

	// A hostile peer: escape sequences (clear the screen, set the window
	// title, ring the bell), line breaks and carriage returns to forge a
	// line from someone else, a bidi override to reverse the text.
	mallory := srv.dial(ctx, t, "mallory")
	require.NoError(t, p.Expect(ctx, "[lobby] --> mallory joined"))
	evil := "\x1b[2J\x1b]0;pwned\x07\r\nbob: forged line\rbob: forged too\u202eesrever"
	require.NoError(t, mallory.Send(ctx, evil))
	require.NoError(t, mallory.SendDirect(ctx, "alice", evil))
	require.NoError(t, p.Expect(ctx, "mallory: ^[[2J^[]0;pwned^G⏎bob: forged line⏎bob: forged too\uFFFDesrever"))
	require.NoError(t, p.Expect(ctx, "[from mallory] ^[[2J^[]0;pwned^G⏎bob: forged line"))

	require.NoError(t, p.Write("/quit\r"))
	require.NoError(t, p.Expect(ctx, "bye"))
	require.NoError(t, p.Wait(), "output:\n%q", p.Output())
	await(ctx, t, bob, garou.TypeLeave, "alice")

	out := p.Output()
	for _, bad := range []string{"\x1b[2J", "\x1b]0;", "\x07", "\u202e", "\nbob: forged", "\rbob: forged"} {
		require.NotContains(t, out, bad, "output:\n%q", out)
	}
	// A line typed is shown once, as the room's text, not also as typed.
	rows := screen(out)
	for _, typed := range []string{"hello bob", "partial line", "in games"} {
		n := 0
		for _, r := range rows {
			n += strings.Count(r, typed)
		}
		require.Equal(t, 1, n, "%q on the screen:\n%s", typed, strings.Join(rows, "\n"))
	}
}

// screen returns the rows a terminal shows after out: it follows carriage
// returns, line feeds and erase to the end of the line, and skips other
// escape sequences.
func screen(out string) []string {
	rows := [][]rune{nil}
	row, col := 0, 0
	rs := []rune(out)
	for i := 0; i < len(rs); i++ {
		switch r := rs[i]; r {
		case '\r':
			col = 0
		case '\n':
			row++
			if row == len(rows) {
				rows = append(rows, nil)
			}
		case '\x1b':
			if i+1 < len(rs) && rs[i+1] == '[' {
				j := i + 2
				for j < len(rs) && (rs[j] < 0x40 || rs[j] > 0x7e) {
					j++
				}
				if j < len(rs) && rs[j] == 'K' && col < len(rows[row]) {
					rows[row] = rows[row][:col]
				}
				i = j
			}
		default:
			for len(rows[row]) < col {
				rows[row] = append(rows[row], ' ')
			}
			if col < len(rows[row]) {
				rows[row][col] = r
			} else {
				rows[row] = append(rows[row], r)
			}
			col++
		}
	}
	s := make([]string, len(rows))
	for i, r := range rows {
		s[i] = string(r)
	}
	return s
}

// TestRoomRefused: the server refuses the room the client asks for by
// default; the prompt then says the client is in no room, typed lines are
// not sent anywhere, and a room joined becomes the current one.
func TestRoomRefused(t *testing.T) {
	bin := build(t)
	ctx := timeout(t)
	srv := startServer(t, garou.WithJoinHook(func(_ context.Context, _ garou.User, room string) error {
		if room == garou.DefaultRoom {
			return garou.Refuse("no lobby here")
		}
		return nil
	}))
	p := startPTY(t, bin, srv.args("gina")...)
	require.NoError(t, p.Expect(ctx, "[lobby] error rejected: no lobby here"))
	require.NoError(t, p.Expect(ctx, "(no room)> "))
	require.NoError(t, p.Write("anyone?\r"))
	require.NoError(t, p.Expect(ctx, "you are in no room: /join one first"))
	require.NoError(t, p.Write("/join games\r"))
	require.NoError(t, p.Expect(ctx, "games> "))
	require.NoError(t, p.Write("/quit\r"))
	require.NoError(t, p.Wait(), "output:\n%q", p.Output())
}

// TestInteractiveEndOfInput: Ctrl-D on an empty line and Ctrl-C both quit
// with status 0.
func TestInteractiveEndOfInput(t *testing.T) {
	bin := build(t)
	srv := startServer(t)
	for _, key := range []string{"\x04", "\x03"} {
		ctx := timeout(t)
		p := startPTY(t, bin, srv.args("dora")...)
		require.NoError(t, p.Expect(ctx, "lobby> "))
		require.NoError(t, p.Write(key))
		require.NoError(t, p.Expect(ctx, "bye"))
		require.NoError(t, p.Wait(), "output:\n%q", p.Output())
	}
}

// TestDisconnected: the server ends the session; the client says why, with
// the server's reason defused, erases its prompt and exits 1.
func TestDisconnected(t *testing.T) {
	bin := build(t)
	ctx := timeout(t)
	srv := startServer(t)
	p := startPTY(t, bin, srv.args("erin")...)
	require.NoError(t, p.Expect(ctx, "lobby> "))
	require.NoError(t, srv.Kick("erin", "be \x1b[31mnice"))
	require.NoError(t, p.Expect(ctx, "disconnected: kicked: be ^[[31mnice\r\n"))
	err := p.Wait()
	require.True(t, strings.HasSuffix(p.Output(), "lobby> \r\x1b[K"), "output:\n%q", p.Output())
	require.NotContains(t, p.Output(), "\x1b[31m")
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, 1, ee.ExitCode())
}

// TestPlain: without a terminal the program reads lines as they come and
// exits 0 at the end of its input.
func TestPlain(t *testing.T) {
	bin := build(t)
	ctx := timeout(t)
	srv := startServer(t)
	bob := srv.dial(ctx, t, "bob")

	cmd := exec.CommandContext(ctx, bin, srv.args("carol")...)
	cmd.Stdin = strings.NewReader("hello from a pipe\n/msg bob \x1b[2Jpsst\n")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "stdout:\n%s\nstderr:\n%s", &stdout, &stderr)
	// The text comes on the room's stream, the direct message on the
	// control stream: in either order.
	got := map[garou.MessageType]string{}
	for len(got) < 2 {
		m, err := bob.Receive(ctx)
		require.NoError(t, err)
		if (m.Type == garou.TypeText || m.Type == garou.TypeDirect) && m.From != nil && m.From.Name == "carol" {
			got[m.Type] = m.Text
		}
	}
	require.Equal(t, "hello from a pipe", got[garou.TypeText])
	require.Equal(t, "\x1b[2Jpsst", got[garou.TypeDirect])
	require.Contains(t, stdout.String(), "connected as carol")
	require.Contains(t, stdout.String(), "[to bob] ^[[2Jpsst")
	require.NotContains(t, stdout.String(), "\x1b")
	require.Contains(t, stdout.String(), "bye\n")
}

// TestConnectFailure: a refusal or an untrusted certificate is explained,
// with status 1; an impossible name or option is refused with status 2.
func TestConnectFailure(t *testing.T) {
	bin := build(t)
	ctx := timeout(t)
	srv := startServer(t)
	srv.dial(ctx, t, "bob")

	wrongPin := strings.Repeat("00:", 31) + "00"
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{srv.args("BOB"), 1, `client: cannot connect to ` + srv.addr + ` as "BOB": the server refused: the name "BOB" is taken`},
		{[]string{"-name", "frank", "-addr", srv.addr, "-fingerprint", wrongPin}, 1, "does not match the pinned one"},
		{[]string{"-name", "frank", "-addr", srv.addr}, 1, "certificate signed by unknown authority"},
		{[]string{"-name", "fr\x1bank", "-addr", srv.addr, "-insecure"}, 2, "invalid name: forbidden character U+001B"},
		{[]string{"-name", "frank", "-addr", srv.addr, "-fingerprint", "12:34"}, 2, "fingerprint must be 32 bytes"},
		{[]string{"-addr", srv.addr}, 2, "-name is required"},
	} {
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, bin, tc.args...)
		cmd.Stdin = strings.NewReader("")
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "%q", tc.args)
		require.Equal(t, tc.code, ee.ExitCode(), "%q: %s", tc.args, &stderr)
		require.Contains(t, stderr.String(), tc.want, "%q", tc.args)
		require.NotContains(t, stderr.String(), "\x1b", "%q", tc.args)
	}
}

// TestReconnectShown: a server restarted (a deploy: graceful shutdown, then
// back with the same certificate) is reconnected to, and the user sees
// the connection lost and restored; a server back with another
// certificate ends the client at once, saying why.
func TestReconnectShown(t *testing.T) {
	bin := build(t)
	ctx := timeout(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert := garou.WithTLSConfig(&tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})

	srv := startServerOn(t, "127.0.0.1:0", cert)
	p := startPTY(t, bin, srv.args("gail")...)
	require.NoError(t, p.Expect(ctx, "lobby> "))
	require.NoError(t, srv.Shutdown(ctx))
	srv.stop()
	require.NoError(t, p.Expect(ctx, "connection lost (shutdown: server shutting down"))
	require.NoError(t, p.Expect(ctx, "reconnecting, attempt 1"))

	srv = startServerOn(t, srv.addr, cert)
	require.NoError(t, p.Expect(ctx, "reconnected"))
	bob := srv.dial(ctx, t, "bob")
	require.NoError(t, bob.Send(ctx, "welcome back"))
	require.NoError(t, p.Expect(ctx, "[lobby] bob: welcome back"))

	// Back with another certificate: not retried.
	require.NoError(t, srv.Shutdown(ctx))
	srv.stop()
	require.NoError(t, p.Expect(ctx, "reconnecting, attempt 1"))
	startServerOn(t, srv.addr)
	require.NoError(t, p.Expect(ctx, "disconnected: "))
	require.NoError(t, p.Expect(ctx, "fingerprint does not match"))
	var ee *exec.ExitError
	require.ErrorAs(t, p.Wait(), &ee)
	require.Equal(t, 1, ee.ExitCode())
}
