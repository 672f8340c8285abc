// Package boltstore keeps a Garou server's history on disk, in a bbolt
// file (go.etcd.io/bbolt): a garou.HistoryStore whose Append returns only
// once the text is on disk, so that the acknowledgement of a Send means
// the text survives a crash of the server.
//
//	store, err := boltstore.Open("/var/lib/chat/history.db")
//	if err != nil {
//		return err
//	}
//	defer store.Close()
//	srv, err := garou.NewServer(garou.WithHistoryStore(store))
//
// It is a module of its own, so that programs that keep their history in
// memory (or elsewhere) never download bbolt.
//
// # Layout
//
// One bucket per room holds the room's last texts (WithSize), keyed by
// Seq (8 bytes, big-endian); each text is a small binary record of its
// Type, ID, sender (ID and Name), Text and Time, and its SenderKey when it
// has one (a version 2 record: texts without one stay version 1, and
// files of either version are read alike), which lets a server restarted
// with a data directory acknowledge a retried text as it was instead of
// sequencing it twice. The host's own data about a user (garou.User.Data)
// is never written.
//
// # Group commit
//
// Appends from every room go to one goroutine, which commits all those
// waiting (up to WithMaxBatch) in one bbolt transaction, so with one pair
// of fsyncs, and then answers them: many concurrent senders share the
// cost of writing to disk, and none is answered before its text is there.
// After reads committed texts in a transaction of its own, concurrently
// with the commits.
//
// # Crashes and errors
//
// bbolt writes a transaction's pages, syncs them, then writes and syncs
// the page that makes them current (one of two, alternately): a crash at
// any point leaves the file as of the last transaction committed in full.
// So after a crash of the process or of the machine, every text whose
// Append returned nil is in the file, and none is half written; a text
// whose Append had not returned may or may not be. This relies on the
// disk honouring fsync (a disk cache that does not, without a battery,
// can lose the last transactions on a power cut).
//
// Every failure is an error of the call concerned, never a panic: a full
// disk or a write error fails every append of the transaction (none of
// them is kept) and the store goes on, so appends succeed again once
// there is room; a damaged file found while running (bbolt panics on some
// damage; the store recovers) fails that call and every later write with
// an error wrapping ErrCorrupt. Open checks the whole file (bbolt's
// consistency check) and refuses a damaged one.
package boltstore
