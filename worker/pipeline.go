package worker

import (
	"context"
	"errors"
	"math"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
)

// The pipeline: the serve loop accepts a delivery (decode, settle what
// cannot run), holds it until its ETA, waits for its rate-limit token and
// hands it to a runner (pool.go), which runs it (execute.go).

// Where a job is, for inspect reserved/scheduled/query_task.
const (
	stateReserved  int32 = iota // prefetched, waiting for a slot or a rate limit token
	stateScheduled              // held until its ETA
	stateActive                 // running
)

// job is one decoded task message on its way through the worker. Held
// for its ETA or waiting for a runner it is usually frozen (frozen.go):
// msg and log are nil and frozen holds the message packed, until thaw.
// Its delivery info is the delivery's own (d.Info()).
type job struct {
	state      atomic.Int32
	size       int32 // body bytes, for memoryReleaser
	prev, next *job  // in w.known, under w.knownMu
	d          broker.Delivery
	task       *tasks.Task
	// msg is set (and frozen dropped) under w.knownMu: inspect reads them.
	msg      *protocol.Message
	frozen   string
	log      *zerolog.Logger
	eta      time.Time // msg.ETA while it is held
	received int64     // unix nanoseconds
	start    time.Time
	req      *tasks.Request // set when it runs
	// ackWait, when set, waits for the ack started ahead of the run
	// (ahead.go); acked is set once it succeeded: the message is the
	// worker's, not to be settled again.
	ackWait func() error
	acked   bool
	// doubt, when set (by doubts.add, under its lock), records the run of
	// a job whose ack is in doubt (doubt.go), for a redelivery of it.
	doubt *runFinish
	// unlisted: counted in w.unlisted (enterUnlisted); its runner's only.
	unlisted bool
}

// accept takes one delivery from the serve loop: it decodes it, settles
// what cannot run (undecodable, unknown, expired, revoked) and hands the
// rest on. It never blocks on I/O: results for settled messages are
// written in the background. The caller has counted it in w.inflight.
func (w *Worker) accept(d broker.Delivery) {
	j := w.prepare(d)
	if j == nil {
		w.inflight.Done()
		return
	}
	task := j.msg.Task
	held := j.msg.ETA != nil && time.Until(*j.msg.ETA) > 0
	limited := !held && w.limiter.Limited(task)
	switch {
	case held:
		j.state.Store(stateScheduled)
		j.eta = *j.msg.ETA
		j.log.Debug().Time("eta", j.eta).Msg("held until its ETA")
		w.freeze(j)
	case limited:
		j.log.Debug().Msg("waiting for a rate limit token")
		w.freeze(j)
	case w.waiting.busy(w.thawedLen()):
		// It will wait for a runner: frozen meanwhile.
		w.freeze(j)
	}
	w.addKnown(j)
	switch {
	case held:
		w.eta.hold(j)
	case limited:
		w.pace(j, task)
	default:
		// Queued, not handed over: the serve loop must keep receiving (ETA
		// messages, other tasks) while all runners are busy.
		w.dispatch(j)
		// While the runners are busy, the next ones get their acks
		// started (ahead.go).
		w.fillAhead()
	}
}

