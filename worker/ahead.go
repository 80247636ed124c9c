package worker

import (
	"context"
	"time"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/broker"
)

// Acknowledging ahead. An early-ack task starts only once the broker has
// processed its ack (a lost connection must not run it twice), which costs
// a broker round trip before each start. So that the round trip overlaps
// work instead of preceding it, a runner that takes a job also moves up to
// one more job per runner from the waiting line into w.runq and starts its
// ack there (broker.AckStarter, on transports that can). Such a job is the
// worker's from then on: it runs even if the connection is lost, it runs
// during a warm shutdown, and a cold shutdown (or the shutdown timeout)
// records WorkerLostError for it. At most cap(w.runq) (the concurrency)
// tasks are acknowledged and not yet started; like the running tasks of an
// early-ack worker, they are lost if the process is killed.

// fillAhead moves waiting jobs into w.runq while it has room, starting
// the ack of each early-ack one.
func (w *Worker) fillAhead() {
	for !w.quitting() {
		n := w.aheadN.Load()
		if int(n) >= cap(w.runq) {
			return
		}
		if !w.aheadN.CompareAndSwap(n, n+1) {
			continue
		}
		var j *job
		select {
		case j = <-w.jobs:
		default:
			w.aheadN.Add(-1)
			return
		}
		w.startAck(j)
		w.runq <- j // room was reserved above
	}
}

// startAck starts the ack of an early-ack job on a transport that can
// (broker.AckStarter); the runner waits for it before starting the task.
func (w *Worker) startAck(j *job) {
	if j.ackWait != nil || w.acksLate(j.task) || w.quitting() {
		return
	}
	if s, ok := j.d.(broker.AckStarter); ok {
		j.ackWait = s.StartAck()
		w.ahead.Store(j, struct{}{})
	}
}

// takeAhead takes the oldest job of w.runq, if there is one.
func (w *Worker) takeAhead() (*job, bool) {
	select {
	case j := <-w.runq:
		w.aheadN.Add(-1)
		return j, true
	default:
		return nil, false
	}
}

// ackedAhead waits for the ack started ahead of j's run; false means it
// failed and the broker will redeliver the message (j must not start).
func (w *Worker) ackedAhead(j *job) bool {
	if _, mine := w.ahead.LoadAndDelete(j); !mine {
		// A cold shutdown recorded it as lost (failAckedAhead).
		return false
	}
	if err := j.ackWait(); err != nil {
		j.log.Warn().Err(err).Msgf("Task %s[%s] not started: its ack could not be sent (the broker will redeliver the message)", j.msg.Name(), j.msg.ID)
		return false
	}
	j.acked = true
	j.log.Debug().Msg("acked")
	return true
}

// failAckedAhead records WorkerLostError for jobs acknowledged ahead that
// will not run now (the worker stops at once): their messages are gone
// from the broker, and their callers must not wait for ever.
func (w *Worker) failAckedAhead(reason string) {
	w.ahead.Range(func(k, _ any) bool {
		j := k.(*job)
		if _, mine := w.ahead.LoadAndDelete(j); !mine {
			return true // a runner took it: it is starting
		}
		if err := j.ackWait(); err != nil {
			return true // not acknowledged: the broker redelivers it
		}
		exc := backends.ExceptionInfo{Type: "WorkerLostError", Module: "billiard.exceptions",
			Args: []any{"Worker exited prematurely: " + reason + " before the task started."}}
		j.log.Error().Msgf("Task %s[%s] lost: %s before it started", j.msg.Name(), j.msg.ID, reason)
		if w.be.store != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = w.be.store.Store(ctx, &backends.Result{TaskID: j.msg.ID, Status: backends.StatusFailure,
				Result: exc.Value(), Children: []any{}, DateDone: time.Now().UTC(),
				GroupID: j.msg.Group, ParentID: j.msg.ParentID})
			cancel()
		}
		return true
	})
}

// requeueAhead sends back the jobs of w.runq that were not acknowledged
// ahead (they stay the broker's); those that were go back into w.runq,
// in order, for the runners to finish.
func (w *Worker) requeueAhead() {
	var keep []*job
	for {
		j, ok := w.takeAhead()
		if !ok {
			break
		}
		if j.ackWait != nil {
			keep = append(keep, j)
			continue
		}
		w.reject(j, true, "shutting down before it started")
		w.finish(j)
	}
	for _, j := range keep {
		w.aheadN.Add(1)
		w.runq <- j
	}
}
