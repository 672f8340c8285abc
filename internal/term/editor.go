package term

import (
	"bufio"
	"io"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// Control sequences written by the editor.
const (
	eraseLine = "\r\x1b[K" // carriage return, then erase to end of line
	crlf      = "\r\n"     // raw mode: no output post-processing
)

// Editor is a minimal line editor for a terminal in raw mode (see MakeRaw).
//
// One goroutine calls ReadLine in a loop; any number of other goroutines may
// call Print at the same time to show incoming messages above the line being
// typed. All output goes through a single mutex, so a printed message never
// lands in the middle of the user's input.
//
// Supported keys: printable characters (UTF-8), Backspace (DEL or ^H),
// Enter (CR or LF; a CR LF pair counts once), ^U (clear the line), ^W (delete
// the previous word), ^C (end input) and ^D on an empty line (end input).
// Other control bytes and escape sequences, such as those sent by arrow and
// function keys, are ignored without being echoed. There is no cursor
// movement: editing happens at the end of the line.
//
// The editor redraws its line with a carriage return followed by "erase to
// end of line", which clears a single terminal row; input longer than the
// terminal width wraps and is then redrawn imperfectly.
type Editor struct {
	in *bufio.Reader // used only by the goroutine in ReadLine
	// skipLF is set after a CR so that the LF of a CR LF pair is dropped.
	// Used only by the goroutine in ReadLine.
	skipLF bool

	mu      sync.Mutex // guards everything below and all writes to out
	out     io.Writer
	prompt  string
	buf     []rune // the line being typed
	reading bool   // a ReadLine is in progress: Print redraws the prompt
	erase   bool   // Enter erases the line instead of leaving it
	onType  func(line string)
}

// NewEditor returns an editor that reads keys from in and writes to out,
// showing prompt in front of the line being typed. The prompt is written
// verbatim and may contain escape sequences (colours, for example); it should
// not contain line breaks.
func NewEditor(in io.Reader, out io.Writer, prompt string) *Editor {
	return &Editor{
		in:     bufio.NewReader(in),
		out:    out,
		prompt: prompt,
	}
}

// SetPrompt changes the prompt, redrawing the current line if a ReadLine is
// in progress.
func (e *Editor) SetPrompt(prompt string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.prompt = prompt
	if e.reading {
		_ = e.redraw()
	}
}

// SetEraseOnEnter makes Enter erase the line typed, prompt included,
// instead of leaving it on the screen and moving to the next line; it is
// off by default. A program that shows what became of each line (a chat
// client whose texts come back from the server) sets it, so that a line
// is not shown twice.
func (e *Editor) SetEraseOnEnter(erase bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.erase = erase
}

// OnType makes the editor call f with the line being typed each time a
// character is added to it, from the goroutine in ReadLine, with no lock
// held (f may call Print and SetPrompt). A chat client tells the room
// that the user is typing.
func (e *Editor) OnType(f func(line string)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.onType = f
}

// Print writes line above the line being typed: it erases the input line,
// writes line followed by CR LF, then redraws the prompt and the partial
// input. Line breaks inside line are written as CR LF. line is written
// verbatim, so untrusted text in it must first go through Sanitize.
//
// Print is safe to call from any goroutine, also while ReadLine is blocked.
// Write errors are ignored; ReadLine reports them on its next echo.
func (e *Editor) Print(line string) {
	var b strings.Builder
	b.WriteString(eraseLine)
	b.WriteString(toCRLF(line))
	b.WriteString(crlf)

	e.mu.Lock()
	defer e.mu.Unlock()
	if e.reading {
		b.WriteString(e.prompt)
		b.WriteString(string(e.buf))
	}
	_, _ = io.WriteString(e.out, b.String())
}

// ReadLine shows the prompt and returns the next line typed, without the
// line ending. It returns io.EOF when the user presses ^C, or ^D on an empty
// line, and the reader's error (the partial line being dropped) when
// reading fails. Only one goroutine may call ReadLine at a time.
func (e *Editor) ReadLine() (string, error) {
	e.mu.Lock()
	e.buf = e.buf[:0]
	e.reading = true
	err := e.write(e.prompt)
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.reading = false
		e.buf = e.buf[:0]
		e.mu.Unlock()
	}()
	if err != nil {
		return "", err
	}

	for {
		k, r, err := e.readKey()
		if err != nil {
			return "", err
		}
		line, done, err := e.apply(k, r)
		if done || err != nil {
			return line, err
		}
		if k == keyRune {
			e.mu.Lock()
			f, typed := e.onType, string(e.buf)
			e.mu.Unlock()
			if f != nil {
				f(typed)
			}
		}
	}
}

