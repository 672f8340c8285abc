package main_test

import (
	"bufio"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestGameServer runs the program as a real process and plays it: tokens,
// matches, the word filter and the announcements.
func TestGameServer(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "gameserver")
	build := exec.Command("go", "build", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-addr", "127.0.0.1:0", "-players", "alice:1,bob:1,carol:2", "-announce", "300ms")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	exited := false
	defer func() {
		if !exited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()

	var addr, fp string
	tokens := map[string]string{}
	commands := map[string]string{}
	var last []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 4 && f[0] == "gameserver":
			addr = f[3]
		case len(f) == 2 && f[0] == "fingerprint":
			fp = f[1]
		case len(f) == 6 && f[0] == "player":
			tokens[f[1]] = f[5]
			last = f
		case len(f) > 0 && f[0] == "go" && last != nil:
			commands[last[1]] = sc.Text()
		}
		if sc.Text() == "ready" {
			break
		}
	}
	require.NotEmpty(t, addr)
	require.Len(t, tokens, 3)
	// Each player is told how to connect the interactive client.
	require.Len(t, commands, 3)
	for name, match := range map[string]string{"alice": "match-1", "bob": "match-1", "carol": "match-2"} {
		require.Equal(t, "  go run ./examples/client -addr "+addr+" -fingerprint "+fp+" -name "+name+" -token "+tokens[name]+" -room "+match, commands[name])
	}

	dial := func(name, token, room string) (*garou.Client, error) {
		return garou.Dial(ctx, addr, name, garou.WithFingerprint(fp), garou.WithToken(token), garou.WithRooms(room),
			garou.WithReconnect(0)) // the shutdown at the end would be retried
	}
	_, err = dial("mallory", "not-a-token", "match-1")
	code, _ := garou.CloseCodeOf(err)
	require.Equal(t, garou.CloseUnauthorized, code, "%v", err)

	alice, err := dial("alice", tokens["alice"], "match-1")
	require.NoError(t, err)
	defer alice.Close()
	// The token decides the name.
	bob, err := dial("anything", tokens["bob"], "match-1")
	require.NoError(t, err)
	defer bob.Close()
	require.Equal(t, "bob", bob.User().Name)
	carol, err := dial("carol", tokens["carol"], "match-2")
	require.NoError(t, err)
	defer carol.Close()

	_, err = carol.Join(ctx, "match-1", 0)
	var e *garou.Error
	require.True(t, errors.As(err, &e), "%v", err)
	require.Equal(t, garou.CodeRejected, e.Code)

	_, err = alice.SendTo(ctx, "match-1", "gg you noob")
	require.NoError(t, err)
	_, err = alice.SendTo(ctx, "match-1", "free stuff at cheatz.com")
	require.True(t, errors.As(err, &e), "%v", err)
	require.Equal(t, garou.CodeRejected, e.Code)

	nextText := func(c *garou.Client, from string) garou.ChatMessage {
		for {
			m, err := c.Receive(ctx)
			require.NoError(t, err)
			if m.Type != garou.TypeText {
				continue
			}
			if from == "" && m.From == nil || m.From != nil && m.From.Name == from {
				return m
			}
		}
	}
	m := nextText(bob, "alice")
	require.Equal(t, "gg you ****", m.Text)
	require.Equal(t, "match-1", m.Room)
	ann := nextText(carol, "")
	require.Equal(t, "match-2", ann.Room)
	require.Contains(t, ann.Text, "starts: 1 players")

	// Stopped by a signal, it shuts down gracefully and tells the players.
	require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
	for {
		if _, err := bob.Receive(ctx); err != nil {
			code, _ := garou.CloseCodeOf(err)
			require.Equal(t, garou.CloseServerShutdown, code, "%v", err)
			break
		}
	}
	require.NoError(t, cmd.Wait())
	exited = true
}
