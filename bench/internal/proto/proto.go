// Package proto holds what the two baseline servers share: the JSON
// messages, the length-prefixed framing, and an in-memory self-signed
// certificate with fingerprint pinning.
package proto

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"time"
	"unicode/utf8"
)

// MaxFrame bounds a frame body in both directions.
const MaxFrame = 1 << 20

// Client is every message a client sends: first a hello, then texts.
type Client struct {
	Type string `json:"type"`
	Name string `json:"name,omitempty"`
	// Room is the room a hello joins; empty is the default room. A
	// client is in one room and its texts go to that room's members.
	Room string `json:"room,omitempty"`
	Text string `json:"text,omitempty"`
}

// Server is every message a server sends: a welcome once registered, then
// the texts it stamped.
type Server struct {
	Type string    `json:"type"`
	From string    `json:"from,omitempty"`
	ID   uint64    `json:"id,omitempty"`
	Text string    `json:"text,omitempty"`
	Time time.Time `json:"time,omitzero"`
}

// Message types.
const (
	TypeHello   = "hello"
	TypeWelcome = "welcome"
	TypeText    = "text"
)

// AppendFrame appends a 4-byte big-endian length and body to dst.
func AppendFrame(dst, body []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(body)))
	return append(dst, body...)
}

// ErrFrameTooLarge is returned for a length prefix over MaxFrame.
var ErrFrameTooLarge = errors.New("frame too large")

// FrameReader reads length-prefixed frames, reusing one buffer.
type FrameReader struct {
	r   io.Reader
	br  *bufio.Reader // r, when buffered
	hdr [4]byte
	buf []byte
}

// NewFrameReader reads frames from r; with size > 0 it buffers r, and a
// frame wholly in the buffer is returned from there, without a copy.
func NewFrameReader(r io.Reader, size int) *FrameReader {
	if size > 0 {
		br := bufio.NewReaderSize(r, size)
		return &FrameReader{r: br, br: br}
	}
	return &FrameReader{r: r}
}

// Next returns the next frame body, valid until the following call.
func (f *FrameReader) Next() ([]byte, error) {
	if f.br != nil && f.br.Buffered() >= 4 {
		hdr, _ := f.br.Peek(4)
		if n := int(binary.BigEndian.Uint32(hdr)); n <= MaxFrame && f.br.Buffered() >= 4+n {
			b, _ := f.br.Peek(4 + n)
			_, _ = f.br.Discard(4 + n)
			return b[4:], nil
		}
	}
	if _, err := io.ReadFull(f.r, f.hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(f.hdr[:])
	if n > MaxFrame {
		return nil, ErrFrameTooLarge
	}
	if cap(f.buf) < int(n) {
		f.buf = make([]byte, n, max(int(n), 512))
	}
	f.buf = f.buf[:n]
	if _, err := io.ReadFull(f.r, f.buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return f.buf, nil
}

// ParseServer returns the type, sender and text of a server message. The
// clients decode one message per delivery, so the messages as the servers
// write them (encoding/json's flat object of strings and numbers) are read
// directly and the slices point into body; anything else, such as a string
// with an escape, goes through encoding/json, which gives the same result.
func ParseServer(body []byte) (typ, from, text []byte, err error) {
	if typ, from, text, ok := scanServer(body); ok {
		return typ, from, text, nil
	}
	var m struct{ Type, From, Text string }
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, nil, nil, err
	}
	return []byte(m.Type), []byte(m.From), []byte(m.Text), nil
}

// scanServer reads an object of string and unsigned integer values with
// no spaces and no escapes, and reports false for anything else.
func scanServer(b []byte) (typ, from, text []byte, ok bool) {
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return nil, nil, nil, false
	}
	i := 1
	for i < len(b)-1 {
		key, j, ok := scanString(b, i)
		if !ok || j >= len(b) || b[j] != ':' {
			return nil, nil, nil, false
		}
		var val []byte
		if j++; j < len(b) && b[j] == '"' {
			if val, j, ok = scanString(b, j); !ok {
				return nil, nil, nil, false
			}
		} else {
			k := j
			for k < len(b) && '0' <= b[k] && b[k] <= '9' {
				k++
			}
			if k == j {
				return nil, nil, nil, false
			}
			j = k
		}
		switch string(key) {
		case "type":
			typ = val
		case "from":
			from = val
		case "text":
			text = val
		default:
			if bytes.EqualFold(key, []byte("type")) || bytes.EqualFold(key, []byte("from")) || bytes.EqualFold(key, []byte("text")) {
				return nil, nil, nil, false // encoding/json matches keys without case
			}
		}
		switch {
		case j == len(b)-1:
			return typ, from, text, true
		case b[j] == ',':
			i = j + 1
		default:
			return nil, nil, nil, false
		}
	}
	return nil, nil, nil, i == 1 // {}
}

// ParseGarou returns the type, sender's name and text of a Garou server
// frame's body (PROTOCOL.md §6), whose sender is an object
// ({"id":…,"name":…}). As ParseServer does, it reads the frames as Garou
// writes them (strings, unsigned integers, and "from" as an object of
// those) in place, and anything else through encoding/json.
func ParseGarou(body []byte) (typ, name, text []byte, err error) {
	if typ, name, text, ok := scanGarou(body); ok {
		return typ, name, text, nil
	}
	var m struct {
		Type string
		From struct{ Name string }
		Text string
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, nil, nil, err
	}
	return []byte(m.Type), []byte(m.From.Name), []byte(m.Text), nil
}

