package main_test

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDemo runs the demo as a real process: it ends by itself, successfully,
// with the transcript in the scripted order.
func TestDemo(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "demo")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "%s", out)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	require.NoError(t, err, "stdout:\n%s\nstderr:\n%s", &stdout, &stderr)
	require.Less(t, time.Since(start), 20*time.Second)

	// The messages alice receives, in this order and no others.
	want := []string{
		"» alice connects and is in the lobby",
		"  join    lobby   bob joined",
		"  join    lobby   carol joined",
		"  text    lobby   #1 alice: hi everyone",
		"  text    lobby   #2 bob: hello alice!",
		"  text    lobby   #3 carol: hey both, shall we play?",
		"» alice joins games; members: alice",
		"  join    games   bob joined",
		"  text    games   #1 bob: chess, anyone?",
		"  text    games   #2 alice: always. you are white",
		"  direct  -       carol -> alice: psst: the cake is in the kitchen",
		"» alice asks who is online: alice, bob, carol",
		"  leave   games   bob left (left)",
		"  leave   lobby   carol left (quit)",
		"  leave   lobby   bob left (quit)",
		`» the server shuts down; alice's connection closes with "shutdown"`,
		"",
		"done.",
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	require.GreaterOrEqual(t, len(lines), len(want), "%s", &stdout)
	require.Equal(t, want, lines[len(lines)-len(want):], "stdout:\n%s", &stdout)
	require.Regexp(t, `^Garou demo: a server on 127\.0\.0\.1:\d+ `, lines[0])
}
