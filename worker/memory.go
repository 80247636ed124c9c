package worker

import (
	"runtime/debug"

	"github.com/rs/zerolog"
	"sync/atomic"
	"time"
)

// jobLogger is base with the task name and id on every event. A hook, not
// base.With(): With allocates a 500-byte context per logger, which every
// held or prefetched job would keep (BenchmarkHeldMessageMemory).
func jobLogger(base zerolog.Logger, name, id string) zerolog.Logger {
	return base.Hook(jobFields{name: name, id: id})
}

type jobFields struct{ name, id string }

func (f jobFields) Run(e *zerolog.Event, _ zerolog.Level, _ string) {
	e.Str("task", f.name).Str("id", f.id)
}

// largeMessage is the body size from which the worker hands memory back to
// the operating system once such messages are done with. The Go runtime
// returns freed heap on its own only after the next collection, which an
// idle worker does not start for two minutes, so a burst of large messages
// would otherwise leave the process at its peak size.
const largeMessage = 4 << 20

// releaseDelay lets a burst finish before the collection runs; at most one
// is pending at a time.
const releaseDelay = time.Second

type memoryReleaser struct{ pending atomic.Bool }

// done notes that a message of size bytes is no longer held; after a large
// one a collection that returns the freed memory is scheduled.
func (m *memoryReleaser) done(size int) {
	if size < largeMessage || !m.pending.CompareAndSwap(false, true) {
		return
	}
	time.AfterFunc(releaseDelay, func() {
		m.pending.Store(false)
		debug.FreeOSMemory()
	})
}
