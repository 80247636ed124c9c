package worker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/broker/brokertest"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
	"github.com/celeryworker/gocelery/worker"
)

// okRegistry registers t.ok (returns "ok") and t.block (the gate).
func okRegistry(g *gate) *tasks.Registry {
	reg := tasks.NewRegistry()
	reg.MustRegister("t.ok", func(context.Context) (string, error) { return "ok", nil })
	if g != nil {
		reg.MustRegister("t.block", g.handler)
		reg.MustRegister("t.block.late", g.handler, tasks.AcksLate())
	}
	return reg
}

// TestRunMisconfiguredBroker: a dial error no retry can heal ends Run at
// once with a ConfigError naming broker_url.
func TestRunMisconfiguredBroker(t *testing.T) {
	t.Parallel()
	f := newFixture(t, okRegistry(nil), worker.Config{})
	f.b.FailDial(broker.Misconfigured(errors.New("ACCESS_REFUSED - Login was refused")))
	f.run(context.Background())
	err := f.waitRun(time.Second)
	var ce *worker.ConfigError
	if !errors.As(err, &ce) || ce.Setting != "broker_url" || !errors.Is(err, broker.ErrMisconfigured) {
		t.Fatalf("Run = %v (%T), want a ConfigError for broker_url", err, err)
	}
	if f.b.Dials() != 1 {
		t.Fatalf("%d dials: a misconfiguration must not be retried", f.b.Dials())
	}
	select {
	case <-f.w.Ready():
		t.Fatal("ready without a connection")
	default:
	}
	// Stopping it afterwards is harmless.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := f.w.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestRunRetriesTransientDial: refused connects are retried with backoff
// until the broker is back.
func TestRunRetriesTransientDial(t *testing.T) {
	t.Parallel()
	f := newFixture(t, okRegistry(nil), worker.Config{})
	f.b.FailDial(errors.New("dial tcp 127.0.0.1:5672: connect: connection refused"))
	f.run(context.Background())
	brokertest.WaitFor(t, patience, func() bool { return f.b.Dials() >= 3 }, "three dial attempts")
	select {
	case err := <-f.runErr:
		t.Fatalf("Run gave up on a transient error: %v", err)
	case <-f.w.Ready():
		t.Fatal("ready while dials fail")
	default:
	}
	f.b.FailDial(nil)
	f.waitReady()
	f.publish("t1", "t.ok")
	f.result("t1", backends.StatusSuccess)
}

// TestStopTwice: every pairing of Shutdown and Close returns, the second
// call at once, and Run returns nil.
func TestStopTwice(t *testing.T) {
	t.Parallel()
	shutdown := func(f *fixture) error {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		return f.w.Shutdown(ctx)
	}
	closeW := func(f *fixture) error { return f.w.Close() }
	for _, tc := range []struct {
		name          string
		first, second func(*fixture) error
	}{
		{"shutdown shutdown", shutdown, shutdown},
		{"shutdown close", shutdown, closeW},
		{"close shutdown", closeW, shutdown},
		{"close close", closeW, closeW},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := startWorker(t, okRegistry(nil), worker.Config{})
			if err := tc.first(f); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if err := tc.second(f); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d > 200*time.Millisecond {
				t.Fatalf("second stop took %v", d)
			}
			if err := f.waitRun(time.Second); err != nil {
				t.Fatalf("Run = %v", err)
			}
			if f.b.Conns() != 0 {
				t.Fatalf("%d connections left open", f.b.Conns())
			}
		})
	}
}

