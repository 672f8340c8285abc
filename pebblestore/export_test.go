package pebblestore

import "github.com/cockroachdb/pebble/v2"

// PutRaw writes val as the record of the text seq of room, bypassing the
// committer: a damaged record, as a test needs one.
func (s *Store) PutRaw(room string, seq uint64, val []byte) error {
	return s.db.Set(textKey(roomPrefix(room), seq), val, pebble.Sync)
}

// Flush writes the memtable to a table file, so that the database's texts
// are in its tables rather than only in its log.
func (s *Store) Flush() error { return s.db.Flush() }

// Commits is how many batches of appends and forgets the committer has
// begun, and Taken how many appends and forgets they took.
func (s *Store) Commits() int64 { return s.commits.Load() }
func (s *Store) Taken() int64   { return s.taken.Load() }

// Queued is how many appends and forgets wait for the committer.
func (s *Store) Queued() int { return len(s.ops) }

// WALBytes is how many bytes the database has written to its log.
func (s *Store) WALBytes() uint64 { return s.db.Metrics().WAL.BytesWritten }

// HoldWrites holds the gate batches are written under, so that the
// committer waits (with a batch taken) until release is called.
func (s *Store) HoldWrites() (release func()) {
	s.gate.Lock()
	return s.gate.Unlock
}
