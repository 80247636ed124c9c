package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
)

// runJob is a runner's turn with one job: it is started only if its
// delivery is still live (a lost one is already back in the queue and
// would run twice), not expired or revoked meanwhile, and not a duplicate
// of a stored success.
func (w *Worker) runJob(j *job) {
	defer w.finish(j)
	w.enterUnlisted(j)
	defer w.leaveUnlisted(j)
	w.thaw(j)
	if j.ackWait != nil {
		// Acknowledged ahead: the worker's own now, whatever happens to
		// the connection or the worker meanwhile.
		if !w.ackedAhead(j) {
			return
		}
	} else {
		if w.quitting() {
			w.reject(j, true, "shutting down before it started")
			return
		}
		select {
		case <-j.d.Lost():
			j.log.Warn().Msgf("Task %s[%s] not started: its broker connection was lost and the broker has requeued it", j.msg.Name(), j.msg.ID)
			return
		default:
		}
	}
	j.state.Store(stateActive)
	if h, v, revoked := w.revokedByStamp(j.msg); revoked && !w.revoked.Contains(j.msg.ID) {
		// Checked here, where Celery checks it (when the task would start):
		// the id joins the revoked ones so discarded settles it as such.
		j.log.Info().Msgf("Discarding revoked task: %s[%s] (revoked by header: %s)",
			j.msg.Name(), j.msg.ID, protocol.PyRepr(map[string]any{h: v}))
		w.revoked.Add(j.msg.ID)
	}
	if w.discarded(j, false) || w.alreadySucceeded(j) || w.ranHere(j) {
		j.doubt.end(true) // settled without a run: a redelivery must not run either
		return
	}
	j.log.Debug().Msg("dispatched to a runner")
	w.run(j)
}

// outcome is how a task run ended.
type outcome struct {
	value     any
	err       error
	panicked  bool
	stack     string
	hardLimit time.Duration // > 0: the hard time limit fired
	cut       bool          // not started: a cold stop came first (settleCutOff)
}

// run executes the task in its slot and records the result, acknowledging
// before execution (Celery's default) or after the result is stored
// (acks_late).
func (w *Worker) run(j *job) {
	w.running.Add(1)
	defer w.running.Add(-1)
	acksLate := w.acksLate(j.task)
	if !acksLate && !j.acked {
		// Acknowledged before it starts, as Celery does, and only started
		// once the ack is on the wire: an ack still in a buffer when the
		// connection drops would let the broker hand the task out again.
		if !w.ackBeforeStart(j, broker.AckNow(j.d)) {
			return
		}
	}
	req := w.request(j)
	j.req = req
	ignore := j.msg.IgnoreResult || j.task.Options.IgnoreResult
	if (w.cfg.TrackStarted || j.task.Options.TrackStarted) && !ignore {
		r := w.newResult(j.msg, j.d.Info().RoutingKey, backends.StatusStarted)
		r.Result = map[string]any{"pid": int64(os.Getpid()), "hostname": w.nodeName}
		w.store(j.log, r)
	}
	j.start = time.Now()
	waitFrom := time.Unix(0, j.received)
	if eta := j.msg.ETA; eta != nil && eta.After(waitFrom) {
		waitFrom = *eta
	}
	w.obs.TaskStarted(j.msg.Task, j.d.Info().RoutingKey, j.start.Sub(waitFrom))
	// Listed as active until its outcome is recorded, so a stop in between
	// still finds it (failAcknowledged).
	defer w.active.Delete(j.msg.ID)
	w.countTask(j.msg.Task)
	w.events.task("task-started", j.msg.ID, nil)
	var fin *runFinish
	if acksLate {
		fin = &runFinish{done: make(chan struct{})}
		w.finishing.Store(j.msg.ID, fin)
	}
	out := w.execute(j, req)
	if out.cut {
		return // settled by settleCutOff; nothing to record
	}
	// A slot in the bounded buffer of results on their way to the backend:
	// while it is full (the backend is slow, or down and not yet known to
	// be), the runner waits here with its outcome instead of taking more.
	w.resultSlots <- struct{}{}
	w.record(j, out, ignore, func(stored bool) {
		<-w.resultSlots
		// acks_late: only once the result is stored; a result that could
		// not be stored sends the message back, to run again.
		j.doubt.end(stored)
		if acksLate {
			w.finishing.CompareAndDelete(j.msg.ID, fin)
			fin.end(stored)
			if stored {
				w.ack(j)
			} else {
				w.reject(j, true, "result not stored")
			}
		}
		w.processed.Add(1)
	})
}