// apply performs one key under the mutex. done reports that ReadLine must
// return line and err.
func (e *Editor) apply(k key, r rune) (line string, done bool, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch k {
	case keyRune:
		e.buf = append(e.buf, r)
		return "", false, e.write(string(r))
	case keyEnter:
		line = string(e.buf)
		e.reading = false
		if e.erase {
			return line, true, e.write(eraseLine)
		}
		return line, true, e.write(crlf)
	case keyBackspace:
		if len(e.buf) == 0 {
			return "", false, nil
		}
		e.buf = e.buf[:len(e.buf)-1]
		return "", false, e.redraw()
	case keyKillLine:
		if len(e.buf) == 0 {
			return "", false, nil
		}
		e.buf = e.buf[:0]
		return "", false, e.redraw()
	case keyKillWord:
		n := len(e.buf)
		for n > 0 && unicode.IsSpace(e.buf[n-1]) {
			n--
		}
		for n > 0 && !unicode.IsSpace(e.buf[n-1]) {
			n--
		}
		if n == len(e.buf) {
			return "", false, nil
		}
		e.buf = e.buf[:n]
		return "", false, e.redraw()
	case keyInterrupt:
		e.reading = false
		if err := e.write(crlf); err != nil {
			return "", true, err
		}
		return "", true, io.EOF
	case keyEOF:
		if len(e.buf) > 0 {
			return "", false, nil
		}
		e.reading = false
		if err := e.write(crlf); err != nil {
			return "", true, err
		}
		return "", true, io.EOF
	}
	return "", false, nil
}

// redraw rewrites the prompt and the current input. Call with e.mu held.
func (e *Editor) redraw() error {
	return e.write("\r" + e.prompt + string(e.buf) + "\x1b[K")
}

// write writes s to the output. Call with e.mu held.
func (e *Editor) write(s string) error {
	_, err := io.WriteString(e.out, s)
	return err
}

type key int

const (
	keyIgnore key = iota
	keyRune
	keyEnter
	keyBackspace
	keyKillLine
	keyKillWord
	keyInterrupt
	keyEOF
)

// readKey decodes the next key from the input.
func (e *Editor) readKey() (key, rune, error) {
	for {
		b, err := e.in.ReadByte()
		if err != nil {
			return keyIgnore, 0, err
		}
		skipLF := e.skipLF
		e.skipLF = false
		switch {
		case b == '\r':
			e.skipLF = true
			return keyEnter, 0, nil
		case b == '\n':
			if skipLF {
				continue
			}
			return keyEnter, 0, nil
		case b == 0x7f || b == 0x08: // DEL, ^H
			return keyBackspace, 0, nil
		case b == 0x15: // ^U
			return keyKillLine, 0, nil
		case b == 0x17: // ^W
			return keyKillWord, 0, nil
		case b == 0x03: // ^C
			return keyInterrupt, 0, nil
		case b == 0x04: // ^D
			return keyEOF, 0, nil
		case b == 0x1b:
			if err := e.skipEscape(); err != nil {
				return keyIgnore, 0, err
			}
		case b < 0x20:
			// Other control bytes are ignored.
		case b < utf8.RuneSelf:
			return keyRune, rune(b), nil
		default:
			r, err := e.readRune(b)
			if err != nil {
				return keyIgnore, 0, err
			}
			if r != utf8.RuneError && Safe(r) {
				return keyRune, r, nil
			}
		}
	}
}

// readRune completes the UTF-8 sequence starting with lead. It returns
// utf8.RuneError for invalid input, consuming only the bytes that belong to
// the broken sequence.
func (e *Editor) readRune(lead byte) (rune, error) {
	var n int
	switch {
	case lead >= 0xc2 && lead <= 0xdf:
		n = 2
	case lead >= 0xe0 && lead <= 0xef:
		n = 3
	case lead >= 0xf0 && lead <= 0xf4:
		n = 4
	default:
		return utf8.RuneError, nil
	}
	p := []byte{lead}
	for len(p) < n {
		next, err := e.in.Peek(1)
		if err != nil {
			return utf8.RuneError, err
		}
		if next[0]&0xc0 != 0x80 {
			return utf8.RuneError, nil // leave it for the next key
		}
		p = append(p, next[0])
		_, _ = e.in.Discard(1)
	}
	r, size := utf8.DecodeRune(p)
	if size != n {
		return utf8.RuneError, nil
	}
	return r, nil
}

// skipEscape consumes the rest of an escape sequence whose ESC has been
// read: a CSI sequence (ESC [ ... final), an SS3 sequence (ESC O x) or an
// Alt-modified key (ESC x). A byte that cannot continue the sequence is
// left unread and handled as a key of its own, so ESC followed by Enter
// still ends the line.
func (e *Editor) skipEscape() error {
	next, err := e.in.Peek(1)
	if err != nil {
		return err
	}
	c := next[0]
	switch {
	case c == '[':
		_, _ = e.in.Discard(1)
		for {
			next, err := e.in.Peek(1)
			if err != nil {
				return err
			}
			c := next[0]
			switch {
			case c >= 0x20 && c <= 0x3f: // parameter and intermediate bytes
				_, _ = e.in.Discard(1)
			case c >= 0x40 && c <= 0x7e: // final byte
				_, _ = e.in.Discard(1)
				return nil
			default:
				return nil
			}
		}
	case c == 'O':
		_, _ = e.in.Discard(1)
		next, err := e.in.Peek(1)
		if err != nil {
			return err
		}
		if next[0] >= 0x40 && next[0] <= 0x7e {
			_, _ = e.in.Discard(1)
		}
	case c > 0x20 && c < 0x7f:
		_, _ = e.in.Discard(1) // Alt+key
	}
	return nil
}

// toCRLF turns every line break in s into CR LF.
func toCRLF(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	return strings.ReplaceAll(s, "\n", crlf)
}
