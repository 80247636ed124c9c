package worker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/broker/brokertest"
	"github.com/celeryworker/gocelery/tasks"
	"github.com/celeryworker/gocelery/worker"
)

// TestEarlyAckNotStartedWhenAckFails: an early-ack task whose ack cannot
// be written (the connection died unnoticed) is not started: the broker
// redelivers it, and it runs once, from the redelivery.
func TestEarlyAckNotStartedWhenAckFails(t *testing.T) {
	t.Parallel()
	runs, reg := countRegistry()
	f := startWorker(t, reg, worker.Config{Concurrency: 1})
	f.b.FailAcks(errors.New("write: broken pipe"))
	f.publish("A", "t.count")
	brokertest.WaitFor(t, patience, func() bool { return f.b.AckFailures() == 1 }, "A's ack to fail")
	// A wrongly started would count as running until it has run.
	brokertest.WaitFor(t, patience, func() bool { return f.w.Snapshot().Running == 0 }, "A to leave the runner")
	if n := runs.count("A"); n != 0 {
		t.Fatalf("A ran %d times although its ack failed", n)
	}
	f.b.FailAcks(nil)
	f.b.Drop(nil) // the dead connection is noticed: the broker redelivers A
	f.result("A", backends.StatusSuccess)
	f.waitAcked("A")
	if n := runs.count("A"); n != 1 {
		t.Fatalf("A ran %d times, want once", n)
	}
}

// TestTaskAcksLateFlag: the worker-wide task_acks_late acks after the
// result; a task's own AcksEarly wins over it.
func TestTaskAcksLateFlag(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		opts     []tasks.Option
		flag     bool
		lateWant bool
	}{
		{"flag off", nil, false, false},
		{"flag on", nil, true, true},
		{"flag on, task acks early", []tasks.Option{tasks.AcksEarly()}, true, false},
		{"flag off, task acks late", []tasks.Option{tasks.AcksLate()}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := newGate()
			reg := tasks.NewRegistry()
			reg.MustRegister("t.block", g.handler, tc.opts...)
			f := startWorker(t, reg, worker.Config{Concurrency: 1, TaskAcksLate: tc.flag})
			f.publish("A", "t.block")
			g.waitRunning(t, "A")
			if late := f.b.Unacked() == 1; late != tc.lateWant {
				t.Fatalf("unacked while running = %d, want acks late %v", f.b.Unacked(), tc.lateWant)
			}
			g.Release()
			f.result("A", backends.StatusSuccess)
			f.waitAcked("A")
		})
	}
}

// TestShutdownTimeoutAcksLate: an acks_late task cut off by the shutdown
// timeout fails with WorkerLostError and is acked, as Celery does for a
// lost pool process, or goes back to the queue with
// task_reject_on_worker_lost.
func TestShutdownTimeoutAcksLate(t *testing.T) {
	t.Parallel()
	for _, reject := range []bool{false, true} {
		t.Run(fmt.Sprint("reject_on_worker_lost=", reject), func(t *testing.T) {
			t.Parallel()
			g := newStubbornGate(t)
			f := startWorker(t, okRegistry(g), worker.Config{TaskRejectOnWorkerLost: reject})
			f.publish("A", "t.block.late")
			g.waitRunning(t, "A")
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			if err := f.w.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Shutdown = %v, want the deadline", err)
			}
			if reject {
				if f.b.Len(testQueue) != 1 || len(f.be.History("A")) != 0 {
					t.Fatalf("queue %d, stored %v; want requeued without a result", f.b.Len(testQueue), f.be.History("A"))
				}
				return
			}
			doc := f.result("A", backends.StatusFailure)
			if typ, _ := exc(doc); typ != "WorkerLostError" {
				t.Fatalf("stored %s", typ)
			}
			f.waitAcked("A")
		})
	}
}

// holdsFor fails t unless cond holds at every poll for d: the proof of
// something that must not happen.
func holdsFor(t *testing.T, d time.Duration, cond func() bool, what string) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if !cond() {
			t.Fatalf("broken: %s", what)
		}
	}
}

// TestBackendOutagePausesAndKeepsResults: while the result backend is
// down the worker starts no new task (the prefetched ones wait, reserved),
// holds the results it has and reports the backend down; when it is back
// every held result lands and every task ran exactly once. The same with
// acks started ahead (as on AMQP), which stop with the runners.
func TestBackendOutagePausesAndKeepsResults(t *testing.T) {
	t.Parallel()
	for _, ahead := range []bool{false, true} {
		t.Run(fmt.Sprint("ack ahead=", ahead), func(t *testing.T) {
			t.Parallel()
			backendOutage(t, ahead)
		})
	}
}

