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
	runs := newRunLog()
	reg := tasks.NewRegistry()
	reg.MustRegister("t.count", func(ctx context.Context) (string, error) { runs.add(ctx); return "counted", nil })
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