// TestConcurrentShutdowns: two Shutdowns while a task runs both wait for
// it, and both return once it is done.
func TestConcurrentShutdowns(t *testing.T) {
	t.Parallel()
	g := newGate()
	f := startWorker(t, okRegistry(g), worker.Config{})
	f.publish("A", "t.block")
	g.waitRunning(t, "A")
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			errs <- f.w.Shutdown(ctx)
		}()
	}
	brokertest.WaitFor(t, patience, func() bool { return f.b.Prefetch() == -1 }, "the consumer to be cancelled")
	select {
	case err := <-errs:
		t.Fatalf("Shutdown returned (%v) while a task runs", err)
	default:
	}
	g.Release()
	for range 2 {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(patience):
			t.Fatal("Shutdown did not return")
		}
	}
	f.result("A", backends.StatusSuccess)
	if err := f.waitRun(time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestShutdownBeforeRun: a worker stopped before it ran refuses to run.
func TestShutdownBeforeRun(t *testing.T) {
	t.Parallel()
	f := newFixture(t, okRegistry(nil), worker.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := f.w.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	f.run(context.Background())
	if err := f.waitRun(time.Second); err == nil {
		t.Fatal("Run after Shutdown returned nil")
	}
	if f.b.Dials() != 0 {
		t.Fatalf("%d dials after Shutdown", f.b.Dials())
	}
}

// TestCloseCancelsRunningTasks: Close cancels running tasks' contexts with
// ErrColdShutdown; an acknowledged one gets WorkerLostError, an acks_late
// one goes back to the queue without a result.
func TestCloseCancelsRunningTasks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		task string
		late bool
	}{{"acks early", "t.block", false}, {"acks late", "t.block.late", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := newStubbornGate(t) // still running when Close returns
			f := startWorker(t, okRegistry(g), worker.Config{})
			f.publish("A", tc.task)
			g.waitRunning(t, "A")
			if err := f.w.Close(); err != nil {
				t.Fatal(err)
			}
			brokertest.WaitFor(t, patience, func() bool { return g.Cause("A") != nil }, "the task to see its context end")
			if err := g.Cause("A"); !errors.Is(err, worker.ErrColdShutdown) {
				t.Fatalf("context cause %v, want ErrColdShutdown", err)
			}
			if err := f.waitRun(time.Second); err != nil {
				t.Fatal(err)
			}
			if tc.late {
				if f.b.Len(testQueue) != 1 || len(f.be.History("A")) != 0 {
					t.Fatalf("acks_late task: queue %d, stored %v", f.b.Len(testQueue), f.be.History("A"))
				}
				return
			}
			doc := f.result("A", backends.StatusFailure)
			if typ, msg := exc(doc); typ != "WorkerLostError" {
				t.Fatalf("stored %s(%q)", typ, msg)
			}
			// The task's own end (context cancelled) does not overwrite it.
			g.Release()
			brokertest.WaitFor(t, patience, func() bool { return len(g.Running()) == 0 }, "the task to return")
			if h := f.be.History("A"); !slices.Equal(h, []string{backends.StatusFailure}) {
				t.Fatalf("stored %v", h)
			}
		})
	}
}

// TestShutdownTimeout: when the shutdown context ends before a running
// task, the acknowledged task gets WorkerLostError and Shutdown returns
// an error.
func TestShutdownTimeout(t *testing.T) {
	t.Parallel()
	g := newStubbornGate(t)
	f := startWorker(t, okRegistry(g), worker.Config{})
	f.publish("A", "t.block")
	g.waitRunning(t, "A")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := f.w.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the deadline", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Shutdown took %v", d)
	}
	doc := f.result("A", backends.StatusFailure)
	if typ, _ := exc(doc); typ != "WorkerLostError" {
		t.Fatalf("stored %v", doc["result"])
	}
	brokertest.WaitFor(t, patience, func() bool { return g.Cause("A") != nil }, "the task's context to end")
	if !errors.Is(g.Cause("A"), worker.ErrColdShutdown) {
		t.Fatalf("cause %v", g.Cause("A"))
	}
	if err := f.waitRun(time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestWarmShutdownRequeuesWaiting: jobs prefetched but not started go
// back to the queue at once; the running one finishes; nothing is lost.
func TestWarmShutdownRequeuesWaiting(t *testing.T) {
	t.Parallel()
	g := newGate()
	runs := newRunLog()
	reg := okRegistry(g)
	reg.MustRegister("t.run", func(ctx context.Context) (string, error) { runs.add(ctx); return "ran", nil })
	f := startWorker(t, reg, worker.Config{Concurrency: 1, PrefetchMultiplier: 4})
	f.publish("A", "t.block")
	ids := []string{"A", "B", "C", "D", "E"}
	for _, id := range ids[1:] {
		f.publish(id, "t.run")
	}
	g.waitRunning(t, "A")
	brokertest.WaitFor(t, patience, func() bool {
		r, _ := f.control("reserved", nil).([]any)
		return len(r) == 4
	}, "four jobs reserved")
	// A was acked when it started, so it no longer counts in the window.
	if f.b.Len(testQueue) != 0 || f.b.Unacked() != 4 {
		t.Fatalf("%d in the queue, %d unacked; want 0 and 4 (prefetch window 4)", f.b.Len(testQueue), f.b.Unacked())
	}

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		done <- f.w.Shutdown(ctx)
	}()
	// Requeued while A still runs.
	brokertest.WaitFor(t, patience, func() bool { return f.b.Len(testQueue) == 4 && f.b.Unacked() == 0 }, "the waiting jobs to be requeued")
	if r := g.Running(); !slices.Equal(r, []string{"A"}) {
		t.Fatalf("running %v", r)
	}
	g.Release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(patience):
		t.Fatal("Shutdown did not return")
	}
	if err := f.waitRun(time.Second); err != nil {
		t.Fatal(err)
	}
	f.result("A", backends.StatusSuccess)
	if runs.total() != 0 {
		t.Fatalf("ran %v after shutdown started", runs.order)
	}
	requeued := f.b.Requeued()
	slices.Sort(requeued)
	if !slices.Equal(requeued, []string{"B", "C", "D", "E"}) {
		t.Fatalf("requeued %v", requeued)
	}
	queued := map[string]bool{}
	for _, e := range f.b.Messages(testQueue) {
		queued[e.Headers["id"].(string)] = true
	}
	acked := f.b.Acked()
	for _, id := range ids {
		inAcked := slices.Contains(acked, id)
		if inAcked == queued[id] || (inAcked && f.be.Doc(id) == nil) {
			t.Errorf("%s: acked %v queued %v result %v", id, inAcked, queued[id], f.be.Doc(id))
		}
	}
	if f.b.Unacked() != 0 || f.b.Conns() != 0 {
		t.Fatalf("unacked %d conns %d", f.b.Unacked(), f.b.Conns())
	}
}

