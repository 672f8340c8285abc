//go:build linux

package term

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/garou-chat/garou/internal/ptytest"
)

func TestIsTerminal(t *testing.T) {
	master, slave, err := ptytest.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	defer slave.Close()
	if !IsTerminal(int(slave.Fd())) {
		t.Error("IsTerminal(pty) = false")
	}

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if IsTerminal(int(r.Fd())) {
		t.Error("IsTerminal(pipe) = true")
	}
	if _, err := MakeRaw(int(r.Fd())); err == nil {
		t.Error("MakeRaw(pipe): want an error")
	}
}

func TestMakeRaw(t *testing.T) {
	master, slave, err := ptytest.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	defer slave.Close()
	fd := int(slave.Fd())

	before, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if before.Lflag&(unix.ICANON|unix.ECHO) == 0 {
		t.Fatalf("new terminal is already raw: lflag %#x", before.Lflag)
	}
	restore, err := MakeRaw(fd)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if raw.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG|unix.IEXTEN) != 0 {
		t.Errorf("raw lflag %#x still has ICANON, ECHO, ISIG or IEXTEN", raw.Lflag)
	}
	if raw.Iflag&(unix.ICRNL|unix.IXON) != 0 {
		t.Errorf("raw iflag %#x still has ICRNL or IXON", raw.Iflag)
	}
	if raw.Oflag&unix.OPOST != 0 {
		t.Errorf("raw oflag %#x still has OPOST", raw.Oflag)
	}
	if raw.Cc[unix.VMIN] != 1 || raw.Cc[unix.VTIME] != 0 {
		t.Errorf("VMIN, VTIME = %d, %d; want 1, 0", raw.Cc[unix.VMIN], raw.Cc[unix.VTIME])
	}

	for range 2 { // restoring twice is harmless
		if err := restore(); err != nil {
			t.Fatal(err)
		}
	}
	after, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if after.Iflag != before.Iflag || after.Oflag != before.Oflag ||
		after.Lflag != before.Lflag || after.Cflag != before.Cflag || after.Cc != before.Cc {
		t.Errorf("restored termios %+v, want %+v", after, before)
	}
}

// helperEnv makes the test binary run editorHelper instead of the tests.
const helperEnv = "GAROU_TERM_EDITOR_HELPER"

// TestEditorHelperProcess is the program run by TestEditorInTerminal.
func TestEditorHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper process for TestEditorInTerminal")
	}
	if err := editorHelper(); err != nil {
		fmt.Fprintf(os.Stdout, "helper error: %v\r\n", err)
		os.Exit(1)
	}
}

// editorHelper echoes each line typed, sanitised, until ^D.
func editorHelper() error {
	if !IsTerminal(0) {
		return fmt.Errorf("stdin is not a terminal")
	}
	restore, err := MakeRaw(0)
	if err != nil {
		return err
	}
	ed := NewEditor(os.Stdin, os.Stdout, "> ")
	ed.Print("ready")
	for {
		line, err := ed.ReadLine()
		if err == io.EOF {
			break
		}
		if err != nil {
			restore()
			return err
		}
		ed.Print("got:" + Sanitize(line))
	}
	if err := restore(); err != nil {
		return err
	}
	// Back in cooked mode, the terminal adds the carriage return again.
	fmt.Println("restored")
	return nil
}

// TestEditorInTerminal runs the editor in a real terminal in raw mode.
func TestEditorInTerminal(t *testing.T) {
	if os.Getenv(helperEnv) == "1" {
		t.Skip("running as the helper")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestEditorHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	p, err := ptytest.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Each step's output starts where the previous one's ended.
	steps := []struct{ keys, want string }{
		{"", "\r\x1b[Kready\r\n> "},
		// Raw mode: Enter sends a bare CR, the terminal echoes nothing
		// itself and the editor redraws after Backspace.
		{"helxy\x7f\x7flo\r", "helxy\r> helx\x1b[K\r> hel\x1b[Klo\r\n\r\x1b[Kgot:hello\r\n> "},
		{"a\x1b[Db\r", "ab\r\n\r\x1b[Kgot:ab\r\n> "},
		// ^C would kill a cooked-mode program; here it ends the input.
		{"\x03", "\r\nrestored\r\n"},
	}
	for _, s := range steps {
		if s.keys != "" {
			if err := p.Write(s.keys); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.Expect(ctx, s.want); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Wait(); err != nil {
		t.Fatalf("helper: %v; output %q", err, p.Output())
	}
}
