package garou

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// A SeqKeeper is a HistoryStore that keeps texts across a server's
// restarts, and tells the number of a room's latest text, so that a
// restarted server numbers the room's next text after it and clients
// resume by number across the restart. The server asks once, when the
// room is created, with no lock held.
type SeqKeeper interface {
	HistoryStore
	// LastSeq returns the Seq of room's latest kept text; for a room with
	// none, the highest Seq of any room forgotten (0 if none), so that a
	// room made anew never reuses a number.
	LastSeq(ctx context.Context, room string) (uint64, error)
	// Epoch identifies what the store keeps: it must change whenever
	// its texts and numbers are lost (a new store, a file made anew), so
	// that a client never resumes by number across two histories. The
	// server tells it to clients (welcome's "server").
	Epoch() string
}

// dataDir is what a server keeps in its data directory (WithDataDir), so
// that its clients notice a restart as little as possible: the development
// certificate they pin, the TLS session-ticket key that lets them resume
// TLS (and 0-RTT), the QUIC stateless-reset key that tells clients of a
// crashed run at once that their connection is gone, and the key of the
// session tokens, which a restarted server recognises (sessionSigner).
// (Resuming rooms by number across a restart is the history store's: see
// SeqKeeper.)
type dataDir struct {
	cert       *tls.Certificate // the development certificate, if made here
	ticketKey  [32]byte
	resetKey   [32]byte
	sessionKey [32]byte // authenticates session tokens (sessionSigner)
}

// openDataDir loads dir's files, making those missing. makeCert says
// whether to keep a development certificate there (no TLS config given).
func openDataDir(dir string, makeCert bool) (*dataDir, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("garou: data directory: %w", err)
	}
	d := &dataDir{}
	for _, k := range []struct {
		name string
		key  *[32]byte
	}{{"ticket.key", &d.ticketKey}, {"reset.key", &d.resetKey}, {"session.key", &d.sessionKey}} {
		b, err := keep(dir, k.name, func() ([]byte, error) {
			var b [32]byte
			_, _ = rand.Read(b[:])
			return b[:], nil
		})
		if err != nil {
			return nil, err
		}
		if len(b) != 32 {
			return nil, fmt.Errorf("garou: data directory: %s is not a 32-byte key", filepath.Join(dir, k.name))
		}
		copy(k.key[:], b)
	}
	if makeCert {
		pemBytes, err := keep(dir, "dev-cert.pem", func() ([]byte, error) {
			cert, err := selfSignedCert()
			if err != nil {
				return nil, err
			}
			der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
			if err != nil {
				return nil, err
			}
			out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
			return append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})...), nil
		})
		if err != nil {
			return nil, err
		}
		cert, err := tls.X509KeyPair(pemBytes, pemBytes)
		if err != nil {
			return nil, fmt.Errorf("garou: data directory: dev-cert.pem: %w", err)
		}
		d.cert = &cert
	}
	return d, nil
}

// keep returns the contents of dir/name, first writing what make returns
// if the file does not exist (atomically, readable by the owner only).
func keep(dir, name string, make func() ([]byte, error)) ([]byte, error) {
	path := filepath.Join(dir, name)
	b, err := os.ReadFile(path)
	if err == nil {
		return b, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("garou: data directory: %w", err)
	}
	b, err = make()
	if err != nil {
		return nil, fmt.Errorf("garou: data directory: making %s: %w", name, err)
	}
	tmp, err := os.CreateTemp(dir, name+".*")
	if err != nil {
		return nil, fmt.Errorf("garou: data directory: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("garou: data directory: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("garou: data directory: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("garou: data directory: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return nil, fmt.Errorf("garou: data directory: %w", err)
	}
	return b, nil
}