// prepare decodes and checks a delivery; nil means it was settled.
func (w *Worker) prepare(d broker.Delivery) (j *job) {
	info := d.Info()
	env := d.Envelope()
	defer func() {
		if j == nil { // settled here; else finish reports it
			w.mem.done(len(env.Body))
		}
	}()
	msg, err := protocol.Decode(env, decodeOptions(&w.cfg))
	if err != nil {
		w.rejectUndecodable(d, info, env, err)
		return nil
	}
	log := jobLogger(w.log, msg.Name(), msg.ID)
	log.Debug().Str("exchange", info.Exchange).Str("routing_key", info.RoutingKey).
		Bool("redelivered", info.Redelivered).Str("content_type", env.ContentType).
		Int("protocol", msg.Protocol).Msg("decoded")
	task, ok := w.reg.Lookup(msg.Task)
	if !ok {
		log.Error().Msgf("Received unregistered task of type %s. The message has been ignored and discarded.", protocol.PyRepr(msg.Task))
		exc := backends.NotRegistered(msg.Task)
		w.obs.TaskRejected(msg.Task, info.RoutingKey, "unregistered")
		w.events.task("task-failed", msg.ID, map[string]any{"exception": excRepr(exc)})
		w.storeThen(&log, w.failureResult(msg, info.RoutingKey, exc, nil), func(bool) {
			settle(&log, d, false, "unregistered task")
		})
		return nil
	}
	j = &job{d: d, msg: msg, task: task, log: &log, received: time.Now().UnixNano(), size: int32(min(len(env.Body), math.MaxInt32))}
	w.obs.TaskReceived(msg.Task, info.RoutingKey)
	if e := log.Info(); e.Enabled() {
		// Guarded: the arguments alone cost allocations at -l WARNING.
		e.Msgf("Task %s[%s] received", msg.Name(), msg.ID)
	}
	if w.events.enabled.Load() {
		w.events.task("task-received", msg.ID, map[string]any{
			"name": msg.Name(), "args": msg.ArgsRepr, "kwargs": msg.KwargsRepr,
			"root_id": protocol.NilIfEmpty(msg.RootID), "parent_id": protocol.NilIfEmpty(msg.ParentID),
			"retries": int64(msg.Retries), "eta": isoOrNil(msg.ETA), "expires": isoOrNil(msg.Expires),
		})
	}
	if w.discarded(j, true) {
		return nil
	}
	return j
}

// afterETA runs on the scheduler's goroutine when a held job is due:
// check it again, then queue it for the runners (so jobs due together
// wait in ETA order), or behind its task's others waiting for a rate
// limit token.
func (w *Worker) afterETA(j *job) {
	w.thaw(j)
	if w.discarded(j, true) {
		w.finish(j)
		return
	}
	if w.limiter.Limited(j.msg.Task) {
		w.pace(j, j.msg.Task)
		return
	}
	if w.waiting.busy(w.thawedLen()) {
		// Many come due at once (a batch of countdown tasks): frozen
		// again while they wait for a runner.
		w.refreeze(j)
	}
	w.dispatch(j)
}

// dispatch queues a job for the runners, or requeues it if the worker
// stops first. It does not wait.
func (w *Worker) dispatch(j *job) {
	if w.quitting() || !w.waiting.push(j) {
		w.reject(j, true, "shutting down before it started")
		w.finish(j)
	}
}

// discarded settles a job that must not run: expired, or revoked by a
// control command. With async the REVOKED result is written in the
// background and the message acked after it (the serve loop must not
// wait); runners write it in line.
func (w *Worker) discarded(j *job, async bool) bool {
	reason := ""
	switch {
	case j.msg.Expires != nil && !time.Now().Before(*j.msg.Expires):
		reason = "expired"
	case w.revoked.Contains(j.msg.ID):
		reason = "revoked"
	default:
		return false
	}
	j.log.Warn().Msgf("Discarding revoked task: %s[%s] (%s)", j.msg.Name(), j.msg.ID, reason)
	r := w.newResult(j.msg, j.d.Info().RoutingKey, backends.StatusRevoked)
	r.Result = backends.TaskRevoked(reason).Value()
	w.events.task("task-revoked", j.msg.ID, map[string]any{"terminated": false, "signum": nil, "expired": reason == "expired"})
	w.obs.TaskDone(j.msg.Task, j.d.Info().RoutingKey, backends.StatusRevoked, "", 0)
	settle := func() {
		w.store(j.log, r)
		w.onChordPart(j, backends.StatusRevoked, r.Result)
		w.ack(j)
	}
	if async {
		// Off the serve loop: the chord step may publish.
		w.background(settle)
	} else {
		settle()
	}
	return true
}