func backendOutage(t *testing.T, ahead bool) {
	runs, reg := countRegistry()
	f := newFixture(t, reg, worker.Config{Concurrency: 2, PrefetchMultiplier: 8})
	f.b.StartAcks(ahead)
	f.start()
	f.be.FailAll(errBackendDown)
	const n = 30
	for i := range n {
		f.publish(fmt.Sprint("t", i), "t.count")
	}
	brokertest.WaitFor(t, patience, func() bool { return !f.w.Snapshot().BackendUp }, "the backend to be reported down")
	// The runners finish what they had and stop: only a few tasks (one per
	// runner, and those taken before the first write failed) have run.
	brokertest.WaitFor(t, patience, func() bool { return f.w.Snapshot().Running == 0 }, "the runners to stop")
	// A runner that passed its check just before the backend was marked
	// down may still start one task.
	ran := runs.total()
	holdsFor(t, 300*time.Millisecond, func() bool { return runs.total() <= ran+2 }, "tasks started while the backend is down")
	if ran = runs.total(); ran > 8 {
		t.Fatalf("%d tasks ran after the backend went down, want at most a few", ran)
	}
	// Nothing is acknowledged that is not running or about to (one ahead
	// per runner at most).
	if acked := len(f.b.Acked()); acked > ran+2 {
		t.Fatalf("%d acked while %d ran and the backend is down", acked, ran)
	}
	f.be.FailAll(nil)
	for i := range n {
		id := fmt.Sprint("t", i)
		f.result(id, backends.StatusSuccess)
		if c := runs.count(id); c != 1 {
			t.Fatalf("%s ran %d times", id, c)
		}
	}
	brokertest.WaitFor(t, patience, func() bool { return f.w.Snapshot().BackendUp }, "the backend to be reported up")
}

