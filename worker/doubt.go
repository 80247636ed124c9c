package worker

import (
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
)

// Acks in doubt. An early-ack task starts only once the broker has
// confirmed its ack; when the connection ends after the ack was written
// but before the confirmation came back (broker.ErrAckInDoubt), nobody can
// tell whether the broker read it. If it did, the message is gone and the
// task runs nowhere unless it runs here; if it did not, the broker
// redelivers it. So the task runs (never lost), and its id is remembered
// here: a redelivery that comes back to this worker waits for that run and
// is acknowledged without running if its outcome was recorded (ranHere).
// One that reaches another worker runs there too: at least once, which is
// what Celery gives every ack a lost connection catches.

// doubtKeep bounds the remembered ids: a lost connection leaves at most a
// prefetch window of acks in doubt, and their redeliveries come back
// first, at the head of their queues.
const doubtKeep = 4096

// doubtGrace is how long after the next connection a record answers for a
// redelivery: one comes back as soon as the broker has noticed the old
// connection is gone (at once when it was closed, within its heartbeat
// timeout when the network failed). A later message under the same id and
// retry count (a fixed task_id sent again) must not be taken for one.
const doubtGrace = 10 * time.Minute

// doubts remembers, per message (doubtKey), the runs of tasks whose ack
// is in doubt.
type doubts struct {
	mu    sync.Mutex
	byKey map[string]*runFinish
	order []*runFinish // oldest first, for the bound
}

// doubtKey names a message as its redelivery carries it: the task id and
// the retry count, since a retry is a new message under the same id (and
// must run even after its first attempt's record).
func doubtKey(m *protocol.Message) string {
	return m.ID + "\x00" + strconv.Itoa(m.Retries)
}

// add makes the record of owner's run, once (owner.doubt, set under d.mu:
// rememberDoubts and the runner may both call it, in either order, before
// or after the run). A record of another copy of the same message stays
// reachable from it (prev), so a later redelivery still finds the copy
// that ran.
func (d *doubts) add(key string, owner *job) *runFinish {
	d.mu.Lock()
	defer d.mu.Unlock()
	if owner.doubt != nil {
		return owner.doubt
	}
	if d.byKey == nil {
		d.byKey = map[string]*runFinish{}
	}
	f := &runFinish{done: make(chan struct{}), key: key, prev: d.byKey[key]}
	owner.doubt = f
	d.byKey[key] = f
	d.order = append(d.order, f)
	if len(d.order) > doubtKeep {
		d.forgetLocked(d.order[0])
		d.order[0] = nil
		d.order = d.order[1:]
	}
	return f
}

// forgetLocked drops r, the oldest record, from its id's chain.
func (d *doubts) forgetLocked(r *runFinish) {
	f := d.byKey[r.key]
	if f == r {
		delete(d.byKey, r.key)
		return
	}
	for ; f != nil; f = f.prev {
		if f.prev == r {
			f.prev = nil
			return
		}
	}
}

// firstRun is the record of the copy of j's message that ran, or is about
// to run, here with its ack in doubt before j; nil when there is none.
// Copies are ordered by their records (prev), so two copies in doubt never
// wait for each other.
func (d *doubts) firstRun(j *job) *runFinish {
	d.mu.Lock()
	defer d.mu.Unlock()
	f := d.byKey[doubtKey(j.msg)]
	if j.doubt != nil {
		f = j.doubt.prev
	}
	if f != nil && f.until != 0 && j.received > f.until {
		return nil // received too long after the reconnect to be its redelivery
	}
	return f
}

// connected starts the grace of the records made while the worker was
// disconnected (doubtGrace).
func (d *doubts) connected(now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	until := now.Add(doubtGrace).UnixNano()
	for i := len(d.order) - 1; i >= 0 && d.order[i].until == 0; i-- {
		d.order[i].until = until
	}
}

// ackInDoubt reports whether err says the ack may or may not have been
// taken by the broker.
func ackInDoubt(err error) bool { return errors.Is(err, broker.ErrAckInDoubt) }

// rememberDoubts runs once a connection is lost, before the worker
// consumes again: it waits for the acks started ahead on it (they end
// with the connection) and remembers those in doubt, so the redelivery of
// a job acknowledged ahead cannot reach a runner before the worker knows
// its first copy runs here. On a transport that can start acks (AMQP)
// every early ack is started this way, the runner's own included
// (pool.runner); a job acknowledged with AckNow instead would be
// remembered only once its runner sees the outcome, but the transports
// that lack StartAck (Redis) never report an ack in doubt.
func (w *Worker) rememberDoubts() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		// An ack started just before the loss may not be in ahead yet:
		// wait for those in progress. Later ones fail plainly, not in
		// doubt: the transport knows the connection lost by now
		// (broker.AckStarter).
		w.aheadMu.Lock()
		w.aheadMu.Unlock()
		w.ahead.Range(func(k, _ any) bool {
			j := k.(*job)
			if ackInDoubt(j.ackWait()) {
				w.doubts.add(doubtKey(w.messageOf(j)), j)
			}
			return true
		})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		// The transport promises every ack ends with its connection; if
		// one did not, reconnecting matters more.
		w.log.Warn().Msg("acks started on the lost connection have not ended after 10s; reconnecting anyway")
	}
}
