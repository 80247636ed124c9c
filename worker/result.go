package worker

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/rs/zerolog"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/protocol"
)

// ResultBackend is what the worker needs from a result backend. The Redis
// backend (backends.Redis) has more abilities, which the worker finds once,
// in New, and lists in backend below.
type ResultBackend interface {
	Store(ctx context.Context, r *backends.Result) error
}

// The optional abilities of a result backend.
type (
	// asyncStorer pipelines writes (StoreAsync calls done from its writer).
	asyncStorer interface {
		StoreAsync(r *backends.Result, done func(error))
	}
	// statusReader reads a stored state (tasks.SkipSucceeded needs it).
	statusReader interface {
		Status(ctx context.Context, taskID string) (string, error)
	}
	// chordCounter keeps chord counters shared with Python workers.
	chordCounter interface {
		SetChordSize(ctx context.Context, gid string, size int) error
		ChordPartReturn(ctx context.Context, gid string, groupIndex *int, taskID, state string, result any) ([]backends.ChordPart, error)
		ChordCleanup(ctx context.Context, gid string) error
	}
	// pinger checks the connection at start.
	pinger interface {
		Ping(ctx context.Context) error
	}
)

// backend is the configured result backend with its abilities resolved.
type backend struct {
	store  ResultBackend // nil: results are not stored
	async  asyncStorer
	status statusReader
	chord  chordCounter
	ping   pinger
}

func newBackend(rb ResultBackend) backend {
	b := backend{store: rb}
	if rb == nil {
		return b
	}
	b.async, _ = rb.(asyncStorer)
	b.status, _ = rb.(statusReader)
	b.chord, _ = rb.(chordCounter)
	b.ping, _ = rb.(pinger)
	return b
}

// checkBackend pings the backend at start: refused credentials end the
// worker (they cannot heal); an unreachable backend is logged and retried
// on each write.
func (w *Worker) checkBackend(ctx context.Context) error {
	if w.be.ping == nil {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := w.be.ping.Ping(pctx)
	if err == nil {
		return nil
	}
	if errors.Is(err, backends.ErrMisconfigured) {
		return &ConfigError{Setting: "result_backend", Err: err}
	}
	w.log.Warn().Err(err).Msg("result backend not reachable yet")
	w.setBackendDown(true)
	return nil
}

// newResult starts a result document for m with Celery's fields; queue is
// the routing key the message came with (for result_extended).
func (w *Worker) newResult(m *protocol.Message, queue string, status string) *backends.Result {
	r := &backends.Result{
		TaskID:   m.ID,
		Status:   status,
		Children: []any{},
		GroupID:  m.Group,
		ParentID: m.ParentID,
	}
	switch status {
	case backends.StatusSuccess, backends.StatusFailure, backends.StatusRevoked:
		r.DateDone = time.Now().UTC()
	}
	if w.cfg.ResultExtended {
		r.Name = m.Task
		r.Args = m.Args
		r.Kwargs = m.Kwargs
		r.Worker = w.nodeName
		r.Retries = m.Retries
		r.Queue = queue
	}
	return r
}

func (w *Worker) failureResult(m *protocol.Message, queue string, exc backends.ExceptionInfo, traceback *string) *backends.Result {
	r := w.newResult(m, queue, backends.StatusFailure)
	r.Result = exc.Value()
	r.Traceback = traceback
	return r
}

// store writes a result and reports whether it landed. While the backend
// is down it keeps the result and retries with backoff until the backend
// is back or the worker is cut off (Close, or the shutdown timeout): a
// finished task's result is never dropped after a fixed number of tries.
// The worker takes no new task meanwhile (runnerGate), so the results held
// are bounded by the runners. It does not take the worker's quit context:
// a result must land even while the worker stops.
func (w *Worker) store(log *zerolog.Logger, r *backends.Result) bool {
	if w.be.store == nil || r.TaskID == "" {
		return true
	}
	delay := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(w.baseCtx, storeTimeout)
		err := w.be.store.Store(ctx, r)
		cancel()
		cut := w.baseCtx.Err() != nil
		final := err == nil || errors.Is(err, backends.ErrTooLarge) || cut
		w.storeDone(err, final)
		if err == nil {
			if attempt > 1 {
				log.Info().Int("attempts", attempt).Str("status", r.Status).Msg("result stored after the backend came back")
			}
			return true
		}
		if final {
			log.Error().Err(err).Str("status", r.Status).Int("attempts", attempt).Msg("cannot store task result")
			return false
		}
		if attempt == 1 {
			log.Warn().Err(err).Str("status", r.Status).Msg("cannot store task result; holding it and retrying until the backend is back")
		}
		select {
		case <-time.After(delay + rand.N(delay/2+1)):
		case <-w.baseCtx.Done():
		}
		delay = min(delay*2, maxStoreBackoff)
	}
}

