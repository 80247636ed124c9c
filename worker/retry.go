package worker

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
)

// retry republishes the task with the same id, retries+1 and an eta, as
// Celery's Task.retry does. RETRY is stored before the new message is
// published, so a fast retry's result can never be overwritten by a late
// RETRY (Python Celery publishes first and has that race).
func (w *Worker) retry(j *job, rerr *tasks.RetryError) {
	m := j.msg
	ctx := context.Background()
	maxRetries := j.task.Options.MaxRetries
	if rerr.MaxRetries != nil {
		maxRetries = *rerr.MaxRetries
	}
	if maxRetries >= 0 && m.Retries >= maxRetries {
		var exc backends.ExceptionInfo
		var tb string
		if rerr.Exc != nil {
			exc, tb = w.exceptionOf(outcome{err: rerr.Exc})
		} else {
			exc = backends.MaxRetriesExceeded(fmt.Sprintf("Can't retry %s[%s] args:%s kwargs:%s",
				m.Task, m.ID, protocol.PyRepr(m.Args), protocol.PyRepr(m.Kwargs)))
			tb = goTraceback(outcome{err: rerr})
		}
		j.log.Error().Msgf("Task %s[%s] raised unexpected: %s", m.Name(), m.ID, excRepr(exc))
		w.fail(j, exc, &tb)
		return
	}

	eta := time.Now()
	countdown := j.task.Options.DefaultRetryDelay
	switch {
	case rerr.ETA != nil:
		eta = *rerr.ETA
	case rerr.Countdown != nil:
		countdown = *rerr.Countdown
		fallthrough
	default:
		eta = eta.Add(countdown)
	}
	next := *m
	next.Retries = m.Retries + 1
	next.ETA = &eta
	if rerr.ETA == nil && countdown == 0 {
		// As Celery's apply_async: a countdown of 0 sets no ETA.
		next.ETA = nil
	}
	next.ParentID = m.ID
	if next.RootID == "" {
		next.RootID = m.ID
	}
	next.Origin = w.origin
	// Celery retries through a signature, whose args are a tuple: the
	// retry message's argsrepr is "(1, 2)" whatever the first one said
	// (the encoder writes it when empty). kwargsrepr is kept: a dict's repr
	// is the same again.
	next.ArgsRepr, next.KwargsRepr = "", m.KwargsRepr
	next.Headers = withoutXDeath(m.Headers)

	// As Celery: the task-retried event carries repr() of the exception
	// given to retry (None without one), the log line str() of the Retry.
	excText := "None"
	r := w.newResult(m, j.d.Info().RoutingKey, backends.StatusRetry)
	if rerr.Exc != nil {
		exc, tb := w.exceptionOf(outcome{err: rerr.Exc})
		r.Result = exc.Value()
		r.Traceback = &tb
		excText = excRepr(exc)
	}
	r.Children = []any{[]any{[]any{m.ID, nil}, nil}}
	w.store(j.log, r)

	route := w.retryRoute(j.d.Info(), next.ETA)
	if err := w.publish(ctx, j.log, route, &next, m.ContentType); err != nil {
		// The retry could not be sent: record the failure rather than lose
		// the task silently.
		j.log.Error().Err(err).Msgf("Task %s[%s] retry could not be published", m.Name(), m.ID)
		exc := backends.ExceptionInfo{Type: "RuntimeError", Module: "builtins", Args: []any{"retry could not be published: " + err.Error()}}
		w.store(j.log, w.failureResult(m, j.d.Info().RoutingKey, exc, nil))
		w.obs.TaskDone(m.Task, j.d.Info().RoutingKey, backends.StatusFailure, exc.Type, time.Since(j.start))
		return
	}
	w.obs.TaskDone(m.Task, j.d.Info().RoutingKey, backends.StatusRetry, "", time.Since(j.start))
	if w.events.enabled.Load() {
		var tb any
		if r.Traceback != nil {
			tb = *r.Traceback
		}
		w.events.task("task-retried", m.ID, map[string]any{"exception": excText, "traceback": tb})
	}
	var reason string
	switch {
	case rerr.ETA != nil:
		reason = "Retry at " + protocol.FormatTime(eta)
	default:
		reason = "Retry in " + pySeconds(countdown) + "s"
	}
	if rerr.Exc != nil {
		reason += ": " + excText
	}
	j.log.Info().Msgf("Task %s[%s] retry: %s", m.Name(), m.ID, reason)
}

func withoutXDeath(h map[string]any) map[string]any {
	if h == nil {
		return nil
	}
	out := make(map[string]any, len(h))
	for k, v := range h {
		if !strings.HasPrefix(k, "x-death") {
			out[k] = v
		}
	}
	return out
}
