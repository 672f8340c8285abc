package pebblestore

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/garou-chat/garou"
)

// Option configures Open. Options are applied in order; nil options are
// ignored.
type Option interface {
	apply(*options)
}

type options struct {
	size        int
	maxBatch    int
	maxDelay    time.Duration
	lockTimeout time.Duration
	logger      *slog.Logger
}

// defaults returns the options Open starts from.
func defaults() options {
	return options{
		size:        garou.DefaultHistorySize,
		maxBatch:    1024,
		maxDelay:    0,
		lockTimeout: 10 * time.Second,
		logger:      slog.Default(),
	}
}

func (o *options) validate() error {
	switch {
	case o.size < 0:
		return fmt.Errorf("pebblestore: history size %d is negative", o.size)
	case o.maxBatch < 1:
		return fmt.Errorf("pebblestore: max batch %d is less than 1", o.maxBatch)
	case o.maxDelay < 0:
		return fmt.Errorf("pebblestore: max delay %v is negative", o.maxDelay)
	case o.lockTimeout < 0:
		return fmt.Errorf("pebblestore: lock timeout %v is negative", o.lockTimeout)
	case o.logger == nil:
		return fmt.Errorf("pebblestore: nil logger")
	}
	return nil
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithSize sets how many texts are kept per room: After returns a room's
// newest n, and appends delete the older ones (in steps of n/4, so that a
// room's appends are not each followed by a delete). A size of 0 keeps
// nothing. Opening a database with a smaller size than it was last opened
// with trims every room at once. Default garou.DefaultHistorySize (100).
func WithSize(n int) Option {
	return optionFunc(func(o *options) { o.size = n })
}

// WithMaxBatch sets the most appends (and forgets) committed in one Pebble
// batch, so with one fsync of its write-ahead log. Default 1024.
func WithMaxBatch(n int) Option {
	return optionFunc(func(o *options) { o.maxBatch = n })
}

// WithMaxDelay sets how long a batch waits for more appends once it has
// its first, when fewer than the maximum batch are waiting. With 0 a batch
// takes what is waiting and commits at once; the appends that arrive while
// it commits go into the next one, which under load batches as well as a
// delay does without adding latency when the load is light. Default 0.
func WithMaxDelay(d time.Duration) Option {
	return optionFunc(func(o *options) { o.maxDelay = d })
}

// WithLockTimeout sets how long Open waits for another process holding
// the directory (a server still shutting down, say) to let go of it before
// it returns ErrInUse. 0 waits for ever. Default 10 seconds.
func WithLockTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) { o.lockTimeout = d })
}

// WithLogger sets where Pebble's own messages go: its background errors
// (a flush or compaction that failed and will be retried, a slow disk) at
// level warn, a failure that stops the store at level error, its routine
// messages at level debug. Default slog.Default().
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) { o.logger = l })
}
