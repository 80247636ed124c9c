package amqp

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/celeryworker/gocelery/broker"
)

// acker settles deliveries on one consuming channel. RabbitMQ pays per ack
// frame, so acks of consecutive delivery tags go out as one basic.ack with
// multiple=true. A multiple ack must never cover a message the worker still
// holds (an ETA task), so only the unbroken run of acked tags from the
// lowest unsettled one is batched; acks stuck behind a held message go out
// one by one.
//
// Two kinds of ack: Ack (acks_late, after the result is stored) is batched
// lazily, sent when enough have gathered or shortly after the first one;
// AckNow (an early-ack task, before it starts) returns only once its frame
// is written to the connection, so a task is never started while its
// message could still be redelivered. AckNow calls that arrive while a
// frame is being written wait for the next write and share it (group
// commit), which keeps one frame per burst rather than one per task; up
// to maxBarriers writes wait for their barriers at once (see sent).
// Rejects go out at once.
type acker struct {
	ch ackChannel
	// confirm, when set, is a synchronous call on the same channel: its
	// answer proves the broker has processed every frame before it. AckNow
	// waits for it. An ack that could not be written fails plainly (the
	// broker redelivers the message); one written whose answer the
	// connection's end cut off fails with broker.ErrAckInDoubt, since the
	// broker may have read it just before.
	confirm func() error

	// wmu orders the writers: whoever holds it takes what is due from the
	// state below and writes it, so frames leave in the order the state
	// was settled (a single ack after a multiple one covering it would
	// close the channel).
	wmu sync.Mutex

	mu      sync.Mutex
	next    uint64           // every tag below next is settled on the wire
	acked   map[uint64]int64 // acked by the worker, not yet sent: tag -> unix nanos
	settled map[uint64]bool  // sent individually (ack or reject) while above next
	pending int              // len(acked) in the contiguous run, roughly
	cur     *ackWrite        // the write the next AckNow callers wait for
	batch   atomic.Int64     // flush at once when this many are waiting
	err     error            // the first write error: the channel is dead

	// Barriers are pipelined: a write's confirm.select goes out without
	// waiting for the one before it to be answered. RabbitMQ answers them
	// in order, so the n-th answer proves every ack written before the
	// n-th barrier; barriers are numbered in the order their acks were
	// written (under wmu), and one waits until answered >= its number,
	// whichever caller's call took which answer.
	sent     uint64     // barriers numbered so far
	answered uint64     // answers received
	answer   *sync.Cond // on mu: answered or err changed
	inflight int        // barriers sent and not yet answered
	peak     int        // the most inflight has been (tests)
	held     bool       // a write for waiters waits for a barrier to end

	kick      chan struct{}
	now       chan struct{} // a StartAck write waits for the loop to send it
	closeOnce sync.Once
	done      chan struct{}
	stopped   chan struct{}
}

// ackWrite is one write of pending acks; AckNow callers whose tag it
// carries wait for done and read err.
type ackWrite struct {
	waiters int  // AckNow callers waiting (under acker.mu)
	leader  bool // one of them writes it unless another writer does first
	done    chan struct{}
	err     error
	// A write that failed part way: err is in doubt for the tags whose
	// frames went out; unsent lists the others, which get plain.
	plain  error
	unsent []uint64
}

// errFor is the outcome for the waiter of tag, once done is closed.
func (w *ackWrite) errFor(tag uint64) error {
	if slices.Contains(w.unsent, tag) {
		return w.plain
	}
	return w.err
}

func newAckWrite() *ackWrite { return &ackWrite{done: make(chan struct{})} }

// maxBarriers bounds the barriers out at once. A second one lets the acks
// that gather during a round trip go out without waiting for it (at the
// default window of 8, 0.60x -> 0.67x of the raw consumer, and less CPU);
// unbounded, every runner sent its own and -c 64 lost 8% to the frames.
const maxBarriers = 2

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
	Close() error
}

var _ ackChannel = (*amqp091.Channel)(nil)

