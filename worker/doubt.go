package worker

import (
	"errors"
	"sync"
	"time"

	"github.com/celeryworker/gocelery/broker"
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

// doubts remembers, per task id, the runs of tasks whose ack is in doubt.
type doubts struct {
	mu    sync.Mutex
	byID  map[string]*runFinish
	order []*runFinish // oldest first, for the bound
}

// add returns the record of owner's run of id, made on first call. A
// record of another copy of the same message stays reachable from it
// (prev), so a later redelivery still finds the copy that ran.
func (d *doubts) add(id string, owner *job) *runFinish {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.byID == nil {
		d.byID = map[string]*runFinish{}
	}
	cur := d.byID[id]
	if cur != nil && cur.owner.Load() == owner {
		return cur
	}
	f := &runFinish{done: make(chan struct{}), id: id, prev: cur}
	f.owner.Store(owner)
	d.byID[id] = f
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
	f := d.byID[r.id]
	if f == r {
		delete(d.byID, r.id)
		return
	}
	for ; f != nil; f = f.prev {
		if f.prev == r {
			f.prev = nil
			return
		}
	}
}

// firstRun is the record of a copy of id other than j that ran, or is
// about to run, here with its ack in doubt; nil when there is none.
func (d *doubts) firstRun(id string, j *job) *runFinish {
	d.mu.Lock()
	defer d.mu.Unlock()
	f := d.byID[id]
	for f != nil && f.owner.Load() == j {
		f = f.prev
	}
	return f
}

// ackInDoubt reports whether err says the ack may or may not have been
// taken by the broker.
func ackInDoubt(err error) bool { return errors.Is(err, broker.ErrAckInDoubt) }

// rememberDoubts runs once a connection is lost, before the worker
// consumes again: it waits for the acks started ahead on it (they end
// with the connection) and remembers those in doubt, so a redelivery can
// never reach a runner before the worker knows its first copy runs here.
func (w *Worker) rememberDoubts() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.ahead.Range(func(k, _ any) bool {
			j := k.(*job)
			if ackInDoubt(j.ackWait()) {
				w.knownMu.Lock()
				id := j.id()
				w.knownMu.Unlock()
				w.doubts.add(id, j)
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
