// Package proto holds what the two baseline servers share: the JSON
// messages, the length-prefixed framing, and an in-memory self-signed
// certificate with fingerprint pinning.
package proto

import (
	"bufio"
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
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"time"
)

// MaxFrame bounds a frame body in both directions.
const MaxFrame = 1 << 20

// Client is every message a client sends: first a hello, then texts.
type Client struct {
	Type string `json:"type"`
	Name string `json:"name,omitempty"`
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
	hdr [4]byte
	buf []byte
}

// NewFrameReader reads frames from r; with size > 0 it buffers r.
func NewFrameReader(r io.Reader, size int) *FrameReader {
	if size > 0 {
		r = bufio.NewReaderSize(r, size)
	}
	return &FrameReader{r: r}
}

// Next returns the next frame body, valid until the following call.
func (f *FrameReader) Next() ([]byte, error) {
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
