package worker_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/broker/brokertest"
	"github.com/celeryworker/gocelery/tasks"
	"github.com/celeryworker/gocelery/worker"
)

// aheadFixture: one runner busy with A (t.block), B and C waiting, on a
// broker whose deliveries can start their acks (as AMQP's do).
func aheadFixture(t *testing.T, g *gate, runs *runLog, waiting string) *fixture {
	t.Helper()
	reg := okRegistry(g)
	reg.MustRegister("t.run", func(ctx context.Context) (string, error) { runs.add(ctx); return "ran", nil })
	reg.MustRegister("t.run.late", func(ctx context.Context) (string, error) { runs.add(ctx); return "ran", nil }, tasks.AcksLate())
	f := newFixture(t, reg, worker.Config{Concurrency: 1, PrefetchMultiplier: 4})
	f.b.StartAcks(true)
	f.start()
	f.publish("A", "t.block")
	f.publish("B", waiting)
	f.publish("C", waiting)
	g.waitRunning(t, "A")
	brokertest.WaitFor(t, patience, func() bool { return f.b.Len(testQueue) == 0 }, "B and C delivered")
	return f
}

// TestAckAheadWhileARunnerIsBusy: while the only runner runs A, the next
// early-ack job's ack is already sent (so it starts without a broker round
// trip), and only one per runner: C stays unacknowledged.
func TestAckAheadWhileARunnerIsBusy(t *testing.T) {
	t.Parallel()
	g, runs := newGate(), newRunLog()
	f := aheadFixture(t, g, runs, "t.run")
	f.waitAcked("B")
	if acked := f.b.Acked(); !slices.Equal(sorted(acked), []string{"A", "B"}) || f.b.Unacked() != 1 {
		t.Fatalf("acked %v with %d unacked while A runs; want [A B] and C unacked", acked, f.b.Unacked())
	}
	if runs.total() != 0 {
		t.Fatalf("ran %v while the only runner was busy", runs.order)
	}
	g.Release()
	f.result("B", backends.StatusSuccess)
	f.result("C", backends.StatusSuccess)
	if runs.count("B") != 1 || runs.count("C") != 1 {
		t.Fatalf("runs %v", runs.runs)
	}
	if acked := f.b.Acked(); len(acked) != 3 {
		t.Fatalf("acked %v, want each once", acked)
	}
}

// TestAckAheadFollowsPoolSize: the bound is one per runner the pool has
// now, not the configured concurrency: after pool_grow to two runners, both
// busy, two waiting jobs are acknowledged ahead and the third is not.
func TestAckAheadFollowsPoolSize(t *testing.T) {
	t.Parallel()
	g := newGate()
	defer g.Release()
	f := newFixture(t, okRegistry(g), worker.Config{Concurrency: 1, PrefetchMultiplier: 4})
	f.b.StartAcks(true)
	f.start()
	if r := asJSON(f.control("pool_grow", map[string]any{"n": 1})); r != `{"ok":"pool will grow"}` {
		t.Fatalf("pool_grow: %s", r)
	}
	f.publish("A1", "t.block")
	f.publish("A2", "t.block")
	g.waitRunning(t, "A1", "A2")
	for _, id := range []string{"B", "C", "D"} {
		f.publish(id, "t.ok")
	}
	brokertest.WaitFor(t, patience, func() bool { return f.b.Len(testQueue) == 0 }, "B, C and D delivered")
	f.waitAcked("C")
	if acked := sorted(f.b.Acked()); !slices.Equal(acked, []string{"A1", "A2", "B", "C"}) || f.b.Unacked() != 1 {
		t.Fatalf("acked %v with %d unacked while two runners are busy; want [A1 A2 B C] and D unacked", acked, f.b.Unacked())
	}
	g.Release()
	f.result("D", backends.StatusSuccess)
}

// TestAckAheadNotForAcksLate: an acks_late job is acknowledged after its
// result, never ahead.
func TestAckAheadNotForAcksLate(t *testing.T) {
	t.Parallel()
	g, runs := newGate(), newRunLog()
	f := aheadFixture(t, g, runs, "t.run.late")
	// A reserved-jobs listing returns only once the serve loop took B and C.
	brokertest.WaitFor(t, patience, func() bool {
		r, _ := f.control("reserved", nil).([]any)
		return len(r) == 2
	}, "two jobs reserved")
	if acked := f.b.Acked(); !slices.Equal(acked, []string{"A"}) {
		t.Fatalf("acked %v while A runs; want only A", acked)
	}
	g.Release()
	f.result("C", backends.StatusSuccess)
}

// TestAckedAheadRunsAtWarmShutdown: a job acknowledged ahead is the
// worker's: a warm shutdown runs it (the broker has no copy to give to
// another worker), while the one not acknowledged goes back to the queue.
func TestAckedAheadRunsAtWarmShutdown(t *testing.T) {
	t.Parallel()
	g, runs := newGate(), newRunLog()
	f := aheadFixture(t, g, runs, "t.run")
	f.waitAcked("B")
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		done <- f.w.Shutdown(ctx)
	}()
	brokertest.WaitFor(t, patience, func() bool { return f.b.Len(testQueue) == 1 }, "C requeued")
	g.Release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	f.result("B", backends.StatusSuccess)
	if runs.count("B") != 1 || runs.count("C") != 0 {
		t.Fatalf("runs %v; want B once, C not at all", runs.runs)
	}
	if rq := f.b.Requeued(); !slices.Equal(rq, []string{"C"}) {
		t.Fatalf("requeued %v, want [C]", rq)
	}
}

// TestAckedAheadRunsAfterConnectionLoss: the connection drops while A
// runs: B, acknowledged ahead, still runs here once (the broker did not
// requeue it); C, unacknowledged, is redelivered and runs once.
func TestAckedAheadRunsAfterConnectionLoss(t *testing.T) {
	t.Parallel()
	g, runs := newGate(), newRunLog()
	f := aheadFixture(t, g, runs, "t.run")
	f.waitAcked("B")
	f.b.Drop(errors.New("connection reset"))
	g.Release()
	f.result("B", backends.StatusSuccess)
	f.result("C", backends.StatusSuccess)
	if runs.count("B") != 1 || runs.count("C") != 1 {
		t.Fatalf("runs %v; want B and C once each", runs.runs)
	}
}

// TestAckedAheadFailsAtColdShutdown: Close while A runs: B, acknowledged
// ahead and never started, gets WorkerLostError rather than no result;
// C goes back to the queue.
func TestAckedAheadFailsAtColdShutdown(t *testing.T) {
	t.Parallel()
	g, runs := newGate(), newRunLog()
	f := aheadFixture(t, g, runs, "t.run")
	f.waitAcked("B")
	f.w.Close()
	g.Release()
	doc := f.result("B", backends.StatusFailure)
	if r, _ := doc["result"].(map[string]any); r == nil || r["exc_type"] != "WorkerLostError" {
		t.Fatalf("B's result %v, want WorkerLostError", doc["result"])
	}
	brokertest.WaitFor(t, patience, func() bool { return f.b.Len(testQueue) == 1 }, "C back in the queue")
	if runs.count("B") != 0 || runs.count("C") != 0 {
		t.Fatalf("runs %v after Close", runs.runs)
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
