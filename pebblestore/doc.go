// Package pebblestore keeps a Garou server's history on disk, in a Pebble
// database (github.com/cockroachdb/pebble/v2): a garou.HistoryStore whose
// Append returns only once the text is on disk, so that the
// acknowledgement of a Send means the text survives a crash of the server.
// It is the choice for write-heavy deployments; boltstore, smaller, is for
// the others (see the README).
//
//	store, err := pebblestore.Open("/var/lib/chat/history")
//	if err != nil {
//		return err
//	}
//	defer store.Close()
//	srv, err := garou.NewServer(garou.WithHistoryStore(store))
//
// It is a module of its own, so that programs that keep their history in
// memory, or in boltstore, never download Pebble and its dependencies.
//
// # Pure Go
//
// Built with cgo, Pebble compiles the C zstd library (github.com/DataDog/zstd)
// in; the build tag pebblegozstd, or CGO_ENABLED=0, makes it use the pure Go
// zstd of github.com/klauspost/compress instead. The two read and write the
// same files. This store does not compress with zstd either way.
//
// # Layout
//
// One key per text: the room's name (after its length) and Seq (8 bytes,
// big-endian), so a room's texts are contiguous and in order; the value
// is a small binary record of its Type, ID, sender (ID and Name), Text,
// Time and SenderKey (if any). The host's own data about a user (garou.User.Data) is never
// written. A few keys say what the database is (its format, size, epoch).
//
// # Group commit
//
// Appends from every room go to one goroutine, which writes all those
// waiting (up to WithMaxBatch) in one Pebble batch, synced: one write and
// one fsync of Pebble's write-ahead log for all of them, after which it
// answers them. Many concurrent senders share the cost of writing to disk,
// and none is answered before its text is there. After and LastSeq read
// concurrently with the commits, and never see a text before it is on
// disk (Pebble shows a batch to readers before its fsync ends, so a reader
// waits for a batch being synced before it takes its view).
//
// # Crashes and errors
//
// A batch is in Pebble's write-ahead log, synced, before its appends
// return; after a crash, Pebble replays the log up to its last whole
// record. So every text whose Append returned nil is there after a crash
// of the process or of the machine, and none is half written; a text whose
// Append had not returned may or may not be. This relies on the disk
// honouring fsync.
//
// Every failure is an error of the call concerned, never a panic nor an
// exit: Pebble's own response to a write it cannot complete (a full disk,
// an I/O error) is to end the process; the store instead fails, with an
// error wrapping ErrFailed for the append that met it and every later call,
// and the operator closes it and opens it again once there is room. A
// record that does not decode is an error wrapping ErrCorrupt for the call
// that reads it. Open reads every text and refuses a damaged database.
package pebblestore
