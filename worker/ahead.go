package worker

import "github.com/celeryworker/gocelery/broker"

// Acknowledging ahead. An early-ack task starts only once the broker has
// processed its ack (a lost connection must not run it twice), which costs
// a broker round trip before each start. So that the round trip overlaps
// work instead of preceding it, the acks of the first jobs waiting for a
// runner, up to one per runner, are started while they wait
// (broker.AckStarter, on transports that can): when a runner takes one,
// and when the serve loop queues one. Such a job is the worker's from then
// on: it runs even if the connection is lost, it runs during a warm
// shutdown, and a cold shutdown (or the shutdown timeout) records
// WorkerLostError for it. At most as many tasks as the pool has runners
// (autoscale and pool_grow/pool_shrink move it) are acknowledged and not
// yet started; like the running tasks of an early-ack worker, they are
// lost if the process is killed.

// fillAhead starts the acks of the jobs at the head of the waiting line.
func (w *Worker) fillAhead() {
	// Nothing more is acknowledged while the result backend is down: the
	// messages are safer unacknowledged in the broker's hands.
	if w.quitting() || w.backendDown.Load() {
		return
	}
	// One per runner there is now: with autoscale below its maximum the
	// configured concurrency would be more, and after pool_grow fewer.
	w.waiting.startAhead(max(1, w.pool.Size()), w.startAck)
}

// startAck starts the ack of an early-ack job on a transport that can
// (broker.AckStarter); the runner waits for it before starting the task.
func (w *Worker) startAck(j *job) {
	if j.ackWait != nil || w.acksLate(j.task) || w.quitting() {
		return
	}
	if s, ok := j.d.(broker.AckStarter); ok {
		w.aheadMu.RLock()
		j.ackWait = s.StartAck()
		w.ahead.Store(j, struct{}{})
		w.aheadMu.RUnlock()
	}
}

// ackedAhead waits for the ack started ahead of j's run; false means it
// failed and the broker will redeliver the message, or a cold shutdown
// recorded j as lost (j must not start). An ack in doubt is remembered
// before j leaves w.ahead, where rememberDoubts looks for it.
func (w *Worker) ackedAhead(j *job) bool {
	err := j.ackWait()
	if ackInDoubt(err) {
		w.doubts.add(doubtKey(j.msg), j)
	}
	if _, mine := w.ahead.LoadAndDelete(j); !mine {
		j.doubt.end(true) // failAckedAhead recorded it
		return false
	}
	return w.ackBeforeStart(j, err)
}

// ackBeforeStart decides on the outcome of an early-ack job's ack (err):
// false means it failed and the broker will redeliver the message. An ack
// in doubt counts as taken: the task runs rather than risk being lost.
func (w *Worker) ackBeforeStart(j *job, err error) bool {
	switch {
	case err == nil:
		j.log.Debug().Msg("acked")
	case ackInDoubt(err):
		w.doubts.add(doubtKey(j.msg), j)
		j.log.Warn().Err(err).Msgf("Task %s[%s] runs although the connection ended before the broker confirmed its ack (had the broker not taken it, a redelivery to this worker will not run again)", j.msg.Name(), j.msg.ID)
	default:
		j.log.Warn().Err(err).Msgf("Task %s[%s] not started: its ack could not be sent (the broker will redeliver the message)", j.msg.Name(), j.msg.ID)
		return false
	}
	j.acked = true
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
		if err := j.ackWait(); err != nil && !ackInDoubt(err) {
			return true // not acknowledged: the broker redelivers it
		}
		w.storeWorkerLost(w.messageOf(j), reason, false)
		return true
	})
}