// TestRunContextCancel: ending Run's context is a warm shutdown; Run
// returns nil once it is done.
func TestRunContextCancel(t *testing.T) {
	t.Parallel()
	g := newGate()
	f := newFixture(t, okRegistry(g), worker.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.run(ctx)
	f.waitReady()
	f.publish("A", "t.block")
	g.waitRunning(t, "A")
	cancel()
	brokertest.WaitFor(t, patience, func() bool { return f.b.Prefetch() == -1 }, "the consumer to be cancelled")
	select {
	case err := <-f.runErr:
		t.Fatalf("Run returned (%v) before the running task finished", err)
	default:
	}
	g.Release()
	if err := f.waitRun(time.Second); err != nil {
		t.Fatalf("Run = %v", err)
	}
	f.result("A", backends.StatusSuccess)
	if types := eventTypes(f.b); len(types) == 0 || types[len(types)-1] != "worker-offline" {
		t.Fatalf("events %v, want worker-offline last", types)
	}
}

// TestControlShutdown: the shutdown command starts a warm shutdown bounded
// by Config.ShutdownTimeout.
func TestControlShutdown(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		timeout time.Duration
	}{{"bounded", 150 * time.Millisecond}, {"unbounded", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := newStubbornGate(t)
			f := startWorker(t, okRegistry(g), worker.Config{ShutdownTimeout: tc.timeout})
			f.publish("A", "t.block")
			g.waitRunning(t, "A")
			start := time.Now()
			f.b.SendControl(testNode, brokertest.ControlBody("shutdown", nil))
			if tc.timeout == 0 {
				brokertest.WaitFor(t, patience, func() bool { return f.b.Prefetch() == -1 }, "the consumer to be cancelled")
				select {
				case err := <-f.runErr:
					t.Fatalf("Run returned (%v) before the running task finished", err)
				default:
				}
				g.Release()
				if err := f.waitRun(time.Second); err != nil {
					t.Fatal(err)
				}
				f.result("A", backends.StatusSuccess)
				return
			}
			if err := f.waitRun(tc.timeout + time.Second); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d < tc.timeout {
				t.Fatalf("Run returned after %v, before the shutdown timeout", d)
			}
			doc := f.result("A", backends.StatusFailure)
			if typ, _ := exc(doc); typ != "WorkerLostError" {
				t.Fatalf("stored %v", doc["result"])
			}
			if len(f.b.Replies()) != 0 {
				t.Fatalf("shutdown replied %v", f.b.Replies())
			}
		})
	}
}

