package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
)

// ErrColdShutdown is the cause of task contexts cancelled by Close.
var ErrColdShutdown = errors.New("worker: cold shutdown")

// Shutdown is the lame-duck stop: consumers are cancelled, the serve loop
// is joined (so nothing is accepted after this point), held and waiting
// messages go back to the queue, running tasks finish and their results
// are stored, then the connection closes. If ctx ends first the remaining
// acknowledged tasks get a WorkerLostError result and the connection
// closes anyway (the broker requeues acks_late messages). Calling it again,
// or after Close, waits for the first stop to finish.
func (w *Worker) Shutdown(ctx context.Context) error {
	w.stopTaking()
	first := false
	w.stopOnce.Do(func() { first = true })
	if !first {
		select {
		case <-w.stopped:
		case <-ctx.Done():
		}
		return nil
	}
	w.markStopping()

	var err error
	select {
	case <-w.loopDone:
	case <-w.stopped:
		return nil
	case <-ctx.Done():
	}
	w.requeueQueued()
	finished := make(chan struct{})
	go func() {
		w.inflight.Wait()
		w.storing.Wait()
		close(finished)
	}()
	select {
	case <-finished:
	case <-w.stopped: // Close cut it short
		return nil
	case <-ctx.Done():
		err = fmt.Errorf("worker: shutdown: %d tasks still running: %w", w.running.Load(), ctx.Err())
		// Results first, then cancel: a task that returns on cancellation
		// must not slip out of the active list unrecorded.
		w.failAcknowledged("shutdown timeout", true)
		w.cancelBase(ErrColdShutdown)
		w.waitUnlisted(unlistedWait)
	}
	w.finalize()
	return err
}

// Close stops at once: running tasks' contexts are cancelled, acknowledged
// ones get a WorkerLostError result, the connection is closed and the
// broker requeues every unacknowledged message.
func (w *Worker) Close() error {
	w.stopTaking()
	w.stopOnce.Do(func() {})
	w.markStopping()
	w.failAcknowledged("cold shutdown", false)
	w.cancelBase(ErrColdShutdown)
	w.waitUnlisted(unlistedWait)
	w.finalize()
	return nil
}

// unlistedWait bounds a cold stop's wait for runners settling tasks it
// could not list: a WorkerLostError write takes at most 2 s.
const unlistedWait = 3 * time.Second

// finalize says goodbye to monitors and closes the connection, once.
func (w *Worker) finalize() {
	w.finalOnce.Do(func() {
		w.events.offline()
		w.connMu.Lock()
		c := w.conn
		w.connMu.Unlock()
		if c != nil {
			_ = c.Close()
		}
		close(w.stopped)
	})
}

// requeueQueued sends jobs waiting for a runner back to the broker now,
// oldest first, rather than when a busy runner gets to them; jobs that
// come later are requeued at once (dispatch).
func (w *Worker) requeueQueued() {
	for _, j := range w.waiting.drain() {
		if j.ackWait != nil {
			// Acknowledged ahead (ahead.go): the worker's, so it runs.
			go w.runJob(j)
			continue
		}
		if !lost(j) {
			w.reject(j, true, "shutting down before it started")
		}
		w.finish(j)
	}
}

// failAcknowledged stores FAILURE (WorkerLostError, as Python stores for a
// pool process that died) for running tasks whose message was already
// acknowledged, so no acknowledged task is left without a result when the
// worker stops before they finish. acks_late tasks are left to the broker,
// which redelivers them, except those cut off by the shutdown timeout
// without reject_on_worker_lost: they fail like acknowledged ones and their
// message is acknowledged, as Celery does for a task whose process was
// lost while the worker lives on.
//
// A runner between a task's ack and its entry in w.active is not in the
// lists failAcknowledged reads: cutOff, set first, makes that runner
// settle the task itself (execute) instead of starting it.
func (w *Worker) failAcknowledged(reason string, timeout bool) {
	c := &cutOff{reason: reason, timeout: timeout}
	if !w.cutOff.CompareAndSwap(nil, c) {
		c = w.cutOff.Load() // the first stop's terms stand
	}
	w.failAckedAhead(reason)
	w.active.Range(func(_, v any) bool {
		a := v.(*activeTask)
		w.settleCutOff(a, c, a.started.Load())
		return true
	})
}

// enterUnlisted and leaveUnlisted count the runners between taking a job
// and execute's check of cutOff, where a cold stop cannot list the task
// (failAcknowledged) and the runner settles it itself; waitUnlisted lets
// a cold stop wait for those settlements before the connection closes and
// the process may exit. Only j's runner calls them.
func (w *Worker) enterUnlisted(j *job) {
	j.unlisted = true
	w.unlisted.Add(1)
}

func (w *Worker) leaveUnlisted(j *job) {
	if j.unlisted {
		j.unlisted = false
		w.unlisted.Add(-1)
	}
}

func (w *Worker) waitUnlisted(within time.Duration) {
	deadline := time.Now().Add(within)
	for w.unlisted.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
}

// cutOff is the cold stop failAcknowledged handles.
type cutOff struct {
	reason  string
	timeout bool
}

// settleCutOff settles a task cut off by c, once. running: the task
// started (it is past execute's check of cutOff), else it never will.
// acks_late ones are left to the broker (which redelivers them), except
// running ones cut off by the shutdown timeout without
// reject_on_worker_lost; the others get WorkerLostError (and an acks_late
// one its ack).
func (w *Worker) settleCutOff(a *activeTask, c *cutOff, running bool) {
	a.cutOnce.Do(func() {
		if a.acksLate && (!c.timeout || a.rejectLost || !running) {
			return
		}
		w.storeWorkerLost(a.msg, c.reason, running)
		if a.acksLate {
			if err := broker.AckNow(a.d); err != nil {
				w.log.Warn().Err(err).Str("task", a.msg.Name()).Str("id", a.msg.ID).Msg("ack failed (the broker will redeliver the message)")
			}
		}
	})
}

// storeWorkerLost logs and stores FAILURE (WorkerLostError) for m, cut
// off by reason while it ran (running) or before it started.
func (w *Worker) storeWorkerLost(m *protocol.Message, reason string, running bool) {
	exc, log := " before the task started.", " before it started"
	if running {
		exc, log = " while the task was running.", " while it was running"
	}
	w.log.Error().Str("task", m.Name()).Str("id", m.ID).
		Msgf("Task %s[%s] lost: %s%s", m.Name(), m.ID, reason, log)
	if w.be.store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	info := backends.ExceptionInfo{Type: "WorkerLostError", Module: "billiard.exceptions",
		Args: []any{"Worker exited prematurely: " + reason + exc}}
	_ = w.be.store.Store(ctx, &backends.Result{TaskID: m.ID, Status: backends.StatusFailure,
		Result: info.Value(), Children: []any{}, DateDone: time.Now().UTC(),
		GroupID: m.Group, ParentID: m.ParentID})
}

// markStopping records that the worker stops; if Run never started, no
// serve loop will close loopDone, so it is closed here.
func (w *Worker) markStopping() {
	w.lifeMu.Lock()
	defer w.lifeMu.Unlock()
	if w.runState == notRun {
		close(w.loopDone)
	}
	w.runState = ran
}