// runFinish is an acks_late run whose outcome is being recorded, or the
// run of a task whose ack is in doubt (doubt.go), for a redelivery of the
// same message that arrives meanwhile (ranHere).
type runFinish struct {
	done   chan struct{}
	stored bool // set before done closes
	once   sync.Once

	// In doubts only: the message's doubtKey, the record of the copy of
	// the same message before this one, and the latest reception (unix
	// nanoseconds) of a redelivery it answers for (0: the worker has not
	// reconnected since; see doubts.connected).
	key   string
	prev  *runFinish
	until int64
}

// end records the outcome (stored: recorded, or nothing to record) and
// releases the waiters; the first call counts. f may be nil.
func (f *runFinish) end(stored bool) {
	if f == nil {
		return
	}
	f.once.Do(func() {
		f.stored = stored
		close(f.done)
	})
}

// ranHere handles the redelivery of an acks_late message whose first run,
// in this worker, is still running or storing its result (its connection
// was lost, so its ack will fail): instead of running the task a second
// time at once, it waits for that run, then acks the redelivery if the
// result was stored, or lets it run if not.
//
// The same for an early-ack task whose first copy ran here with its ack in
// doubt (doubt.go): if that ack had not reached the broker, this is its
// redelivery, and it runs only if the first run's outcome was not stored.
func (w *Worker) ranHere(j *job) bool {
	if !j.d.Info().Redelivered {
		return false
	}
	var first *runFinish
	if f, ok := w.finishing.Load(j.msg.ID); ok {
		first = f.(*runFinish)
	} else if first = w.doubts.firstRun(j); first == nil {
		return false
	}
	select {
	case <-first.done:
	default:
		j.log.Warn().Msgf("Task %s[%s] redelivered while its first run here is not finished; waiting for it instead of running it twice", j.msg.Name(), j.msg.ID)
		select {
		case <-first.done:
		case <-w.baseCtx.Done():
			// A cold shutdown cut the first run off (it has its
			// WorkerLostError if acknowledged): this copy does not start
			// either; one not acknowledged goes back to the queue.
			w.reject(j, true, "cold shutdown while its first run here was not finished")
			return true
		}
	}
	if !first.stored {
		return false
	}
	j.log.Info().Msgf("Task %s[%s] already ran here and its result is stored; acking the redelivery", j.msg.Name(), j.msg.ID)
	w.ack(j)
	return true
}

func (w *Worker) request(j *job) *tasks.Request {
	m := j.msg
	req := &tasks.Request{
		ID:         m.ID,
		Name:       m.Task,
		RootID:     m.RootID,
		ParentID:   m.ParentID,
		Group:      m.Group,
		GroupIndex: m.GroupIndex,
		Retries:    m.Retries,
		Hostname:   w.nodeName,
		DeliveryInfo: tasks.DeliveryInfo{
			Exchange:    j.d.Info().Exchange,
			RoutingKey:  j.d.Info().RoutingKey,
			Redelivered: j.d.Info().Redelivered,
			Priority:    int(j.d.Info().Priority),
		},
		ETA:     m.ETA,
		Expires: m.Expires,
		Args:    m.Args,
		Kwargs:  m.Kwargs,
		Task:    j.task,
		Logger:  *j.log,
	}
	if req.RootID == "" {
		req.RootID = m.ID
	}
	ignore := m.IgnoreResult || j.task.Options.IgnoreResult
	req.UpdateStateFunc = func(ctx context.Context, state string, meta any) error {
		if ignore || w.be.store == nil {
			return nil
		}
		r := w.newResult(m, j.d.Info().RoutingKey, state)
		r.Result = meta
		return w.be.store.Store(ctx, r)
	}
	return req
}

