package term

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestSanitize(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain ASCII", "hello, world!", "hello, world!"},
		{"empty", "", ""},
		{"emoji", "nice 👍🏽 🎉", "nice 👍🏽 🎉"},
		{"emoji with variation selector", "❤️", "❤️"},
		{"CJK", "你好，世界 こんにちは 안녕", "你好，世界 こんにちは 안녕"},
		{"combining marks", "e\u0301 n\u0303", "e\u0301 n\u0303"},
		{"right-to-left text", "שלום مرحبا", "שלום مرحبا"},
		{"replacement character kept", "a\uFFFDb", "a\uFFFDb"},
		{"clear screen", "\x1b[2Jgone", "^[[2Jgone"},
		{"colour", "\x1b[31mred\x1b[0m", "^[[31mred^[[0m"},
		{"cursor movement", "a\x1b[10;10Hb\x1b[Ac", "a^[[10;10Hb^[[Ac"},
		{"set title with BEL", "\x1b]0;pwned\x07text", "^[]0;pwned^Gtext"},
		{"OSC 8 hyperlink with ST", "\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "^[]8;;http://x^[\\link^[]8;;^[\\"},
		{"C1 CSI", "\u009b2J", "\uFFFD2J"},
		{"C1 OSC and ST", "\u009d0;t\u009c", "\uFFFD0;t\uFFFD"},
		{"C1 NEL", "a\u0085b", "a\uFFFDb"},
		{"bidi override", "file\u202Etxt.exe", "file\uFFFDtxt.exe"},
		{"bidi embeddings and pop", "\u202A\u202B\u202C\u202D", "\uFFFD\uFFFD\uFFFD\uFFFD"},
		{"bidi isolates", "\u2066a\u2067b\u2068c\u2069", "\uFFFDa\uFFFDb\uFFFDc\uFFFD"},
		{"zero-width joiner", "ad\u200dmin", "ad\uFFFDmin"},
		{"zero-width space and BOM", "a\u200bb\ufeffc", "a\uFFFDb\uFFFDc"},
		{"soft hyphen", "in\u00advisible", "in\uFFFDvisible"},
		{"invalid UTF-8 byte", "a\xffb", "a\uFFFDb"},
		{"truncated sequence", "a\xe4\xbdb", "a\uFFFD\uFFFDb"},
		{"overlong encoding", "\xc0\xaf", "\uFFFD\uFFFD"},
		{"encoded surrogate", "\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"},
		{"raw C1 byte", "\x9b2J", "\uFFFD2J"},
		{"NUL", "a\x00b", "a^@b"},
		{"backspace", "abc\b\b\bxyz", "abc^H^H^Hxyz"},
		{"DEL", "a\x7fb", "a^?b"},
		{"tab", "a\tb", "a b"},
		{"newline", "one\ntwo", "one⏎two"},
		{"CR LF counts once", "one\r\ntwo", "one⏎two"},
		{"lone CR", "fake\roverwrite", "fake⏎overwrite"},
		{"line separators", "a\u2028b\u2029c", "a⏎b⏎c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Sanitize(tt.in)
			if got != tt.want {
				t.Fatalf("Sanitize(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if again := Sanitize(got); again != got {
				t.Fatalf("Sanitize is not idempotent: %q -> %q", got, again)
			}
			checkSafe(t, got)
		})
	}
}

// checkSafe fails if s contains anything a terminal could interpret.
func checkSafe(t *testing.T, s string) {
	t.Helper()
	if !utf8.ValidString(s) {
		t.Fatalf("%q is not valid UTF-8", s)
	}
	for _, r := range s {
		if !Safe(r) {
			t.Fatalf("%q contains unsafe %U", s, r)
		}
	}
}

func TestSanitizeEveryControl(t *testing.T) {
	for r := rune(0); r <= 0x10ffff; r++ {
		if r >= 0xd800 && r <= 0xdfff {
			continue
		}
		s := "a" + string(r) + "b"
		got := Sanitize(s)
		checkSafe(t, got)
		if Safe(r) != (got == s) {
			t.Fatalf("Sanitize(%q) = %q, Safe(%U) = %v", s, got, r, Safe(r))
		}
	}
	for b := 0; b < 256; b++ {
		checkSafe(t, Sanitize(string([]byte{byte(b)})))
	}
}

func FuzzSanitize(f *testing.F) {
	for _, s := range []string{"plain", "\x1b[2J", "\u009b", "\u202e", "\xff", "a\r\nb", "👍"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := Sanitize(s)
		checkSafe(t, got)
		if Sanitize(got) != got {
			t.Fatalf("not idempotent: %q", s)
		}
		if strings.ContainsAny(got, "\x1b\r\n") {
			t.Fatalf("Sanitize(%q) = %q", s, got)
		}
	})
}