// alreadySucceeded acks, without running it, a message of a SkipSucceeded
// task whose id already has a SUCCESS result.
func (w *Worker) alreadySucceeded(j *job) bool {
	if !j.task.Options.SkipSucceeded || w.be.status == nil {
		return false
	}
	status, err := backends.StatusSuccess, error(nil)
	if _, writing := w.succeeded.Load(j.msg.ID); !writing {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		status, err = w.be.status.Status(ctx, j.msg.ID)
		cancel()
	}
	if err != nil {
		// Cannot tell: running it again is safer than losing it.
		j.log.Warn().Err(err).Msg("cannot read the stored state; running the task")
		return false
	}
	if status != backends.StatusSuccess {
		return false
	}
	j.log.Info().Bool("redelivered", j.d.Info().Redelivered).
		Msgf("Task %s[%s] already succeeded; skipping the duplicate", j.msg.Name(), j.msg.ID)
	w.ack(j)
	return true
}

// rejectUndecodable logs why a delivery is not a task, records FAILURE
// when its id was readable, and rejects it without requeue.
func (w *Worker) rejectUndecodable(d broker.Delivery, info broker.DeliveryInfo, env *protocol.Envelope, err error) {
	var de *protocol.DecodeError
	errors.As(err, &de)
	log := w.log.With().Str("exchange", info.Exchange).Str("routing_key", info.RoutingKey).Logger()
	if de != nil && de.TaskID != "" {
		log = log.With().Str("task", de.TaskName).Str("id", de.TaskID).Logger()
	}
	contentType := ""
	if env != nil {
		contentType = env.ContentType
	}
	what, reason := "Rejecting message that is not a valid task", "invalid"
	if errors.Is(err, protocol.ErrTooLarge) {
		what, reason = "Rejecting message larger than the message size limit", "too_large"
	}
	log.Error().Err(err).Str("content_type", contentType).Msg(what)
	taskName := ""
	if de != nil {
		taskName = de.TaskName
	}
	w.obs.TaskRejected(taskName, info.RoutingKey, reason)
	if de == nil || de.TaskID == "" {
		settle(&log, d, false, "not a valid task")
		return
	}
	exc := backends.ExceptionInfo{Type: "InvalidTaskError", Module: "celery.exceptions", Args: []any{err.Error()}}
	if errors.Is(err, protocol.ErrNotAccepted) {
		exc = backends.ExceptionInfo{Type: "ContentDisallowed", Module: "kombu.exceptions", Args: []any{err.Error()}}
	}
	w.events.task("task-rejected", de.TaskID, map[string]any{"requeue": false})
	msg := &protocol.Message{ID: de.TaskID, Task: de.TaskName}
	w.storeThen(&log, w.failureResult(msg, info.RoutingKey, exc, nil), func(bool) {
		settle(&log, d, false, "not a valid task")
	})
}

func (w *Worker) ack(j *job) {
	if j.acked {
		return
	}
	if err := j.d.Ack(); err != nil {
		j.log.Warn().Err(err).Msgf("Task %s[%s] ack failed (the broker will redeliver the message)", j.msg.Name(), j.msg.ID)
		return
	}
	j.log.Debug().Msg("acked")
}

func (w *Worker) reject(j *job, requeue bool, reason string) {
	if j.acked {
		// Acknowledged ahead of its run: the broker no longer has it.
		w.logOf(j).Debug().Bool("requeue", requeue).Str("reason", reason).Msg("not rejected: acknowledged before it started")
		return
	}
	settle(w.logOf(j), j.d, requeue, reason)
}

// settle rejects d, back to its queue with requeue, logged with reason.
func settle(log *zerolog.Logger, d broker.Delivery, requeue bool, reason string) {
	if err := d.Reject(requeue); err != nil {
		if !errors.Is(err, broker.ErrClosed) {
			log.Warn().Err(err).Bool("requeue", requeue).Str("reason", reason).Msg("reject failed")
		}
		return
	}
	log.Debug().Bool("requeue", requeue).Str("reason", reason).Msg("rejected")
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
	w.removeKnown(j)
	w.inflight.Done()
	w.mem.done(int(j.size))
}
