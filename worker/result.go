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
