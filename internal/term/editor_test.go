package term

import (
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// screen is an io.Writer that records everything written to it and lets a
// test wait for some output to appear.
type screen struct {
	mu      sync.Mutex
	buf     strings.Builder
	changed chan struct{}
}

func newScreen() *screen { return &screen{changed: make(chan struct{})} }

func (s *screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Write(p)
	close(s.changed)
	s.changed = make(chan struct{})
	return len(p), nil
}

func (s *screen) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// waitFor blocks until the output contains want.
func (s *screen) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		out, changed := s.buf.String(), s.changed
		s.mu.Unlock()
		if strings.Contains(out, want) {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("output never contained %q; got %q", want, out)
		}
	}
}

type result struct {
	line string
	err  error
}

// harness runs an Editor reading from a pipe.
type harness struct {
	t      *testing.T
	keys   *io.PipeWriter
	screen *screen
	ed     *Editor
}

func newHarness(t *testing.T) *harness {
	r, w := io.Pipe()
	h := &harness{t: t, keys: w, screen: newScreen()}
	h.ed = NewEditor(r, h.screen, "> ")
	t.Cleanup(func() { w.Close() })
	return h
}

// readLine starts ReadLine in a goroutine; the result arrives on the channel.
func (h *harness) readLine() <-chan result {
	ch := make(chan result, 1)
	go func() {
		line, err := h.ed.ReadLine()
		ch <- result{line, err}
	}()
	return ch
}

// typeKeys writes keys to the editor. io.Pipe returns once the editor has
// taken the bytes in, though it may not have handled them yet.
func (h *harness) typeKeys(keys string) {
	h.t.Helper()
	if _, err := io.WriteString(h.keys, keys); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) result(ch <-chan result) result {
	h.t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		h.t.Fatalf("ReadLine did not return; output %q", h.screen.String())
		return result{}
	}
}

func TestEditorLines(t *testing.T) {
	tests := []struct {
		name, keys, want string
	}{
		{"plain", "hello\r", "hello"},
		{"LF ends the line", "hello\n", "hello"},
		{"backspace", "helxy\x7f\x7flo\r", "hello"},
		{"ctrl-h", "hex\blo\r", "helo"},
		{"backspace past start", "a\x7f\x7f\x7fb\r", "b"},
		{"backspace removes a whole rune", "añ\x7fb\r", "ab"},
		{"ctrl-u", "garbage\x15clean\r", "clean"},
		{"ctrl-w", "one two  \x17three\r", "one three"},
		{"ctrl-w twice", "one two\x17\x17x\r", "x"},
		{"ctrl-d on a non-empty line is ignored", "ab\x04c\r", "abc"},
		{"UTF-8", "héllo 世界 👍\r", "héllo 世界 👍"},
		{"arrow keys ignored", "a\x1b[Db\x1b[A\x1b[1;5C\x1bOHc\r", "abc"},
		{"function keys ignored", "a\x1b[15~\x1bOPb\r", "ab"},
		{"alt key ignored", "a\x1bxb\r", "ab"},
		{"ESC then Enter still ends the line", "ab\x1b\r", "ab"},
		{"other controls ignored", "a\x00\x01\x07\tb\r", "ab"},
		{"invalid UTF-8 ignored", "a\xff\xc3b\r", "ab"},
		{"bidi and C1 input ignored", "a\u202eb\u0085c\r", "abc"},
		{"empty line", "\r", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			ch := h.readLine()
			h.typeKeys(tt.keys)
			r := h.result(ch)
			if r.err != nil || r.line != tt.want {
				t.Fatalf("ReadLine = %q, %v; want %q", r.line, r.err, tt.want)
			}
		})
	}
}

func TestEditorEcho(t *testing.T) {
	h := newHarness(t)
	ch := h.readLine()
	h.typeKeys("hex\x7fllo\x1b[D\r")
	if r := h.result(ch); r.line != "hello" {
		t.Fatalf("ReadLine = %q, %v", r.line, r.err)
	}
	want := "> hex" + "\r> he\x1b[K" + "llo" + "\r\n"
	if got := h.screen.String(); got != want {
		t.Fatalf("output %q, want %q", got, want)
	}
}

// TestEditorEraseOnEnter: with SetEraseOnEnter, Enter leaves an empty row
// where the line was, for what the program prints next.
func TestEditorEraseOnEnter(t *testing.T) {
	h := newHarness(t)
	h.ed.SetEraseOnEnter(true)
	ch := h.readLine()
	h.typeKeys("hi\r")
	if r := h.result(ch); r.line != "hi" {
		t.Fatalf("ReadLine = %q, %v", r.line, r.err)
	}
	h.ed.Print("alice: hi")
	want := "> hi" + "\r\x1b[K" + "\r\x1b[Kalice: hi\r\n"
	if got := h.screen.String(); got != want {
		t.Fatalf("output %q, want %q", got, want)
	}
}

