// Package term holds the terminal pieces of the interactive chat client:
// a sanitiser for untrusted text, a small line editor for raw-mode
// terminals and helpers to switch a terminal into raw mode.
package term

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Placeholders written by Sanitize in place of characters a terminal
// would interpret.
const (
	// Replacement stands in for C1 controls, format characters such as
	// bidi overrides and zero-width joiners, and invalid UTF-8.
	Replacement = "\uFFFD"
	// Newline stands in for a line break inside a message, so that one
	// message always occupies one line of output.
	Newline = "\u23CE" // ⏎
)

// Sanitize returns s with everything a terminal would interpret replaced by
// a visible placeholder, so that the result can be written to a terminal
// without moving the cursor, changing colours, setting the window title or
// reordering the surrounding text.
//
//   - "\n", "\r\n" and a lone "\r" become Newline (⏎), as do U+2028 and
//     U+2029: a sanitised message is always a single line.
//   - "\t" becomes a single space.
//   - Other C0 controls become caret notation: ESC is "^[", BEL is "^G",
//     NUL is "^@". The rest of an escape sequence is ordinary printable
//     text and is left as it is, so "\x1b[2J" reads "^[[2J".
//   - DEL becomes "^?".
//   - C1 controls (U+0080 to U+009F), format characters (Unicode category
//     Cf: bidi embeddings, overrides and isolates, zero-width joiners and
//     non-joiners, soft hyphens, byte order marks, ...) and each byte of
//     invalid UTF-8 become Replacement (U+FFFD).
//
// Everything else, including emoji, CJK and combining marks, is unchanged.
// Sanitize is idempotent: Sanitize(Sanitize(s)) == Sanitize(s).
func Sanitize(s string) string {
	// Fast path: most chat lines need no change.
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !Safe(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}

	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		switch {
		case r == utf8.RuneError && size == 1:
			b.WriteString(Replacement)
		case r == '\r':
			if i < len(s) && s[i] == '\n' {
				i++
			}
			b.WriteString(Newline)
		case r == '\n' || r == '\u2028' || r == '\u2029':
			b.WriteString(Newline)
		case r == '\t':
			b.WriteByte(' ')
		case r < 0x20:
			b.WriteByte('^')
			b.WriteByte(byte(r) + '@')
		case r == 0x7f:
			b.WriteString("^?")
		case !Safe(r):
			b.WriteString(Replacement)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// Safe reports whether r can be written to a terminal as it is: it is not a
// C0 or C1 control, DEL, a format character (Unicode category Cf, which
// includes the bidi controls U+202A to U+202E and U+2066 to U+2069) or a
// line or paragraph separator. U+FFFD itself is safe.
func Safe(r rune) bool {
	switch {
	case r < 0x20 || r == 0x7f:
		return false
	case r < 0x80:
		return true
	case r <= 0x9f:
		return false
	case r == '\u2028' || r == '\u2029':
		return false
	case r > unicode.MaxRune || (r >= 0xD800 && r <= 0xDFFF):
		return false
	}
	return !unicode.Is(unicode.Cf, r)
}