// limits picks the time limits: message header first, then the task's
// (as the time_limit control command last set them, else its options),
// then the worker's flags.
func (w *Worker) limits(j *job) (hard, soft time.Duration) {
	hard, soft = w.cfg.TimeLimit, w.cfg.SoftTimeLimit
	taskHard, taskSoft := j.task.Options.TimeLimit, j.task.Options.SoftTimeLimit
	if o, set := w.ctl.timeLimit(j.msg.Task); set {
		taskHard, taskSoft = o.hard, o.soft
	}
	if taskHard > 0 {
		hard = taskHard
	}
	if taskSoft > 0 {
		soft = taskSoft
	}
	if tl := j.msg.TimeLimit; tl.Hard > 0 {
		hard = time.Duration(tl.Hard * float64(time.Second))
	}
	if tl := j.msg.TimeLimit; tl.Soft > 0 {
		soft = time.Duration(tl.Soft * float64(time.Second))
	}
	return hard, soft
}

// activeTask is a task in a runner, for terminate, inspect and a cold
// stop: running, or about to start (started unset).
type activeTask struct {
	msg        *protocol.Message
	start      time.Time
	acksLate   bool
	rejectLost bool // acks_late, cut off by the shutdown timeout: requeue
	d          broker.Delivery
	info       broker.DeliveryInfo
	cancel     context.CancelCauseFunc
	terminated chan struct{}
	once       sync.Once
	cutOnce    sync.Once   // settleCutOff
	started    atomic.Bool // past the cold-stop check: the task runs
}

// terminate cancels the running task id with tasks.ErrTerminated and stops
// waiting for it; it reports whether the task was running here.
func (w *Worker) terminate(id string) bool {
	v, ok := w.active.Load(id)
	if !ok {
		return false
	}
	a := v.(*activeTask)
	a.once.Do(func() {
		a.cancel(tasks.ErrTerminated)
		close(a.terminated)
	})
	return true
}

// execute calls the task under its own context: the soft limit cancels the
// context with tasks.ErrSoftTimeLimitExceeded; at the hard limit the worker
// stops waiting and counts the goroutine as abandoned.
func (w *Worker) execute(j *job, req *tasks.Request) outcome {
	// Under the worker's context: Close cancels every running task.
	ctx, cancel := context.WithCancelCause(tasks.WithRequest(w.baseCtx, req))
	defer cancel(context.Canceled)
	hard, soft := w.limits(j)
	a := &activeTask{msg: j.msg, start: time.Now(), acksLate: w.acksLate(j.task),
		rejectLost: w.rejectOnWorkerLost(j.task), d: j.d,
		info: j.d.Info(), cancel: cancel, terminated: make(chan struct{})}
	w.active.Store(j.msg.ID, a) // deleted by run once the outcome is recorded
	if c := w.cutOff.Load(); c != nil {
		// A cold stop came between the ack and now, after or while
		// failAcknowledged looked for running tasks: not started under a
		// cancelled context; an acknowledged task gets its
		// WorkerLostError, an acks_late one is left to the broker.
		w.settleCutOff(a, c, false)
		return outcome{cut: true} // runJob leaves w.unlisted once settled
	}
	a.started.Store(true)
	w.leaveUnlisted(j) // listed in w.active from here on
	if soft > 0 {
		t := time.AfterFunc(soft, func() { cancel(tasks.ErrSoftTimeLimitExceeded) })
		defer t.Stop()
	}
	done := make(chan outcome, 1)
	go func() {
		var out outcome
		defer func() {
			if p := recover(); p != nil {
				out = outcome{panicked: true, err: fmt.Errorf("panic: %v", p), stack: string(debug.Stack())}
			}
			done <- out
		}()
		out.value, out.err = j.task.Handler.Call(ctx, j.msg.Args, j.msg.Kwargs)
	}()
	var hardC <-chan time.Time
	if hard > 0 {
		t := time.NewTimer(hard)
		defer t.Stop()
		hardC = t.C
	}
	select {
	case out := <-done:
		return out
	case <-hardC:
		cancel(tasks.ErrTimeLimitExceeded)
		w.abandon(done)
		return outcome{hardLimit: hard}
	case <-a.terminated:
		// Give a cooperative task a moment to return; one that does not is
		// abandoned like a task past its hard limit.
		select {
		case out := <-done:
			if out.err == nil || !errors.Is(out.err, tasks.ErrTerminated) {
				out = outcome{err: tasks.ErrTerminated}
			}
			return out
		case <-time.After(time.Second):
			w.abandon(done)
			return outcome{err: tasks.ErrTerminated}
		}
	}
}