// TestReconnect: after the connection drops the worker redials, announces
// itself again and serves.
func TestReconnect(t *testing.T) {
	t.Parallel()
	f := startWorker(t, okRegistry(nil), worker.Config{})
	f.publish("before", "t.ok")
	f.result("before", backends.StatusSuccess)
	f.b.Drop(errors.New("CONNECTION_FORCED - broker forced connection closure"))
	brokertest.WaitFor(t, patience, func() bool { return f.b.Dials() >= 2 && f.b.Conns() == 1 && f.b.Prefetch() >= 0 }, "a new connection")
	f.publish("after", "t.ok")
	f.result("after", backends.StatusSuccess)
	// Remote control works on the new connection.
	if r := f.control("ping", nil); asJSON(r) != `{"ok":"pong"}` {
		t.Fatalf("ping %s", asJSON(r))
	}
	online := 0
	for _, k := range f.b.EventKeys() {
		if k == "worker.online" {
			online++
		}
	}
	if online != 2 {
		t.Fatalf("worker-online sent %d times over two connections (keys %v)", online, f.b.EventKeys())
	}
}

// TestRetryAfterReconnect: a retry decided after the connection dropped is
// published on the new connection.
func TestRetryAfterReconnect(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		disconnected bool // the task ends while no connection is up
	}{{"reconnected first", false}, {"ends while disconnected", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			release := make(chan struct{})
			var once sync.Once
			runs := newRunLog()
			reg := tasks.NewRegistry()
			reg.MustRegister("t.flaky", func(ctx context.Context) (string, error) {
				if req := runs.add(ctx); req.Retries == 0 {
					<-release
					return "", tasks.Retry(tasks.Countdown(0))
				}
				return "retried", nil
			})
			f := startWorker(t, reg, worker.Config{})
			t.Cleanup(func() { once.Do(func() { close(release) }) })
			f.publish("r1", "t.flaky")
			brokertest.WaitFor(t, patience, func() bool { return runs.count("r1") == 1 }, "the first run")
			if tc.disconnected {
				f.b.FailDial(errors.New("connection refused"))
			}
			f.b.Drop(nil)
			if tc.disconnected {
				brokertest.WaitFor(t, patience, func() bool { return f.b.Dials() >= 2 }, "a failed redial")
				once.Do(func() { close(release) })
				brokertest.WaitFor(t, patience, func() bool { return slices.Contains(f.be.History("r1"), backends.StatusRetry) }, "RETRY stored")
				f.b.FailDial(nil)
			} else {
				brokertest.WaitFor(t, patience, func() bool { return f.b.Conns() == 1 && f.b.Prefetch() >= 0 }, "a new connection")
				once.Do(func() { close(release) })
			}
			f.result("r1", backends.StatusSuccess)
			if h := f.be.History("r1"); !slices.Equal(h, []string{backends.StatusRetry, backends.StatusSuccess}) {
				t.Fatalf("stored %v, want RETRY then SUCCESS", h)
			}
			if sent := f.b.Published(); len(sent) != 1 || sent[0].Queue != testQueue {
				t.Fatalf("published %+v", sent)
			}
		})
	}
}

// TestAutoscale: runners are added while jobs wait, up to Concurrency,
// and removed after AutoscaleKeepalive idle; the prefetch window follows.
func TestAutoscale(t *testing.T) {
	t.Parallel()
	g, g2 := newGate(), newGate()
	reg := okRegistry(g)
	reg.MustRegister("t.block2", g2.handler)
	f := startWorker(t, reg, worker.Config{Concurrency: 4, MinConcurrency: 1,
		AutoscaleKeepalive: 100 * time.Millisecond, PrefetchMultiplier: 2})
	if n, p := f.w.Concurrency(), f.b.Prefetch(); n != 1 || p != 2 {
		t.Fatalf("start: %d runners prefetch %d, want 1 and 2", n, p)
	}
	ids := []string{"a", "b", "c", "d"}
	for _, id := range ids {
		f.publish(id, "t.block")
	}
	g.waitRunning(t, ids...) // all four at once: the pool grew
	if n := f.w.Concurrency(); n != 4 {
		t.Fatalf("%d runners", n)
	}
	brokertest.WaitFor(t, patience, func() bool { return f.b.Prefetch() == 8 }, "prefetch 4×2")
	f.publish("e", "t.block") // fifth waits: the pool is at its maximum
	brokertest.WaitFor(t, patience, func() bool { return f.b.Len(testQueue) == 0 }, "e to be prefetched")
	if n, peak := f.w.Concurrency(), g.Peak(); n != 4 || peak != 4 {
		t.Fatalf("%d runners, %d ran at once; want at most 4", n, peak)
	}
	g.Release()
	for _, id := range append(ids, "e") {
		f.result(id, backends.StatusSuccess)
	}
	brokertest.WaitFor(t, patience, func() bool { return f.w.Concurrency() == 1 }, "the pool to shrink to 1")
	brokertest.WaitFor(t, patience, func() bool { return f.b.Prefetch() == 2 }, "prefetch back to 1×2")
	f.publish("after", "t.ok")
	f.result("after", backends.StatusSuccess)

	// A held ETA message widens the window by one.
	eta := time.Now().Add(time.Hour)
	f.send(&protocol.Message{ID: "held", Task: "t.ok", ETA: &eta})
	brokertest.WaitFor(t, patience, func() bool { return f.b.Prefetch() == 3 }, "prefetch 1×2+1")

	// And it grows again.
	again := []string{"w", "x", "y", "z"}
	for _, id := range again {
		f.publish(id, "t.block2")
	}
	g2.waitRunning(t, again...)
	if n := f.w.Concurrency(); n != 4 {
		t.Fatalf("%d runners after growing again", n)
	}
	brokertest.WaitFor(t, patience, func() bool { return f.b.Prefetch() == 9 }, "prefetch 4×2+1")
	g2.Release()
	for _, id := range again {
		f.result(id, backends.StatusSuccess)
	}
}

