package pebblestore

import "errors"

var (
	// ErrClosed is returned by the methods of a Store after Close.
	ErrClosed = errors.New("pebblestore: store closed")

	// ErrCorrupt is wrapped by the errors about a database that is damaged:
	// Open refuses one whose files or records cannot be read, and a Store
	// that finds damage while running returns it from the call that found
	// it (a record that does not decode) or, when the database itself
	// reports damage, from every later call.
	ErrCorrupt = errors.New("pebblestore: database corrupt")

	// ErrNotHistory is returned by Open for a Pebble database that is not a
	// history (another program's database), or one written by a later
	// version of this package.
	ErrNotHistory = errors.New("pebblestore: not a history database")

	// ErrInUse is returned by Open when another process (or another Store
	// of this process) has the directory open and did not close it within
	// the lock timeout (WithLockTimeout).
	ErrInUse = errors.New("pebblestore: database in use")

	// ErrRoomName is returned for an empty room name, or one longer than
	// 32 KiB; the server never uses either.
	ErrRoomName = errors.New("pebblestore: invalid room name")

	// ErrFailed is wrapped by the errors of a Store whose database could not
	// complete a write (a full disk, an I/O error): Pebble cannot go on
	// after that, so the appends that met it and every later call fail with
	// it (reads too: what Pebble holds in memory may include the batch that
	// failed). Close the Store, make room, and open it again: every text
	// acknowledged before the failure is there.
	ErrFailed = errors.New("pebblestore: database failed")
	// ErrEarlierNotKept is returned for a text queued after a text of the
	// same room that was not kept (its commit failed, or its caller
	// withdrew it), and with a greater Seq: the store never keeps a room's
	// text without the one before it. It lasts until a text of the room
	// whose Seq goes back to the one not kept (or before) is queued, or
	// the room is forgotten.
	ErrEarlierNotKept = errors.New("pebblestore: an earlier text of the room was not kept")
)
