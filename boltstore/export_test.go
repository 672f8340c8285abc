package boltstore

import (
	"encoding/binary"
	"time"

	"github.com/garou-chat/garou"
	bolt "go.etcd.io/bbolt"
)

// AppendDBBatch is Append through bbolt's own DB.Batch instead of the
// store's committer, for the benchmark that compares them. It trims by
// Seq, which is the same for a room whose numbering has no hole.
func (s *Store) AppendDBBatch(room string, m garou.ChatMessage) error {
	val, err := encodeText(&m)
	if err != nil {
		return err
	}
	return s.db.Batch(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(roomsBucket).CreateBucketIfNotExists([]byte(room))
		if err != nil {
			return err
		}
		if err := b.Put(seqKey(m.Seq), val); err != nil {
			return err
		}
		c := b.Cursor()
		for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k)+uint64(s.opts.size) <= m.Seq; k, _ = c.First() {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
}

// SetDBBatch sets bbolt's DB.Batch limits.
func (s *Store) SetDBBatch(size int, delay time.Duration) {
	s.db.MaxBatchSize, s.db.MaxBatchDelay = size, delay
}

// PagesWritten is how many pages the store has written since it opened.
func (s *Store) PagesWritten() int64 {
	st := s.db.Stats()
	return st.TxStats.GetWrite()
}

// Commits is how many transactions of appends and forgets the committer
// has begun, and Taken how many appends and forgets they took.
func (s *Store) Commits() int64 { return s.commits.Load() }
func (s *Store) Taken() int64   { return s.taken.Load() }

// Queued is how many appends and forgets wait for the committer.
func (s *Store) Queued() int { return len(s.ops) }

// HoldWrites begins a write transaction, so that the committer waits until
// release is called.
func (s *Store) HoldWrites() (release func()) {
	tx, err := s.db.Begin(true)
	if err != nil {
		panic(err)
	}
	return func() { _ = tx.Rollback() }
}
