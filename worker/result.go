package worker

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"github.com/celeryworker/gocelery/amqp"
	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/protocol"
)

// newResult starts a result document for m with Celery's fields.
func (w *Worker) newResult(m *protocol.Message, d amqp.Delivery, status string) *backends.Result {
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
		r.Queue = d.RoutingKey
	}
	return r
}

func (w *Worker) failureResult(m *protocol.Message, d amqp.Delivery, exc backends.ExceptionInfo, traceback *string) *backends.Result {
	r := w.newResult(m, d, backends.StatusFailure)
	r.Result = exc.Value()
	r.Traceback = traceback
	return r
}

// store writes a result, retrying briefly so a Redis hiccup does not lose
// it; a result that still cannot be written is logged with its content.
func (w *Worker) store(ctx context.Context, log *zerolog.Logger, r *backends.Result) {
	if w.backend == nil || r.TaskID == "" {
		return
	}
	delay := 50 * time.Millisecond
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if err = w.backend.Store(ctx, r); err == nil {
			return
		}
		time.Sleep(delay)
		delay *= 4
	}
	log.Error().Err(err).Str("status", r.Status).Msg("cannot store task result")
}

// asyncStore is implemented by backends that pipeline writes.
type asyncStore interface {
	StoreAsync(r *backends.Result, done func(error))
}

// storeAsync writes a final result without holding the task's slot while
// Redis answers; then runs after it is stored (or given up on, logged).
// Shutdown waits for these writes.
func (w *Worker) storeAsync(log *zerolog.Logger, r *backends.Result, then func()) {
	as, ok := w.backend.(asyncStore)
	if !ok || r.TaskID == "" {
		w.store(context.Background(), log, r)
		then()
		return
	}
	w.storing.Add(1)
	as.StoreAsync(r, func(err error) {
		if err == nil {
			then()
			w.storing.Done()
			return
		}
		// Retry off the writer goroutine, with the usual backoff.
		go func() {
			defer w.storing.Done()
			w.store(context.Background(), log, r)
			then()
		}()
	})
}