const (
	storeTimeout    = 10 * time.Second // one write
	maxStoreBackoff = 2 * time.Second  // between retries of a held result
)

// ioContext bounds one result-backend or broker operation that must finish
// even while the worker closes.
func ioContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 20*time.Second)
}

// storeThen writes r off the calling goroutine (the serve loop, the control
// loop and runners must not wait for Redis), then runs then (may be nil)
// with whether it was stored; then must be quick: it may run on the
// backend's writer goroutine. Shutdown waits for these writes.
func (w *Worker) storeThen(log *zerolog.Logger, r *backends.Result, then func(stored bool)) {
	if then == nil {
		then = func(bool) {}
	}
	if w.be.store == nil || r.TaskID == "" {
		then(true)
		return
	}
	retry := func() { then(w.store(log, r)) }
	if w.be.async == nil {
		w.background(retry)
		return
	}
	w.storing.Add(1)
	w.be.async.StoreAsync(r, func(err error) {
		w.storeDone(err, false)
		if err != nil {
			// Retry off the writer goroutine, with the usual backoff.
			w.background(retry)
		} else {
			then(true)
		}
		w.storing.Done()
	})
}

// background runs f off the calling goroutine; Shutdown waits for it.
func (w *Worker) background(f func()) {
	w.storing.Add(1)
	go func() {
		defer w.storing.Done()
		f()
	}()
}

// storeDone records the outcome of one write for health and metrics, and
// marks the backend down or up (a result too large is no outage).
func (w *Worker) storeDone(err error, final bool) {
	if !errors.Is(err, backends.ErrTooLarge) {
		w.setBackendDown(err != nil)
	}
	w.obs.ResultStore(err, final)
}

// setBackendDown records that the result backend is down or back. While
// it is down, runners take no new task (runnerGate): prefetched messages
// stay reserved, unacknowledged, and nothing finishes whose result would
// have to be held. A probe pings it so the worker resumes even when no
// result is waiting to be retried.
func (w *Worker) setBackendDown(down bool) {
	w.beMu.Lock()
	defer w.beMu.Unlock()
	if down == w.backendDown.Load() {
		return
	}
	w.backendDown.Store(down)
	if down {
		w.beUp = make(chan struct{})
		w.log.Warn().Msg("result backend down: taking no new tasks until it is back; finished results are held and retried")
		if w.be.ping != nil {
			go w.probeBackend(w.beUp)
		}
		return
	}
	close(w.beUp)
	w.log.Info().Msg("result backend is back: taking tasks again")
}

// runnerGate is nil while the result backend is up, else a channel closed
// when it is back.
func (w *Worker) runnerGate() <-chan struct{} {
	if !w.backendDown.Load() {
		return nil
	}
	w.beMu.Lock()
	defer w.beMu.Unlock()
	if !w.backendDown.Load() {
		return nil
	}
	return w.beUp
}

// probeBackend pings the backend with backoff until it answers (or up
// closes, or the worker is cut off).
func (w *Worker) probeBackend(up <-chan struct{}) {
	delay := 100 * time.Millisecond
	for {
		select {
		case <-up:
			return
		case <-w.baseCtx.Done():
			return
		case <-time.After(delay):
		}
		ctx, cancel := context.WithTimeout(w.baseCtx, 2*time.Second)
		err := w.be.ping.Ping(ctx)
		cancel()
		if err == nil {
			w.setBackendDown(false)
			return
		}
		delay = min(delay*2, maxStoreBackoff)
	}
}
