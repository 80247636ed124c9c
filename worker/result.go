package worker

import (
	"context"
	"errors"
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
	w.backendDown.Store(true)
	w.log.Warn().Err(err).Msg("result backend not reachable yet; results are retried")
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

// store writes a result, retrying with backoff so a Redis hiccup does not
// lose it (about 17 s over 5 attempts at most); a result that still cannot
// be written is logged with its status. It does not take the worker's
// context: a result must land even while the worker closes.
func (w *Worker) store(log *zerolog.Logger, r *backends.Result) {
	if w.be.store == nil || r.TaskID == "" {
		return
	}
	ctx, cancel := ioContext()
	defer cancel()
	delay := 50 * time.Millisecond
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		err = w.be.store.Store(ctx, r)
		final := attempt == 4 || errors.Is(err, backends.ErrTooLarge) || ctx.Err() != nil
		w.storeDone(err, final)
		if err == nil {
			return
		}
		if final {
			break
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
		}
		delay *= 4
	}
	log.Error().Err(err).Str("status", r.Status).Msg("cannot store task result")
}

// ioContext bounds one result-backend or broker operation that must finish
// even while the worker closes.
func ioContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 20*time.Second)
}

// storeThen writes r off the calling goroutine (the serve loop, the control
// loop and runners must not wait for Redis), then runs then (may be nil),
// which must be quick: it may run on the backend's writer goroutine.
// Shutdown waits for these writes.
func (w *Worker) storeThen(log *zerolog.Logger, r *backends.Result, then func()) {
	if w.be.store == nil || r.TaskID == "" {
		if then != nil {
			then()
		}
		return
	}
	retry := func() {
		w.store(log, r)
		if then != nil {
			then()
		}
	}
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
		} else if then != nil {
			then()
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

// storeDone records the outcome of one write for health and metrics.
func (w *Worker) storeDone(err error, final bool) {
	w.backendDown.Store(err != nil && !errors.Is(err, backends.ErrTooLarge))
	w.obs.ResultStore(err, final)
}