// scanGarou reads an object as scanServer does, except that "from" is an
// object of strings and unsigned integers whose "name" it returns.
func scanGarou(b []byte) (typ, name, text []byte, ok bool) {
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return nil, nil, nil, false
	}
	if len(b) == 2 {
		return nil, nil, nil, true
	}
	for i := 1; ; {
		key, j, ok := scanString(b, i)
		if !ok || j >= len(b) || b[j] != ':' {
			return nil, nil, nil, false
		}
		j++
		switch string(key) {
		case "from":
			if j >= len(b) || b[j] != '{' {
				return nil, nil, nil, false
			}
			end := bytes.IndexByte(b[j:], '}')
			if end < 0 {
				return nil, nil, nil, false
			}
			end += j
			// The object holds no '}' of a string: a string with one is
			// cut short, and its scan fails.
			fields, _, _, ok := scanFields(b[j:end+1], "name")
			if !ok {
				return nil, nil, nil, false
			}
			name = fields
			j = end + 1
		case "type", "text":
			var val []byte
			if val, j, ok = scanValue(b, j); !ok || val == nil {
				return nil, nil, nil, false // (a number: encoding/json refuses it)
			}
			if key[1] == 'y' {
				typ = val
			} else {
				text = val
			}
		default:
			if bytes.EqualFold(key, []byte("type")) || bytes.EqualFold(key, []byte("from")) || bytes.EqualFold(key, []byte("text")) {
				return nil, nil, nil, false // encoding/json matches keys without case
			}
			if _, j, ok = scanValue(b, j); !ok {
				return nil, nil, nil, false
			}
		}
		switch {
		case j == len(b)-1:
			return typ, name, text, true
		case j < len(b) && b[j] == ',':
			i = j + 1
		default:
			return nil, nil, nil, false
		}
	}
}

// scanFields reads an object b of string and unsigned integer values and
// returns the value of want's key.
func scanFields(b []byte, want string) (val []byte, _, _ []byte, ok bool) {
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return nil, nil, nil, false
	}
	if len(b) == 2 {
		return nil, nil, nil, true
	}
	for i := 1; ; {
		key, j, ok := scanString(b, i)
		if !ok || j >= len(b) || b[j] != ':' {
			return nil, nil, nil, false
		}
		var v []byte
		if v, j, ok = scanValue(b, j+1); !ok {
			return nil, nil, nil, false
		}
		switch {
		case string(key) == want:
			if v == nil {
				return nil, nil, nil, false
			}
			val = v
		case bytes.EqualFold(key, []byte(want)):
			return nil, nil, nil, false
		}
		switch {
		case j == len(b)-1:
			return val, nil, nil, true
		case j < len(b) && b[j] == ',':
			i = j + 1
		default:
			return nil, nil, nil, false
		}
	}
}

// scanValue reads a string (returned) or an unsigned integer (nil) at b[j]
// and returns the index after it.
func scanValue(b []byte, j int) (val []byte, next int, ok bool) {
	if j < len(b) && b[j] == '"' {
		return scanString(b, j)
	}
	k := j
	for k < len(b) && '0' <= b[k] && b[k] <= '9' {
		k++
	}
	return nil, k, k > j
}

// scanString reads the string starting at b[i] and returns its contents and
// the index after it; it reports false for an escape, a control character
// or invalid UTF-8, which encoding/json would decode, reject or replace.
func scanString(b []byte, i int) (s []byte, next int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	n := bytes.IndexByte(b[i+1:], '"')
	if n < 0 {
		return nil, 0, false
	}
	s = b[i+1 : i+1+n]
	for _, c := range s {
		if c == '\\' || c < 0x20 {
			return nil, 0, false
		}
	}
	if !utf8.Valid(s) { // encoding/json would replace the invalid bytes
		return nil, 0, false
	}
	return s, i + 2 + n, true
}

// SelfSigned makes an ECDSA P-256 certificate for 127.0.0.1 and localhost
// and returns it with its fingerprint (hex SHA-256 of the DER).
func SelfSigned() (tls.Certificate, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return tls.Certificate{}, "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "garoubench"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, Fingerprint(der), nil
}

// Fingerprint is the hex SHA-256 of a DER certificate.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// ServerTLS is a TLS 1.3 server configuration with a fresh self-signed
// certificate; it returns the certificate's fingerprint too.
func ServerTLS(alpn ...string) (*tls.Config, string, error) {
	cert, fp, err := SelfSigned()
	if err != nil {
		return nil, "", err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS13,
		NextProtos:   alpn,
	}, fp, nil
}

// PinnedTLS is a TLS 1.3 client configuration that accepts exactly the
// certificate whose fingerprint is fp.
func PinnedTLS(fp string, alpn ...string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         alpn,
		InsecureSkipVerify: true, // replaced by the pin below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("no certificate")
			}
			if got := Fingerprint(raw[0]); subtle.ConstantTimeCompare([]byte(got), []byte(fp)) != 1 {
				return fmt.Errorf("certificate fingerprint %s, want %s", got, fp)
			}
			return nil
		},
	}
}
