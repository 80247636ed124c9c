package worker

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/celeryworker/gocelery/amqp"
	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
)

// Where a job is, for inspect reserved/scheduled/query_task.
const (
	stateReserved  int32 = iota // prefetched, waiting for a slot or a rate limit token
	stateScheduled              // held until its ETA
	stateActive                 // running
)

// job is one decoded task message on its way through the worker.
type job struct {
	state atomic.Int32
	conn  *amqp.Conn
	d     amqp.Delivery
	msg   *protocol.Message
	task  *tasks.Task
	log   zerolog.Logger
	start time.Time
}

// accept takes one delivery from the serve loop: it decodes it, settles
// what cannot run (undecodable, unknown, expired, revoked) and hands the
// rest to a runner, through a waiting goroutine when it has an ETA or a
// rate limit to wait for. The caller has counted it in w.inflight.
func (w *Worker) accept(conn *amqp.Conn, d amqp.Delivery) {
	j := w.prepare(conn, d)
	if j == nil {
		w.inflight.Done()
		return
	}
	w.known.Store(j, struct{}{})
	if j.msg.ETA != nil && time.Until(*j.msg.ETA) > 0 {
		j.state.Store(stateScheduled)
		w.eta.hold(j)
		return
	}
	if w.limiter.Limited(j.msg.Task) {
		go w.afterETA(j)
		return
	}
	// A free runner takes it at once; otherwise wait off the serve loop, which
	// must keep receiving (ETA messages, other tasks) while all slots are busy.
	if !w.quitting() {
		select {
		case w.jobs <- j:
			return
		default:
		}
	}
	go w.dispatch(j)
}

// prepare decodes and checks a delivery; nil means it was settled.
func (w *Worker) prepare(conn *amqp.Conn, d amqp.Delivery) *job {
	msg, err := protocol.Decode(amqp.EnvelopeOf(&d), decodeOptions(&w.cfg))
	if err != nil {
		w.rejectUndecodable(d, err)
		return nil
	}
	log := w.log.With().Str("task", msg.Name()).Str("id", msg.ID).Logger()
	task, ok := w.reg.Lookup(msg.Task)
	if !ok {
		log.Error().Msgf("Received unregistered task of type '%s'. The message has been ignored and discarded.", msg.Task)
		w.store(context.Background(), &log, w.failureResult(msg, d, backends.NotRegistered(msg.Task), nil))
		w.events.task("task-failed", msg.ID, map[string]any{"exception": excRepr(backends.NotRegistered(msg.Task))})
		w.nack(&log, d, false)
		return nil
	}
	// The decoded message is all that is needed from here on: dropping the
	// raw headers and body keeps held ETA messages small.
	d.Headers, d.Body = nil, nil
	j := &job{conn: conn, d: d, msg: msg, task: task, log: log}
	log.Info().Msgf("Task %s[%s] received", msg.Name(), msg.ID)
	if w.events.enabled.Load() {
		w.events.task("task-received", msg.ID, map[string]any{
			"name": msg.Name(), "args": msg.ArgsRepr, "kwargs": msg.KwargsRepr,
			"root_id": nilIfEmpty(msg.RootID), "parent_id": nilIfEmpty(msg.ParentID),
			"retries": int64(msg.Retries), "eta": isoOrNil(msg.ETA), "expires": isoOrNil(msg.Expires),
		})
	}
	if w.expired(j) || w.isRevoked(j) {
		return nil
	}
	return j
}

// afterETA runs when a held job is due: check it again, wait for its rate
// limit token, then dispatch.
func (w *Worker) afterETA(j *job) {
	if w.expired(j) || w.isRevoked(j) {
		w.finish(j)
		return
	}
	if err := w.limiter.Wait(w.quitCtx, j.msg.Task); err != nil {
		w.nack(&j.log, j.d, true) // shutting down before it started: back to the queue
		w.finish(j)
		return
	}
	w.dispatch(j)
}

// dispatch hands a job to a free runner, or requeues it if the worker
// stops first.
func (w *Worker) dispatch(j *job) {
	if w.quitting() {
		w.nack(&j.log, j.d, true)
		w.finish(j)
		return
	}
	select {
	case w.jobs <- j:
	case <-w.quit:
		w.nack(&j.log, j.d, true)
		w.finish(j)
	case <-j.conn.Done():
		w.finish(j) // the broker has requeued it
	}
}

// runner is one of the Concurrency goroutines that run tasks. Long-lived
// runners bound concurrency and keep their grown stacks, which a
// goroutine per task would grow anew each time.
func (w *Worker) runner() {
	for {
		select {
		case j := <-w.jobs:
			if w.quitting() {
				// Queued before shutdown began and not started: back to the queue.
				w.nack(&j.log, j.d, true)
				w.finish(j)
				continue
			}
			j.state.Store(stateActive)
			if !w.expired(j) && !w.isRevoked(j) && !w.alreadySucceeded(j) {
				w.run(j)
			}
			w.finish(j)
		case <-w.done:
			return
		}
	}
}

