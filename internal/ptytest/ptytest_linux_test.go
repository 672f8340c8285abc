//go:build linux

package ptytest

import (
	"context"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func start(t *testing.T, name string, args ...string) *PTY {
	t.Helper()
	p, err := Start(exec.Command(name, args...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestReadLine(t *testing.T) {
	ctx := timeout(t)
	p := start(t, "/bin/sh", "-c", "echo ready; read x; echo got:$x")
	if err := p.Expect(ctx, "ready"); err != nil {
		t.Fatal(err)
	}
	if err := p.Write("hello\n"); err != nil {
		t.Fatal(err)
	}
	m, err := p.ExpectRegexp(ctx, regexp.MustCompile(`got:(\w+)`))
	if err != nil {
		t.Fatal(err)
	}
	if m[1] != "hello" {
		t.Fatalf("submatch = %q, want hello", m[1])
	}
	if err := p.Wait(); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	// Terminal echo shows the typed line; the terminal turns "\n" into "\r\n".
	if out := p.Output(); !strings.Contains(out, "hello\r\n") || !strings.Contains(out, "got:hello\r\n") {
		t.Fatalf("output = %q", out)
	}
}

func TestStdinIsTerminal(t *testing.T) {
	ctx := timeout(t)
	p := start(t, "/bin/sh", "-c", `test -t 0 && test -t 1 && test -t 2 && echo is-a-tty; tty`)
	if err := p.Expect(ctx, "is-a-tty"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.ExpectRegexp(ctx, regexp.MustCompile(`/dev/pts/\d+`)); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestWindowSize(t *testing.T) {
	ctx := timeout(t)
	p := start(t, "/bin/sh", "-c", "stty size")
	if err := p.Expect(ctx, "24 80"); err != nil {
		t.Fatal(err)
	}
}

func TestCatAndClose(t *testing.T) {
	ctx := timeout(t)
	p := start(t, "/bin/cat")
	for _, s := range []string{"one", "two", "three"} {
		if err := p.Write(s + "\n"); err != nil {
			t.Fatal(err)
		}
		// Once for the terminal echo, once from cat.
		for range 2 {
			if err := p.Expect(ctx, s+"\r\n"); err != nil {
				t.Fatal(err)
			}
		}
	}
	// cat is still running: Close must kill it and return.
	p.Close()
	if err := p.Wait(); err == nil {
		t.Fatal("Wait after Close: want an error from the killed process")
	}
	p.Close() // idempotent
}

func TestExpectTimeout(t *testing.T) {
	p := start(t, "/bin/sh", "-c", "echo partial; exec cat")
	if err := p.Expect(timeout(t), "partial"); err != nil {
		t.Fatal(err)
	}
	if err := p.Write("typed\n"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := p.Expect(ctx, "never")
	if err == nil {
		t.Fatal("Expect: want an error")
	}
	if !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("error %q does not mention the cause", err)
	}
}

func TestExpectAfterExit(t *testing.T) {
	p := start(t, "/bin/sh", "-c", "echo bye")
	err := p.Expect(timeout(t), "never")
	if err == nil || !strings.Contains(err.Error(), "bye") {
		t.Fatalf("Expect after exit: error %v, want one showing the output", err)
	}
}

func TestLargeOutputDrained(t *testing.T) {
	// 20000 lines of output: all of it must be read before Wait returns.
	p := start(t, "/bin/sh", "-c", `i=0; while [ $i -lt 20000 ]; do echo line$i; i=$((i+1)); done; echo END`)
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	out := p.Output()
	if !strings.HasSuffix(out, "line19999\r\nEND\r\n") {
		t.Fatalf("output ends with %q", out[max(0, len(out)-40):])
	}
	if n := strings.Count(out, "\r\n"); n != 20001 {
		t.Fatalf("%d lines, want 20001", n)
	}
}

func TestStartRejectsConfiguredCmd(t *testing.T) {
	cmd := exec.Command("/bin/true")
	cmd.Stdout = new(strings.Builder)
	if _, err := Start(cmd); err == nil {
		t.Fatal("Start: want an error when Stdout is set")
	}
}

func TestStartMissingProgram(t *testing.T) {
	if _, err := Start(exec.Command("/nonexistent/program")); err == nil {
		t.Fatal("Start: want an error")
	}
}