func newAcker(ch ackChannel, confirm func() error) *acker {
	a := &acker{ch: ch, confirm: confirm, next: 1, acked: map[uint64]int64{}, settled: map[uint64]bool{}, cur: newAckWrite(),
		kick: make(chan struct{}, 1), now: make(chan struct{}, 1), done: make(chan struct{}), stopped: make(chan struct{})}
	a.answer = sync.NewCond(&a.mu)
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

// Ack records an acknowledgement, sent with the next batch; multiple acks
// from the worker are sent at once.
func (a *acker) Ack(tag uint64, multiple bool) error {
	if multiple {
		return a.write(true, func() error {
			err := a.ch.Ack(tag, true)
			a.mu.Lock()
			a.settleBelowLocked(tag + 1)
			a.mu.Unlock()
			return err
		})
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

// AckNow acknowledges tag and returns once the frame carrying it is written
// to the connection and, with confirm, processed by the broker (nil); an
// error means it could not be (the channel is dead and the broker will
// redeliver the message).
func (a *acker) AckNow(tag uint64) error {
	return a.StartAck(tag)()
}

// join records the ack of tag in the next write and waits for it there;
// lead says the caller is the first (it, or the loop for it, writes).
func (a *acker) join(tag uint64) (w *ackWrite, lead bool, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return nil, false, a.err
	}
	a.acked[tag] = time.Now().UnixNano()
	a.pending++
	w = a.cur
	w.waiters++
	lead = !w.leader
	w.leader = true
	return w, lead, nil
}

// StartAck is AckNow without the wait: the returned wait reports what
// AckNow would have. A write nobody else leads is sent by the loop at once.
func (a *acker) StartAck(tag uint64) func() error {
	w, lead, err := a.join(tag)
	if err != nil {
		return func() error { return err }
	}
	if lead {
		select {
		case a.now <- struct{}{}:
		default:
		}
	}
	return func() error {
		select {
		case <-w.done:
		case <-a.stopped:
			// The loop is gone (closed): whoever waits writes.
			_ = a.write(false, nil)
			<-w.done
		}
		return w.errFor(tag)
	}
}

// Nack and Reject flush what can be batched, then go out at once.
func (a *acker) Nack(tag uint64, multiple, requeue bool) error {
	return a.write(true, func() error {
		a.mu.Lock()
		if multiple {
			a.settleBelowLocked(tag + 1)
		} else {
			a.settleLocked(tag)
		}
		a.mu.Unlock()
		return a.ch.Nack(tag, multiple, requeue)
	})
}

func (a *acker) Reject(tag uint64, requeue bool) error {
	return a.write(true, func() error {
		a.mu.Lock()
		a.settleLocked(tag)
		a.mu.Unlock()
		return a.ch.Reject(tag, requeue)
	})
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
			_ = a.write(true, nil)
			return
		case <-a.now:
			a.mu.Lock()
			full := a.inflight >= maxBarriers && a.cur.waiters > 0
			a.held = a.held || full
			a.mu.Unlock()
			if !full {
				_ = a.write(false, nil)
			}
		case <-a.kick:
			a.mu.Lock()
			full := a.pending >= int(a.batch.Load())
			a.mu.Unlock()
			if full {
				_ = a.write(false, nil)
			}
			timer.Reset(ackDelay)
		case <-timer.C:
			_ = a.write(false, nil)
			a.mu.Lock()
			more := len(a.acked) > 0
			a.mu.Unlock()
			if more {
				timer.Reset(ackStragler / 4)
			}
		}
	}
}

// write sends what is due (everything with all), then runs then (a frame
// of its own, may be nil) in the same turn.
// The barrier of a write with waiters is sent and awaited off the caller
// (the loop must not wait for it), so the next write can go out meanwhile.
func (a *acker) write(all bool, then func() error) error {
	a.wmu.Lock()
	b, err := a.writeLocked(all, then)
	a.wmu.Unlock()
	if b.w != nil {
		go b.wait(a)
	}
	return err
}

