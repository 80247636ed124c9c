package amqp

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// acker batches acknowledgements on one consuming channel. RabbitMQ pays
// per ack frame, so acks of consecutive delivery tags go out as one
// basic.ack with multiple=true, sent when enough have gathered or shortly
// after the first one. A multiple ack must never cover a message the
// worker still holds (an ETA task), so only the unbroken run of acked tags
// from the lowest unsettled one is batched; acks stuck behind a held
// message go out one by one after a short wait. Rejects go out at once.
type acker struct {
	ch ackChannel

	mu        sync.Mutex
	next      uint64           // every tag below next is settled on the wire
	acked     map[uint64]int64 // acked by the worker, not yet sent: tag -> unix nanos
	settled   map[uint64]bool  // sent individually (ack or reject) while above next
	pending   int              // len(acked) in the contiguous run, roughly
	batch     atomic.Int64     // flush at once when this many are waiting
	kick      chan struct{}
	closeOnce sync.Once
	done      chan struct{}
	stopped   chan struct{}
	err       error
}

const (
	ackBatch    = 64                      // the most acks one flush waits for
	ackDelay    = 1000 * time.Microsecond // otherwise flush this soon after the first
	ackStragler = 20 * time.Millisecond   // acks behind a held message wait at most this
)

// ackChannel is the part of an AMQP channel the acker drives.
type ackChannel interface {
	Ack(tag uint64, multiple bool) error
	Nack(tag uint64, multiple, requeue bool) error
	Reject(tag uint64, requeue bool) error
}

var _ ackChannel = (*amqp091.Channel)(nil)

func newAcker(ch ackChannel) *acker {
	a := &acker{ch: ch, next: 1, acked: map[uint64]int64{}, settled: map[uint64]bool{},
		kick: make(chan struct{}, 1), done: make(chan struct{}), stopped: make(chan struct{})}
	a.batch.Store(ackBatch)
	go a.loop()
	return a
}

// setWindow scales the batch to the prefetch window: the broker sends
// nothing more while the window is full of unacknowledged messages, so a
// batch must be a small part of it or a small window would refill only
// once per ackDelay. 0 means unlimited.
func (a *acker) setWindow(prefetch int) {
	n := int64(ackBatch)
	if prefetch > 0 {
		n = min(n, max(1, int64(prefetch)/4))
	}
	a.batch.Store(n)
}

// Ack records an acknowledgement; multiple acks from the worker are sent
// as they are.
func (a *acker) Ack(tag uint64, multiple bool) error {
	if multiple {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.flushLocked(time.Now().UnixNano(), true)
		err := a.ch.Ack(tag, true)
		a.settleBelowLocked(tag + 1)
		return err
	}
	a.mu.Lock()
	if err := a.err; err != nil {
		a.mu.Unlock()
		return err
	}
	a.acked[tag] = time.Now().UnixNano()
	a.pending++
	n := a.pending
	a.mu.Unlock()
	if n >= int(a.batch.Load()) || n == 1 {
		a.signal()
	}
	return nil
}

// Nack and Reject flush what can be batched, then go out at once.
func (a *acker) Nack(tag uint64, multiple, requeue bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.flushLocked(time.Now().UnixNano(), true)
	err := a.ch.Nack(tag, multiple, requeue)
	if multiple {
		a.settleBelowLocked(tag + 1)
	} else {
		a.settleLocked(tag)
	}
	return err
}

func (a *acker) Reject(tag uint64, requeue bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.flushLocked(time.Now().UnixNano(), true)
	err := a.ch.Reject(tag, requeue)
	a.settleLocked(tag)
	return err
}

func (a *acker) signal() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

func (a *acker) loop() {
	defer close(a.stopped)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-a.done:
			a.mu.Lock()
			a.flushLocked(time.Now().UnixNano(), true)
			a.mu.Unlock()
			return
		case <-a.kick:
			a.mu.Lock()
			full := a.pending >= int(a.batch.Load())
			a.mu.Unlock()
			if full {
				a.flush(false)
			}
			timer.Reset(ackDelay)
		case <-timer.C:
			if more := a.flush(false); more {
				timer.Reset(ackStragler / 4)
			}
		}
	}
}

// flush sends what is due and reports whether acks are still waiting.
func (a *acker) flush(all bool) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.flushLocked(time.Now().UnixNano(), all)
	return len(a.acked) > 0
}

// flushLocked sends one multiple ack for the contiguous run of acked tags
// from next, then single acks for those that waited past ackStragler (all
// of them when all is set).
func (a *acker) flushLocked(now int64, all bool) {
	if a.err != nil {
		return
	}
	var top uint64
	t := a.next
	for {
		if _, ok := a.acked[t]; ok {
			top = t
		} else if !a.settled[t] {
			break
		}
		t++
	}
	if top != 0 {
		if err := a.ch.Ack(top, true); err != nil {
			a.err = err
			return
		}
	}
	for u := a.next; u < t; u++ {
		delete(a.acked, u)
		delete(a.settled, u)
	}
	a.next = t
	var due []uint64
	for tag, at := range a.acked {
		if all || now-at >= int64(ackStragler) {
			due = append(due, tag)
		}
	}
	slices.Sort(due) // in delivery order, as a reader of the frames expects
	for _, tag := range due {
		if err := a.ch.Ack(tag, false); err != nil {
			a.err = err
			return
		}
		delete(a.acked, tag)
		a.settled[tag] = true
	}
	a.pending = 0
}

func (a *acker) settleLocked(tag uint64) {
	delete(a.acked, tag)
	if tag == a.next {
		a.next++
		for a.settled[a.next] {
			delete(a.settled, a.next)
			a.next++
		}
	} else if tag > a.next {
		a.settled[tag] = true
	}
}

func (a *acker) settleBelowLocked(limit uint64) {
	for t := a.next; t < limit; t++ {
		delete(a.acked, t)
		delete(a.settled, t)
	}
	if limit > a.next {
		a.next = limit
	}
	for a.settled[a.next] {
		delete(a.settled, a.next)
		a.next++
	}
}

// close sends every waiting ack and stops the loop; it may be called from
// several goroutines (Close and the lost-channel watcher).
func (a *acker) close() {
	a.closeOnce.Do(func() { close(a.done) })
	<-a.stopped
}
