package boltstore

import "errors"

var (
	// ErrClosed is returned by the methods of a Store after Close.
	ErrClosed = errors.New("boltstore: store closed")

	// ErrCorrupt is wrapped by the errors about a file that is damaged or
	// is not a bbolt file at all: Open refuses it, and a Store that finds
	// damage while running returns it from the call that found it and from
	// every later Append and Forget.
	ErrCorrupt = errors.New("boltstore: file corrupt")

	// ErrNotHistory is returned by Open for a bbolt file that is not a
	// history file (another program's database), or one written by a later
	// version of this package.
	ErrNotHistory = errors.New("boltstore: not a history file")

	// ErrInUse is returned by Open when another process (or another Store
	// of this process) has the file open and did not close it within the
	// lock timeout (WithLockTimeout).
	ErrInUse = errors.New("boltstore: file in use")

	// ErrRoomName is returned for an empty room name, or one longer than a
	// bbolt key may be (32 KiB); the server never uses either.
	ErrRoomName = errors.New("boltstore: invalid room name")
	// ErrEarlierNotKept is returned for a text queued after a text of the
	// same room that was not kept (its commit failed, or its caller
	// withdrew it), and with a greater Seq: the store never keeps a room's
	// text without the one before it. It lasts until a text of the room
	// whose Seq goes back to the one not kept (or before) is queued, or
	// the room is forgotten.
	ErrEarlierNotKept = errors.New("boltstore: an earlier text of the room was not kept")
)