// barrier is a write's confirm.select still to be sent and awaited (w is
// nil when the write needs none); its waiters are released by wait.
type barrier struct {
	w   *ackWrite
	seq uint64
}

// writeLocked is write under wmu: it sends the frames and returns the
// write's barrier, for the caller to wait on once wmu is released. The
// acks it takes are those AckNow callers wait for, so it sends all of them
// when anyone waits.
func (a *acker) writeLocked(all bool, then func() error) (barrier, error) {
	a.mu.Lock()
	w := a.cur
	a.cur = newAckWrite()
	if a.err != nil {
		// A dead channel: whoever waits learns it now.
		w.err = a.err
		a.mu.Unlock()
		close(w.done)
		return barrier{}, w.err
	}
	if w.waiters > 0 {
		all = true
	}
	frames := a.takeLocked(time.Now().UnixNano(), all)
	a.mu.Unlock()

	var err error
	wrote := 0
	for _, f := range frames {
		if err = a.ch.Ack(f.tag, f.multiple); err != nil {
			break
		}
		wrote++
	}
	if err == nil && then != nil {
		err = then()
	}
	if err != nil {
		a.fail(err)
		w.err = err
		if wrote > 0 {
			// The frames written before the failure may have been read;
			// those from the failed one on were not (a multiple ack is
			// always the first frame, so they are single acks).
			w.err = fmt.Errorf("%w: %w", broker.ErrAckInDoubt, err)
			w.plain = err
			for _, f := range frames[wrote:] {
				w.unsent = append(w.unsent, f.tag)
			}
		}
		close(w.done)
		return barrier{}, err
	}
	if w.waiters > 0 && a.confirm != nil {
		a.mu.Lock()
		a.sent++
		a.inflight++
		a.peak = max(a.peak, a.inflight)
		seq := a.sent
		a.mu.Unlock()
		return barrier{w: w, seq: seq}, nil
	}
	close(w.done)
	return barrier{}, nil
}

// wait sends the barrier, waits until the answers prove it (see sent),
// and releases its write's waiters.
func (b barrier) wait(a *acker) {
	if b.w == nil {
		return
	}
	err := a.confirm()
	if err != nil {
		a.fail(err)
	}
	a.mu.Lock()
	a.inflight--
	if a.held {
		// Acks gathered while the barriers were out: their write now.
		a.held = false
		select {
		case a.now <- struct{}{}:
		default:
		}
	}
	if err == nil {
		a.answered++
		a.answer.Broadcast()
	}
	for a.answered < b.seq && a.err == nil {
		a.answer.Wait()
	}
	// Proven by the count, whichever call failed; else the channel died
	// (the loop ends only then) before enough answers came, and whether
	// the broker read the acks first cannot be known.
	if a.answered >= b.seq {
		err = nil
	} else {
		err = fmt.Errorf("%w: %w", broker.ErrAckInDoubt, a.err)
	}
	a.mu.Unlock()
	b.w.err = err
	close(b.w.done)
}

// fail records the first error of the channel. The acker is dead from
// there on: it closes the channel too, so the broker requeues what it
// delivered and the worker sees the loss and reconnects, instead of
// holding messages that can never be settled.
func (a *acker) fail(err error) {
	a.mu.Lock()
	first := a.err == nil
	if first {
		a.err = err
		a.answer.Broadcast()
	}
	a.mu.Unlock()
	if first {
		_ = a.ch.Close()
	}
}

type ackFrame struct {
	tag      uint64
	multiple bool
}

// takeLocked settles and returns the frames to send now: one multiple ack
// for the contiguous run of acked tags from next, then single acks for
// those that waited past ackStragler (all of them when all is set).
func (a *acker) takeLocked(now int64, all bool) []ackFrame {
	var frames []ackFrame
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
		frames = append(frames, ackFrame{tag: top, multiple: true})
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
		frames = append(frames, ackFrame{tag: tag})
		delete(a.acked, tag)
		a.settled[tag] = true
	}
	a.pending = 0
	return frames
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
