package garou

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
)

// selfSignedCert makes an ECDSA P-256 development certificate valid for
// localhost, 127.0.0.1 and ::1, for a year.
func selfSignedCert() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "garou development certificate"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// Fingerprint returns the SHA-256 digest of a DER certificate in the form
// WithFingerprint takes: lower-case hex pairs separated by colons.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	var b strings.Builder
	for i, c := range sum {
		if i > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%02x", c)
	}
	return b.String()
}

func parseFingerprint(fp string) ([]byte, error) {
	raw, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(fp), ":", ""))
	if err != nil || len(raw) != sha256.Size {
		return nil, errors.New("fingerprint must be 32 bytes of hex (SHA-256), colons allowed")
	}
	return raw, nil
}

// serverTLS completes the operator's TLS config, or makes the development
// one. It returns the config and the fingerprint of its first certificate.
func serverTLS(cfg *tls.Config) (*tls.Config, string, error) {
	if cfg == nil {
		cert, err := selfSignedCert()
		if err != nil {
			return nil, "", fmt.Errorf("garou: making development certificate: %w", err)
		}
		cfg = &tls.Config{Certificates: []tls.Certificate{cert}}
	} else {
		cfg = cfg.Clone()
	}
	cfg.MinVersion = tls.VersionTLS13
	cfg.NextProtos = []string{ALPN}
	fp := ""
	if cfg.GetCertificate == nil && cfg.GetConfigForClient == nil &&
		len(cfg.Certificates) > 0 && len(cfg.Certificates[0].Certificate) > 0 {
		fp = Fingerprint(cfg.Certificates[0].Certificate[0])
	} else if cfg.GetCertificate == nil && cfg.GetConfigForClient == nil {
		return nil, "", optErr("TLS config has no certificate")
	}
	return cfg, fp, nil
}

// clientTLS builds the client's TLS config for a server address.
func clientTLS(c *clientConfig, addr string) (*tls.Config, error) {
	var cfg *tls.Config
	if c.tlsConfig != nil {
		cfg = c.tlsConfig.Clone()
	} else {
		cfg = &tls.Config{}
	}
	cfg.MinVersion = tls.VersionTLS13
	cfg.NextProtos = []string{ALPN}
	if cfg.ClientSessionCache == nil {
		// The session tickets of this client's connections: a reconnect
		// resumes the TLS session and sends its hello in 0-RTT. The
		// cache is the client's own, so a ticket is only ever used with
		// the server (and pin) that issued it.
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	}
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("garou: bad address %q: %w", addr, err)
		}
		cfg.ServerName = host
	}
	switch {
	case c.insecure:
		cfg.InsecureSkipVerify = true
	case c.fingerprint != "":
		want, _ := parseFingerprint(c.fingerprint) // validated with the options
		cfg.InsecureSkipVerify = true              // replaced by the pin below
		cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("garou: server sent no certificate")
			}
			got := sha256.Sum256(raw[0])
			if subtle.ConstantTimeCompare(got[:], want) != 1 {
				return ErrFingerprintMismatch
			}
			return nil
		}
	}
	return cfg, nil
}