// TestCutOffTasksAllGetResults: when a cold shutdown (Close, or a warm
// shutdown past its timeout) cuts off running tasks, every acknowledged
// one is left with a result, also those that honour their context and
// return at once.
func TestCutOffTasksAllGetResults(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		stop func(w *worker.Worker)
	}{
		{"close", func(w *worker.Worker) { w.Close() }},
		{"shutdown timeout", func(w *worker.Worker) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			w.Shutdown(ctx)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const n = 8
			g := newGate() // cooperative: returns as soon as its context ends
			f := startWorker(t, okRegistry(g), worker.Config{Concurrency: n})
			f.be.SetDelay(5 * time.Millisecond) // a Redis round trip per WorkerLostError
			var ids []string
			for i := range n {
				id := string(rune('a' + i))
				ids = append(ids, id)
				f.publish(id, "t.block")
			}
			g.waitRunning(t, ids...)
			tc.stop(f.w)
			if err := f.waitRun(time.Second); err != nil {
				t.Fatal(err)
			}
			brokertest.WaitFor(t, patience, func() bool { return len(g.Running()) == 0 }, "the tasks to return")
			var missing []string
			for _, id := range ids {
				if f.be.Doc(id) == nil {
					missing = append(missing, id)
				}
			}
			if len(missing) > 0 {
				t.Fatalf("acknowledged tasks %v left without a result (stored: %v)", missing, f.be.IDs())
			}
		})
	}
}

// TestCloseWhileDialing: a worker that cannot reach its broker stops at
// once when closed; Run returns nil.
func TestCloseWhileDialing(t *testing.T) {
	t.Parallel()
	f := newFixture(t, okRegistry(nil), worker.Config{})
	f.b.FailDial(errors.New("connection refused"))
	f.run(context.Background())
	brokertest.WaitFor(t, patience, func() bool { return f.b.Dials() >= 1 }, "a dial")
	f.w.Close()
	if err := f.waitRun(time.Second); err != nil {
		t.Fatalf("Run = %v", err)
	}
}

// pingBackend is a memBackend that answers Ping with err.
type pingBackend struct {
	*memBackend
	mu  sync.Mutex
	err error
}

func (p *pingBackend) Ping(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (p *pingBackend) setErr(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.err = err
}

// TestBackendCheckedAtStart: refused backend credentials (a Ping error
// wrapping backends.ErrMisconfigured) end Run with a ConfigError naming
// result_backend before any dial; while the backend is unreachable the
// worker takes tasks from the broker but starts none until it answers.
func TestBackendCheckedAtStart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		err     error
		setting string // "" when Run goes on
	}{
		// What backends.Redis.Ping returns for a refused password: the
		// backend, which knows Redis's answers, marks it.
		{"refused credentials", fmt.Errorf("backends: redis AUTH: WRONGPASS invalid username-password pair: %w", backends.ErrMisconfigured), "result_backend"},
		{"misconfigured", fmt.Errorf("bad url: %w", backends.ErrMisconfigured), "result_backend"},
		{"unreachable", errors.New("dial tcp 127.0.0.1:6379: connect: connection refused"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			be := &pingBackend{memBackend: newMemBackend(), err: tc.err}
			f := newFixture(t, okRegistry(nil), worker.Config{Backend: be})
			if tc.setting == "" {
				f.start()
				f.publish("a", "t.ok")
				brokertest.WaitFor(t, patience, func() bool { return f.w.Snapshot().Reserved == 1 }, "a to be reserved")
				holdsFor(t, 300*time.Millisecond, func() bool { return f.w.Snapshot().Running == 0 && len(f.be.History("a")) == 0 }, "a not started while the backend is down")
				be.setErr(nil)
				f.result("a", backends.StatusSuccess)
				return
			}
			f.run(context.Background())
			err := f.waitRun(time.Second)
			var ce *worker.ConfigError
			if !errors.As(err, &ce) || ce.Setting != tc.setting {
				t.Fatalf("Run = %v, want a ConfigError for %s", err, tc.setting)
			}
			if f.b.Dials() != 0 {
				t.Fatalf("%d dials", f.b.Dials())
			}
		})
	}
}