func TestEditorSeveralLines(t *testing.T) {
	h := newHarness(t)
	// Pasted text: both lines arrive at once, the second must not be lost.
	go func() { _, _ = io.WriteString(h.keys, "first\r\nsecond\r\n") }()
	for _, want := range []string{"first", "second"} {
		if r := h.result(h.readLine()); r.err != nil || r.line != want {
			t.Fatalf("ReadLine = %q, %v; want %q", r.line, r.err, want)
		}
	}
}

func TestEditorPrintWhileTyping(t *testing.T) {
	h := newHarness(t)
	ch := h.readLine()
	h.typeKeys("hel")
	h.screen.waitFor(t, "> hel")

	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ed.Print("alice: hi there")
	}()
	<-done
	h.screen.waitFor(t, "\r\x1b[Kalice: hi there\r\n> hel")

	h.typeKeys("lo\r")
	if r := h.result(ch); r.err != nil || r.line != "hello" {
		t.Fatalf("ReadLine = %q, %v", r.line, r.err)
	}
	want := "> hel" + "\r\x1b[Kalice: hi there\r\n> hel" + "lo\r\n"
	if got := h.screen.String(); got != want {
		t.Fatalf("output %q, want %q", got, want)
	}
}

func TestEditorConcurrentPrint(t *testing.T) {
	h := newHarness(t)
	ch := h.readLine()

	const printers, each = 4, 50
	var wg sync.WaitGroup
	for i := range printers {
		wg.Go(func() {
			for j := range each {
				h.ed.Print(strings.Repeat(string(rune('a'+i)), j%7+1))
			}
		})
	}
	h.typeKeys("typing")
	wg.Wait()
	h.typeKeys("\r")
	if r := h.result(ch); r.err != nil || r.line != "typing" {
		t.Fatalf("ReadLine = %q, %v", r.line, r.err)
	}
	// Every printed message is a whole line of its own.
	out := h.screen.String()
	if n := strings.Count(out, "\r\x1b[K"); n != printers*each {
		t.Fatalf("%d erased lines, want %d", n, printers*each)
	}
	for _, chunk := range strings.Split(out, "\r\x1b[K")[1:] {
		msg, _, ok := strings.Cut(chunk, "\r\n")
		if !ok || strings.Trim(msg, msg[:1]) != "" {
			t.Fatalf("garbled message %q in %q", chunk, out)
		}
	}
}

func TestEditorPrintOutsideReadLine(t *testing.T) {
	h := newHarness(t)
	h.ed.Print("before")
	ch := h.readLine()
	h.typeKeys("x\r")
	if r := h.result(ch); r.line != "x" {
		t.Fatalf("ReadLine = %q, %v", r.line, r.err)
	}
	h.ed.Print("after\nsecond line")
	want := "\r\x1b[Kbefore\r\n" + "> x\r\n" + "\r\x1b[Kafter\r\nsecond line\r\n"
	if got := h.screen.String(); got != want {
		t.Fatalf("output %q, want %q", got, want)
	}
}

func TestEditorEOF(t *testing.T) {
	for _, tt := range []struct{ name, keys string }{
		{"ctrl-d", "\x04"},
		{"ctrl-c on an empty line", "\x03"},
		{"ctrl-c with text typed", "abc\x03"},
		{"ctrl-d after clearing the line", "ab\x15\x04"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			ch := h.readLine()
			h.typeKeys(tt.keys)
			r := h.result(ch)
			if r.err != io.EOF || r.line != "" {
				t.Fatalf("ReadLine = %q, %v; want io.EOF", r.line, r.err)
			}
			// Print no longer redraws the prompt.
			h.ed.Print("bye")
			if out := h.screen.String(); !strings.HasSuffix(out, "\r\n\r\x1b[Kbye\r\n") {
				t.Fatalf("output %q", out)
			}
		})
	}
}

func TestEditorInputError(t *testing.T) {
	h := newHarness(t)
	ch := h.readLine()
	h.typeKeys("partial")
	boom := errors.New("boom")
	h.keys.CloseWithError(boom)
	if r := h.result(ch); r.err != boom || r.line != "" {
		t.Fatalf("ReadLine = %q, %v; want boom", r.line, r.err)
	}
	h = newHarness(t)
	ch = h.readLine()
	h.keys.Close()
	if r := h.result(ch); r.err != io.EOF {
		t.Fatalf("ReadLine = %q, %v; want io.EOF", r.line, r.err)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("closed") }

func TestEditorOutputError(t *testing.T) {
	ed := NewEditor(strings.NewReader("abc\r"), failWriter{}, "> ")
	if _, err := ed.ReadLine(); err == nil {
		t.Fatal("ReadLine: want the write error")
	}
	ed.Print("ignored") // must not panic
}

func TestEditorSetPrompt(t *testing.T) {
	h := newHarness(t)
	ch := h.readLine()
	h.typeKeys("ab")
	h.screen.waitFor(t, "> ab")
	h.ed.SetPrompt("#general> ")
	h.screen.waitFor(t, "\r#general> ab\x1b[K")
	h.typeKeys("\r")
	if r := h.result(ch); r.line != "ab" {
		t.Fatalf("ReadLine = %q, %v", r.line, r.err)
	}
}
