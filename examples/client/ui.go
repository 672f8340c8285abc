package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/garou-chat/garou/internal/term"
)

// ui is where the session reads lines and shows messages.
type ui interface {
	// print shows one line; it must already be safe for a terminal.
	print(line string)
	// readLine returns the next line typed, or io.EOF at the end of input.
	readLine() (string, error)
	// setPrompt changes the prompt shown in front of the line being typed.
	setPrompt(prompt string)
	// onType calls f with the line being typed as each character is
	// typed, where the input is typed key by key.
	onType(f func(line string))
	// close gives the terminal back as it was.
	close()
}

// newUI returns a raw-mode line editor when standard input and output are
// a terminal, and plain line input and output otherwise.
func newUI() (ui, error) {
	in, out := int(os.Stdin.Fd()), int(os.Stdout.Fd())
	if !term.IsTerminal(in) || !term.IsTerminal(out) {
		return newPlainUI(os.Stdin, os.Stdout), nil
	}
	restore, err := term.MakeRaw(in)
	if err != nil {
		return nil, fmt.Errorf("cannot put the terminal in raw mode: %w", err)
	}
	ed := term.NewEditor(os.Stdin, os.Stdout, "")
	// A text typed is shown once, as it comes back from the server; a
	// command is shown by its outcome.
	ed.SetEraseOnEnter(true)
	return &terminalUI{ed: ed, out: os.Stdout, restore: restore}, nil
}

// terminalUI is a terminal in raw mode: messages are printed above the
// line being typed, which is then redrawn intact.
type terminalUI struct {
	ed      *term.Editor
	out     io.Writer
	restore func() error
}

func (t *terminalUI) print(line string)         { t.ed.Print(line) }
func (t *terminalUI) readLine() (string, error) { return t.ed.ReadLine() }
func (t *terminalUI) setPrompt(prompt string)   { t.ed.SetPrompt(prompt) }
func (t *terminalUI) onType(f func(string))     { t.ed.OnType(f) }

func (t *terminalUI) close() {
	// Erase the prompt a pending read may have left on the last line.
	_, _ = io.WriteString(t.out, "\r\x1b[K")
	_ = t.restore()
}

// plainUI reads lines as they come and prints messages line by line, for
// input from a pipe or a file.
type plainUI struct {
	in  *bufio.Scanner
	mu  sync.Mutex
	out io.Writer
}

func newPlainUI(in io.Reader, out io.Writer) *plainUI {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64<<10), 2<<20)
	return &plainUI{in: sc, out: out}
}

func (p *plainUI) print(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, _ = io.WriteString(p.out, line+"\n")
}

func (p *plainUI) readLine() (string, error) {
	if p.in.Scan() {
		return p.in.Text(), nil
	}
	if err := p.in.Err(); err != nil {
		return "", err
	}
	return "", io.EOF
}

func (p *plainUI) setPrompt(string)         {}
func (p *plainUI) onType(func(line string)) {}
func (p *plainUI) close()                   {}