// TestRunTwice: a second Run is refused; the first keeps serving.
func TestRunTwice(t *testing.T) {
	t.Parallel()
	f := startWorker(t, okRegistry(nil), worker.Config{})
	if err := f.w.Run(context.Background()); err == nil {
		t.Fatal("second Run returned nil")
	}
	f.publish("a", "t.ok")
	f.result("a", backends.StatusSuccess)
}

// TestStopBetweenAckAndStart: a cold stop (Close, or the shutdown timeout)
// that comes after a task's ack and before the task is listed as running
// still leaves the acknowledged task a WorkerLostError result, written
// before the stop returns (the CLI exits then), and the task does not
// start after the stop. An acks_late task there is not acknowledged and is
// left to the broker. The window is held open by the STARTED write
// (track_started), which the backend blocks until the stop cancels it.
func TestStopBetweenAckAndStart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		ahead   bool // the transport can start acks (the job is acknowledged ahead)
		timeout bool // stopped by the shutdown timeout rather than Close
		late    bool // acks_late
	}{
		{"acks early, Close", false, false, false},
		{"acked ahead, Close", true, false, false},
		{"acks early, shutdown timeout", false, true, false},
		{"acks late, Close", false, false, true},
		{"acks late, shutdown timeout", false, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runs := make(chan string, 4)
			reg := tasks.NewRegistry()
			opts := []tasks.Option{tasks.TrackStarted()}
			if tc.late {
				opts = append(opts, tasks.AcksLate())
			}
			reg.MustRegister("t.coop", func(ctx context.Context) (string, error) {
				runs <- "ran"
				return "", ctx.Err() // a task that returns when its context ends
			}, opts...)
			f := newFixture(t, reg, worker.Config{})
			f.b.StartAcks(tc.ahead)
			inStarted := make(chan struct{}, 1)
			f.be.SetGate(func(ctx context.Context, r *backends.Result) {
				if r.Status == backends.StatusStarted {
					inStarted <- struct{}{}
					<-ctx.Done() // held until the stop cuts the write off
				}
			})
			f.start()
			f.publish("A", "t.coop")
			select {
			case <-inStarted:
			case <-time.After(patience):
				t.Fatal("the STARTED write did not begin")
			}
			if !tc.late {
				f.waitAcked("A")
			}
			if tc.timeout {
				ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
				defer cancel()
				if err := f.w.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Shutdown = %v, want the deadline", err)
				}
			} else if err := f.w.Close(); err != nil {
				t.Fatal(err)
			}
			h := f.be.History("A") // as the stop returns
			if err := f.waitRun(patience); err != nil {
				t.Fatal(err)
			}
			select {
			case <-runs:
				t.Fatal("the task started after the worker stopped")
			default:
			}
			if tc.late {
				if len(h) != 0 || slices.Contains(f.b.Acked(), "A") || f.b.Len(testQueue) != 1 {
					t.Fatalf("acks_late: stored %v, acked %v, queue %d; want it back in the queue, untouched", h, f.b.Acked(), f.b.Len(testQueue))
				}
				return
			}
			if !slices.Equal(h, []string{backends.StatusFailure}) {
				t.Fatalf("stored %v when the stop returned, want [FAILURE]", h)
			}
			if typ, msg := exc(f.be.Doc("A")); typ != "WorkerLostError" {
				t.Fatalf("stored %s(%q)", typ, msg)
			}
			if h := f.be.History("A"); !slices.Equal(h, []string{backends.StatusFailure}) {
				t.Fatalf("stored %v", h)
			}
		})
	}
}
