package amqp

import (
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/broker"
)

// fakeChannel records the frames the acker sends.
type fakeChannel struct {
	mu     sync.Mutex
	frames []string
}

func (f *fakeChannel) add(s string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frames = append(f.frames, s)
	return nil
}
func (f *fakeChannel) Ack(tag uint64, multiple bool) error {
	return f.add(fmt.Sprintf("ack %d multiple=%v", tag, multiple))
}
func (f *fakeChannel) Nack(tag uint64, multiple, requeue bool) error {
	return f.add(fmt.Sprintf("nack %d requeue=%v", tag, requeue))
}
func (f *fakeChannel) Reject(tag uint64, requeue bool) error {
	return f.add(fmt.Sprintf("reject %d requeue=%v", tag, requeue))
}
func (f *fakeChannel) Close() error { return f.add("close") }
func (f *fakeChannel) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.frames...)
}

func waitFrames(t *testing.T, f *fakeChannel, want []string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !reflect.DeepEqual(f.got(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("frames = %q, want %q", f.got(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestAckerBatchesContiguousAcks(t *testing.T) {
	f := &fakeChannel{}
	a := newAcker(f, nil)
	defer a.close()
	for _, tag := range []uint64{3, 1, 2, 5, 4} {
		a.Ack(tag, false)
	}
	waitFrames(t, f, []string{"ack 5 multiple=true"})
}

func TestAckerNeverCoversAHeldMessage(t *testing.T) {
	f := &fakeChannel{}
	a := newAcker(f, nil)
	defer a.close()
	// Tag 2 is held (an ETA task): 1 can go as a multiple ack, 3 and 4
	// must go one by one, and never as a multiple ack covering 2.
	a.Ack(1, false)
	a.Ack(3, false)
	a.Ack(4, false)
	waitFrames(t, f, []string{"ack 1 multiple=true", "ack 3 multiple=false", "ack 4 multiple=false"})
	// When 2 is finally acked, the run 2..4 is settled with one ack of 2.
	a.Ack(2, false)
	a.Ack(5, false)
	waitFrames(t, f, []string{"ack 1 multiple=true", "ack 3 multiple=false", "ack 4 multiple=false", "ack 5 multiple=true"})
	a.mu.Lock()
	next := a.next
	a.mu.Unlock()
	if next != 6 {
		t.Fatalf("next = %d, want 6", next)
	}
}

func TestAckerRejectFlushesFirst(t *testing.T) {
	f := &fakeChannel{}
	a := newAcker(f, nil)
	defer a.close()
	a.Ack(1, false)
	a.Ack(2, false)
	a.Reject(3, false)
	a.Ack(4, false)
	waitFrames(t, f, []string{"ack 2 multiple=true", "reject 3 requeue=false", "ack 4 multiple=true"})
}

func TestAckerCloseSendsWaitingAcks(t *testing.T) {
	f := &fakeChannel{}
	a := newAcker(f, nil)
	a.Ack(2, false) // 1 is still held
	a.close()
	if got := f.got(); !reflect.DeepEqual(got, []string{"ack 2 multiple=false"}) {
		t.Fatalf("frames = %q", got)
	}
}

// The batch is a quarter of the prefetch window, at most ackBatch: a small
// window must not wait for ackDelay before the broker may refill it.
func TestAckerBatchScalesWithWindow(t *testing.T) {
	a := newAcker(&fakeChannel{}, nil)
	defer a.close()
	for _, tc := range []struct{ window, want int }{
		{0, ackBatch}, {1, 1}, {3, 1}, {8, 2}, {64, 16}, {256, 64}, {1024, ackBatch},
	} {
		a.setWindow(tc.window)
		if got := int(a.batch.Load()); got != tc.want {
			t.Errorf("window %d: batch %d, want %d", tc.window, got, tc.want)
		}
	}
}

// gatedChannel blocks each Ack until released, so writes can pile up, and
// can fail them.
type gatedChannel struct {
	fakeChannel
	entered chan struct{}
	release chan struct{}
	fail    error
}

func (g *gatedChannel) Ack(tag uint64, multiple bool) error {
	g.entered <- struct{}{}
	<-g.release
	if g.fail != nil {
		return g.fail
	}
	return g.fakeChannel.Ack(tag, multiple)
}

func TestAckerAckNowIsWrittenBeforeItReturns(t *testing.T) {
	f := &fakeChannel{}
	a := newAcker(f, nil)
	defer a.close()
	a.Ack(1, false) // lazy, acks_late
	if err := a.AckNow(2); err != nil {
		t.Fatal(err)
	}
	// No waiting: the frame is already out, and it carries the lazy ack too.
	if got, want := f.got(), []string{"ack 2 multiple=true"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("frames = %q, want %q", got, want)
	}
}

func TestAckerAckNowCoalescesConcurrentAcks(t *testing.T) {
	g := &gatedChannel{entered: make(chan struct{}), release: make(chan struct{})}
	a := newAcker(g, nil)
	defer a.close()
	errs := make(chan error, 4)
	go func() { errs <- a.AckNow(1) }()
	<-g.entered // the first write is on the wire, blocked
	for tag := uint64(2); tag <= 4; tag++ {
		go func() { errs <- a.AckNow(tag) }()
	}
	// All three wait for the next write.
	waitWaiters(t, a, 3)
	go func() {
		for range g.entered {
			g.release <- struct{}{}
		}
	}()
	g.release <- struct{}{}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"ack 1 multiple=true", "ack 4 multiple=true"}
	if got := g.got(); !reflect.DeepEqual(got, want) {
		t.Fatalf("frames = %q, want %q", got, want)
	}
}

func TestAckerAckNowReportsAFailedWrite(t *testing.T) {
	g := &gatedChannel{entered: make(chan struct{}, 10), release: make(chan struct{}, 10), fail: errors.New("connection reset")}
	g.release <- struct{}{}
	a := newAcker(g, nil)
	defer a.close()
	// Not written: the broker cannot have read it, so it is not in doubt
	// (the worker drops the task and the broker redelivers it).
	if err := a.AckNow(1); err == nil || errors.Is(err, broker.ErrAckInDoubt) {
		t.Fatalf("AckNow on a failed write = %v, want a plain error", err)
	}
	// Every later ack fails at once: the channel is dead.
	if err := a.AckNow(2); err == nil {
		t.Fatal("AckNow succeeded after the channel died")
	}
}

// failingChannel fails every Ack after the first n.
type failingChannel struct {
	fakeChannel
	n   atomic.Int32
	err error
}

func (f *failingChannel) Ack(tag uint64, multiple bool) error {
	if f.n.Add(-1) < 0 {
		return f.err
	}
	return f.fakeChannel.Ack(tag, multiple)
}

// A write whose first frame went out and a later one failed: the first
// may have been read, so its waiter is in doubt; the failed frame's was
// not written, so its waiter's ack plainly failed.
func TestAckerPartWrittenIsInDoubt(t *testing.T) {
	f := &failingChannel{err: errors.New("connection reset")}
	f.n.Store(1)
	a := newAcker(f, func() error { return nil })
	defer a.close()
	a.wmu.Lock() // hold the write until both waiters joined it
	w1, w3 := a.StartAck(1), a.StartAck(3)
	waitWaiters(t, a, 2)
	a.wmu.Unlock()
	if err := w1(); !errors.Is(err, broker.ErrAckInDoubt) {
		t.Fatalf("tag 1 (written) = %v, want broker.ErrAckInDoubt", err)
	}
	if err := w3(); err == nil || errors.Is(err, broker.ErrAckInDoubt) {
		t.Fatalf("tag 3 (not written) = %v, want a plain error", err)
	}
	if got, want := f.got(), []string{"ack 1 multiple=true", "close"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("frames = %q, want %q", got, want)
	}
	// The channel is dead: nothing later was written, so not in doubt.
	if err := a.AckNow(4); err == nil || errors.Is(err, broker.ErrAckInDoubt) {
		t.Fatalf("AckNow after the failure = %v, want a plain error", err)
	}
}

// A caller whose ack another writer has sent returns as soon as that write
// is done: it does not queue for the writer lock, which the next write
// holds for its whole barrier round trip.
func TestAckerAckNowDoesNotWaitForTheNextWrite(t *testing.T) {
	f := &fakeChannel{}
	a := newAcker(f, func() error { return nil })
	defer a.close()
	a.wmu.Lock() // another writer, busy
	errs := make(chan error, 2)
	go func() { errs <- a.AckNow(1) }()
	go func() { errs <- a.AckNow(2) }()
	waitWaiters(t, a, 2)
	// The busy writer sends both acks and keeps the lock (as the next
	// write would); its barrier is answered meanwhile.
	b, err := a.writeLocked(false, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.wait(a)
	select {
	case err := <-errs:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		a.wmu.Unlock()
		t.Fatal("AckNow still waits although its ack was written and confirmed")
	}
	a.wmu.Unlock()
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	if got, want := f.got(), []string{"ack 2 multiple=true"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("frames = %q, want %q", got, want)
	}
}

// waitWaiters polls until n AckNow callers wait for the next write.
func waitWaiters(t *testing.T, a *acker, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		a.mu.Lock()
		got := a.cur.waiters
		a.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiters = %d, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestAckerStartAck: acks started without waiting are sent by the loop at
// once and confirmed; one started while an earlier barrier is out is
// written and its own barrier sent without waiting for that one (barriers
// are pipelined), yet it is not released before the earlier barrier is
// answered, since the answers prove the barriers only in order; a wait
// after the acker closed still returns.
func TestAckerStartAck(t *testing.T) {
	f := &fakeChannel{}
	var confirms atomic.Int32
	gate := make(chan struct{})
	a := newAcker(f, func() error {
		if confirms.Add(1) == 1 {
			<-gate // the first barrier is slow
		}
		return nil
	})
	w1 := a.StartAck(1)
	checkFor(t, func() bool { return confirms.Load() == 1 }, "the loop did not send a started ack")
	w2 := a.StartAck(2)
	// The second barrier goes out while the first is still unanswered...
	checkFor(t, func() bool { return confirms.Load() == 2 }, "the second barrier waited for the first")
	// ...and its answer (the fake answers at once) does not release it:
	// only one answer has come, which proves the first barrier only.
	released := make(chan error, 1)
	go func() { released <- w2() }()
	select {
	case err := <-released:
		t.Fatalf("second ack released (%v) before the first barrier was answered", err)
	case <-time.After(20 * time.Millisecond):
	}
	close(gate)
	for i, w := range []func() error{w1, func() error { return <-released }} {
		if err := w(); err != nil {
			t.Fatalf("wait %d: %v", i+1, err)
		}
	}
	if got, want := f.got(), []string{"ack 1 multiple=true", "ack 2 multiple=true"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("frames = %q, want %q", got, want)
	}
	a.close()
	if err := a.StartAck(4)(); err != nil {
		t.Fatalf("wait after close: %v", err)
	}
}

// TestAckerBarriersCountAnswers: a barrier is proven by the number of
// answers received, not by its own call. Here the second call is answered
// at once and the first then fails (the channel died): one answer came,
// which proves the first barrier (RabbitMQ answers in order), so its ack
// stands and its task may start; the second is not proven and fails.
func TestAckerBarriersCountAnswers(t *testing.T) {
	f := &fakeChannel{}
	var confirms atomic.Int32
	gate := make(chan struct{})
	dead := errors.New("channel closed")
	a := newAcker(f, func() error {
		if confirms.Add(1) == 1 {
			<-gate
			return dead
		}
		return nil
	})
	defer a.close()
	w1 := a.StartAck(1)
	checkFor(t, func() bool { return confirms.Load() == 1 }, "the loop did not send a started ack")
	w2 := a.StartAck(2)
	checkFor(t, func() bool { return confirms.Load() == 2 }, "the second barrier waited for the first")
	close(gate)
	if err := w1(); err != nil {
		t.Fatalf("first: %v, want nil (proven by the one answer)", err)
	}
	// Written, its answer cut off: the broker may have read it.
	if err := w2(); !errors.Is(err, dead) || !errors.Is(err, broker.ErrAckInDoubt) {
		t.Fatalf("second: %v, want %v wrapped in broker.ErrAckInDoubt", err, dead)
	}
}

// checkFor polls cond until it holds, failing with msg after 5 s.
func checkFor(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(time.Millisecond)
	}
}