// expired discards a task past its expires time.
func (w *Worker) expired(j *job) bool {
	if j.msg.Expires == nil || time.Now().Before(*j.msg.Expires) {
		return false
	}
	w.discardRevoked(j, "expired")
	return true
}

// isRevoked discards a task revoked by a control command.
func (w *Worker) isRevoked(j *job) bool {
	if !w.revoked.Contains(j.msg.ID) {
		return false
	}
	w.discardRevoked(j, "revoked")
	return true
}

// discardRevoked records REVOKED with reason (and the chord part), and
// acks the message without running it.
func (w *Worker) discardRevoked(j *job, reason string) {
	j.log.Warn().Msgf("Discarding revoked task: %s[%s] (%s)", j.msg.Name(), j.msg.ID, reason)
	r := w.newResult(j.msg, j.d, backends.StatusRevoked)
	r.Result = backends.TaskRevoked(reason).Value()
	w.store(context.Background(), &j.log, r)
	w.onChordPart(j, backends.StatusRevoked, r.Result)
	w.events.task("task-revoked", j.msg.ID, map[string]any{"terminated": false, "signum": nil, "expired": reason == "expired"})
	w.ack(&j.log, j.d)
}

// StatusReader is implemented by result stores that can read a task's
// stored state; the SkipSucceeded task option needs it.
type StatusReader interface {
	Status(ctx context.Context, taskID string) (string, error)
}

// alreadySucceeded acks, without running it, a message of a SkipSucceeded
// task whose id already has a SUCCESS result.
func (w *Worker) alreadySucceeded(j *job) bool {
	if !j.task.Options.SkipSucceeded {
		return false
	}
	sr, ok := w.backend.(StatusReader)
	if !ok {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	status, err := sr.Status(ctx, j.msg.ID)
	if err != nil {
		// Cannot tell: running it again is safer than losing it.
		j.log.Warn().Err(err).Msg("cannot read the stored state; running the task")
		return false
	}
	if status != backends.StatusSuccess {
		return false
	}
	j.log.Info().Bool("redelivered", j.d.Redelivered).
		Msgf("Task %s[%s] already succeeded; skipping the duplicate", j.msg.Name(), j.msg.ID)
	w.ack(&j.log, j.d)
	return true
}

// rejectUndecodable logs why a delivery is not a task, records FAILURE
// when its id was readable, and rejects it without requeue.
func (w *Worker) rejectUndecodable(d amqp.Delivery, err error) {
	var de *protocol.DecodeError
	errors.As(err, &de)
	log := w.log.With().Str("exchange", d.Exchange).Str("routing_key", d.RoutingKey).Logger()
	if de != nil && de.TaskID != "" {
		log = log.With().Str("task", de.TaskName).Str("id", de.TaskID).Logger()
	}
	log.Error().Err(err).Str("content_type", d.ContentType).Msg("Rejecting message that is not a valid task")
	if de != nil && de.TaskID != "" {
		exc := backends.ExceptionInfo{Type: "InvalidTaskError", Module: "celery.exceptions", Args: []any{err.Error()}}
		if errors.Is(err, protocol.ErrNotAccepted) {
			exc = backends.ExceptionInfo{Type: "ContentDisallowed", Module: "kombu.exceptions", Args: []any{err.Error()}}
		}
		msg := &protocol.Message{ID: de.TaskID, Task: de.TaskName}
		w.store(context.Background(), &log, w.failureResult(msg, d, exc, nil))
		w.events.task("task-rejected", de.TaskID, map[string]any{"requeue": false})
	}
	w.nack(&log, d, false)
}

func (w *Worker) ack(log *zerolog.Logger, d amqp.Delivery) {
	if err := d.Ack(false); err != nil {
		log.Warn().Err(err).Msg("ack failed (the broker will redeliver the message)")
	}
}

func (w *Worker) nack(log *zerolog.Logger, d amqp.Delivery, requeue bool) {
	if err := d.Reject(requeue); err != nil {
		log.Warn().Err(err).Bool("requeue", requeue).Msg("reject failed")
	}
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func isoOrNil(t *time.Time) any {
	if t == nil {
		return nil
	}
	return protocol.FormatTime(*t)
}

// finish ends a job's life in the worker: it is settled (or its
// connection is gone) and no longer listed by inspect.
func (w *Worker) finish(j *job) {
	w.known.Delete(j)
	w.inflight.Done()
}