// abandon stops waiting for a task goroutine and counts it until it ends.
func (w *Worker) abandon(done <-chan outcome) {
	w.abandoned.Add(1)
	go func() { <-done; w.abandoned.Add(-1) }()
}

// record stores the outcome and logs it as Celery does.
func (w *Worker) record(j *job, out outcome, ignore bool, finished func(stored bool)) {
	m := j.msg
	if out.err != nil && w.baseCtx.Err() != nil {
		// Cut off by a cold shutdown (its context was cancelled):
		// failAcknowledged has stored WorkerLostError for an acknowledged
		// task, and the broker redelivers an acks_late one. A task that
		// finished anyway is recorded below as usual.
		j.log.Warn().Msgf("Task %s[%s] cut off by the worker's shutdown: %v", m.Name(), m.ID, out.err)
		<-w.resultSlots
		return
	}
	runtime := time.Since(j.start).Seconds()
	async, stored := false, true
	defer func() {
		if !async {
			finished(stored)
		}
	}()
	switch {
	case out.hardLimit > 0:
		j.log.Error().Int64("abandoned_goroutines", w.abandoned.Load()).
			Msgf("Task %s[%s] Hard time limit (%gs) exceeded; its goroutine is abandoned", m.Name(), m.ID, out.hardLimit.Seconds())
		stored = w.fail(j, backends.TimeLimitExceeded(out.hardLimit.Seconds()), nil)
		return
	case out.err == nil:
		// Tasks it sent itself (client.SendTask from its context) first,
		// then the canvas steps, as Celery's request.children.
		children := append(j.req.Children(), w.onSuccessCanvas(j, out.value)...)
		if !ignore {
			r := w.newResult(m, j.d.Info().RoutingKey, backends.StatusSuccess)
			r.Result = out.value
			if children != nil {
				r.Children = children
			}
			async = true
			if j.task.Options.SkipSucceeded {
				// Until the write lands, a duplicate taken by another runner
				// must see the success too.
				w.succeeded.Store(m.ID, struct{}{})
				then := finished
				finished = func(stored bool) { w.succeeded.Delete(m.ID); then(stored) }
			}
			w.storeThen(j.log, r, finished)
		}
		w.onChordPart(j, backends.StatusSuccess, out.value)
		w.obs.TaskDone(m.Task, j.d.Info().RoutingKey, backends.StatusSuccess, "", time.Since(j.start))
		if w.events.enabled.Load() {
			w.events.task("task-succeeded", m.ID, map[string]any{"result": truncate(protocol.PyRepr(out.value), 1024), "runtime": runtime})
		}
		if e := j.log.Info(); e.Enabled() {
			e.Float64("runtime", runtime).Msgf("Task %s[%s] succeeded in %.6fs: %s", m.Name(), m.ID, runtime, reprShort(out.value))
		}
		return
	}
	var retry *tasks.RetryError
	if errors.As(out.err, &retry) && !out.panicked {
		w.retry(j, retry)
		return
	}
	if o := &j.task.Options; o.AutoRetry != nil && !out.panicked && o.AutoRetry(out.err) {
		d := o.BackoffCountdown(m.Retries, func(n int64) int64 { return rand.Int64N(n + 1) })
		w.retry(j, &tasks.RetryError{Countdown: &d, Exc: out.err})
		return
	}
	if errors.Is(out.err, tasks.ErrTerminated) {
		j.log.Warn().Msgf("Task %s[%s] terminated", m.Name(), m.ID)
		r := w.newResult(m, j.d.Info().RoutingKey, backends.StatusRevoked)
		r.Result = backends.TaskRevoked("terminated").Value()
		stored = w.store(j.log, r)
		w.onChordPart(j, backends.StatusRevoked, r.Result)
		w.events.task("task-revoked", m.ID, map[string]any{"terminated": true, "signum": "SIGTERM", "expired": false})
		w.obs.TaskDone(m.Task, j.d.Info().RoutingKey, backends.StatusRevoked, "", time.Since(j.start))
		return
	}
	exc, tb := w.exceptionOf(out)
	j.log.Error().Float64("runtime", runtime).Str("exc_type", exc.Type).
		Msgf("Task %s[%s] raised unexpected: %s", m.Name(), m.ID, excRepr(exc))
	stored = w.fail(j, exc, &tb)
}