// TestAcksLateAckedOnlyAfterStore: an acks_late task whose result cannot
// be stored is not acked; it is acked once the result lands, and sent
// back to the queue if the worker must stop first.
func TestAcksLateAckedOnlyAfterStore(t *testing.T) {
	t.Parallel()
	for _, backAgain := range []bool{true, false} {
		t.Run(fmt.Sprint("backend back=", backAgain), func(t *testing.T) {
			t.Parallel()
			runs := newRunLog()
			reg := tasks.NewRegistry()
			reg.MustRegister("t.late", func(ctx context.Context) (string, error) { runs.add(ctx); return "done", nil }, tasks.AcksLate())
			f := startWorker(t, reg, worker.Config{Concurrency: 1})
			f.be.FailAll(errBackendDown)
			f.publish("A", "t.late")
			brokertest.WaitFor(t, patience, func() bool { return runs.count("A") == 1 && f.be.Failed() > 0 }, "A to run and its write to fail")
			holdsFor(t, 300*time.Millisecond, func() bool { return f.b.Unacked() == 1 && len(f.b.Acked()) == 0 }, "A acked without its result")
			if backAgain {
				f.be.FailAll(nil)
				f.result("A", backends.StatusSuccess)
				f.waitAcked("A")
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			_ = f.w.Shutdown(ctx)
			if len(f.b.Acked()) != 0 || f.b.Len(testQueue) != 1 {
				t.Fatalf("acked %v, queue %d: want A back in the queue", f.b.Acked(), f.b.Len(testQueue))
			}
		})
	}
}

// TestAcksLateRedeliveryWaitsForTheFirstRun: an acks_late task whose
// connection is lost while it runs is redelivered to the same worker; the
// redelivery does not start a second run beside the first: it waits, and
// is acked once the first run's result is stored.
func TestAcksLateRedeliveryWaitsForTheFirstRun(t *testing.T) {
	t.Parallel()
	g := newGate()
	reg := tasks.NewRegistry()
	reg.MustRegister("t.block.late", g.handler, tasks.AcksLate())
	f := startWorker(t, reg, worker.Config{Concurrency: 2})
	f.publish("A", "t.block.late")
	g.waitRunning(t, "A")
	f.b.Drop(nil) // A goes back to the queue and comes back, redelivered
	brokertest.WaitFor(t, patience, func() bool { return f.b.Dials() >= 2 && f.b.Unacked() == 1 }, "A to be redelivered")
	holdsFor(t, 200*time.Millisecond, func() bool { return g.Started("A") == 1 }, "A started twice in one worker")
	g.Release()
	f.result("A", backends.StatusSuccess)
	f.waitAcked("A")
	if n := g.Started("A"); n != 1 {
		t.Fatalf("A ran %d times", n)
	}
}

// TestResultBufferIsBounded: results on their way to a backend that does
// not answer fill a bounded buffer; then the runners stop taking tasks.
func TestResultBufferIsBounded(t *testing.T) {
	t.Parallel()
	runs, reg := countRegistry()
	f := startWorker(t, reg, worker.Config{Concurrency: 1, PrefetchMultiplier: -1})
	f.be.SetDelay(time.Hour) // every write hangs
	const n, bound = 300, 256
	for i := range n {
		f.publish(fmt.Sprint("t", i), "t.count")
	}
	brokertest.WaitFor(t, patience, func() bool { return f.w.Snapshot().ResultsPending == bound }, "the buffer to fill")
	// One more outcome waits in the runner for a slot; nothing else runs.
	holdsFor(t, 200*time.Millisecond, func() bool { return runs.total() <= bound+1 }, "tasks run beyond the buffer")
}

// TestEarlyAckInDoubt: the connection ends after an early-ack task's ack
// was written and before the broker confirmed it (broker.ErrAckInDoubt).
// If the broker took the ack, the message is gone: the task must run here
// or it is lost. If it did not, the broker redelivers the message: the
// redelivery, back at this worker, is acknowledged without running again.
// Either way the task runs once and its result is stored.
func TestEarlyAckInDoubt(t *testing.T) {
	t.Parallel()
	for _, taken := range []bool{true, false} {
		t.Run(fmt.Sprint("broker took the ack=", taken), func(t *testing.T) {
			t.Parallel()
			runs, reg := countRegistry()
			f := startInDoubt(t, reg, 1, taken)
			f.publish("A", "t.count")
			f.result("A", backends.StatusSuccess)
			// The broker's view: acknowledged once, by the first copy or
			// (not taken) by its redelivery, which so reached the worker;
			// nothing left anywhere.
			f.waitAcked("A")
			brokertest.WaitFor(t, patience, func() bool {
				return f.b.Len(testQueue) == 0 && f.b.Unacked() == 0 && f.w.Snapshot().Running == 0
			}, "A to be settled")
			holdsFor(t, 200*time.Millisecond, func() bool { return runs.count("A") <= 1 }, "A ran twice")
			if n := runs.count("A"); n != 1 {
				t.Fatalf("A ran %d times, want once", n)
			}
			if n := len(f.be.History("A")); n != 1 {
				t.Fatalf("A's result stored %d times, want once", n)
			}
		})
	}
}

// TestEarlyAckInDoubtThenRetry: a task that ran with its ack in doubt
// retries; the retry is a new message under the same id. When the retry,
// held for its countdown, is redelivered after a lost connection, it is
// not taken for a redelivery of the first attempt: it runs.
func TestEarlyAckInDoubtThenRetry(t *testing.T) {
	t.Parallel()
	runs := newRunLog()
	reg := tasks.NewRegistry()
	reg.MustRegister("t.flaky", func(ctx context.Context) (string, error) {
		if req := runs.add(ctx); req.Retries == 0 {
			return "", tasks.Retry(tasks.Countdown(time.Second))
		}
		return "retried", nil
	})
	f := startInDoubt(t, reg, 2, true)
	f.publish("A", "t.flaky")
	f.result("A", backends.StatusRetry)
	brokertest.WaitFor(t, patience, func() bool { return f.b.Unacked() == 1 }, "the retry to be held for its countdown")
	f.b.Drop(nil) // the held retry goes back, redelivered
	f.result("A", backends.StatusSuccess)
	if n := runs.count("A"); n != 2 {
		t.Fatalf("A ran %d times, want twice (first attempt, retry)", n)
	}
}

// startInDoubt starts a worker on a broker whose first started ack ends in
// doubt (brokertest AckInDoubt), taken by the broker or not.
func startInDoubt(t *testing.T, reg *tasks.Registry, concurrency int, taken bool) *fixture {
	t.Helper()
	f := newFixture(t, reg, worker.Config{Concurrency: concurrency})
	f.b.StartAcks(true)
	f.b.AckInDoubt(taken)
	f.start()
	return f
}