// fail stores FAILURE for the task (even with ignore_result, as Celery
// does) and runs the failure side of the canvas; it reports whether the
// result was stored.
func (w *Worker) fail(j *job, exc backends.ExceptionInfo, tb *string) bool {
	w.obs.TaskDone(j.msg.Task, j.d.Info().RoutingKey, backends.StatusFailure, exc.Type, time.Since(j.start))
	r := w.failureResult(j.msg, j.d.Info().RoutingKey, exc, tb)
	if j.req != nil {
		if c := j.req.Children(); len(c) > 0 {
			r.Children = c
		}
	}
	stored := w.store(j.log, r)
	var tbText any
	if tb != nil {
		tbText = *tb
	}
	w.events.task("task-failed", j.msg.ID, map[string]any{"exception": excRepr(exc), "traceback": tbText})
	w.onChordPart(j, backends.StatusFailure, r.Result)
	w.onFailureCanvas(j, r)
	return stored
}

// exceptionOf maps a task's error to the Python exception Celery stores:
// a tasks.PyError names its own; a soft time limit is
// SoftTimeLimitExceeded; any other error or a panic is RuntimeError with the
// Go message, the error chain or stack going into the traceback.
func (w *Worker) exceptionOf(out outcome) (backends.ExceptionInfo, string) {
	if errors.Is(out.err, tasks.ErrSoftTimeLimitExceeded) {
		return backends.SoftTimeLimitExceeded(), goTraceback(out)
	}
	if pe, ok := tasks.AsPyError(out.err); ok && !out.panicked {
		module := pe.Module
		if module == "" {
			module = "builtins"
		}
		return backends.ExceptionInfo{Type: pe.Type, Module: module, Args: pe.Args}, goTraceback(out)
	}
	return backends.ExceptionInfo{Type: "RuntimeError", Module: "builtins", Args: []any{out.err.Error()}}, goTraceback(out)
}

// goTraceback renders the Go side of a failure for the traceback field:
// the error chain, and the stack of a panic.
func goTraceback(out outcome) string {
	var b strings.Builder
	b.WriteString("Traceback (Go):\n")
	for e := out.err; e != nil; e = errors.Unwrap(e) {
		fmt.Fprintf(&b, "  %T: %s\n", e, e.Error())
	}
	if out.stack != "" {
		b.WriteString(out.stack)
	}
	return b.String()
}

func excRepr(e backends.ExceptionInfo) string {
	parts := make([]string, len(e.Args))
	for i, a := range e.Args {
		parts[i] = protocol.PyRepr(a)
	}
	return e.Type + "(" + strings.Join(parts, ", ") + ")"
}

func reprShort(v any) string {
	s := protocol.PyRepr(v)
	if len(s) > 256 {
		s = s[:253] + "..."
	}
	return s
}

// countTask counts a started task by name, for the stats command.
func (w *Worker) countTask(name string) {
	v, ok := w.totals.Load(name)
	if !ok {
		v, _ = w.totals.LoadOrStore(name, new(atomic.Int64))
	}
	v.(*atomic.Int64).Add(1)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
