package worker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/broker/brokertest"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
	"github.com/celeryworker/gocelery/worker"
)

// TestTaskOutcomes: what a task returns becomes the stored result, and a
// message acknowledged before the task runs is acked whatever the outcome.
func TestTaskOutcomes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		fn      any
		args    []any
		status  string
		result  any    // for SUCCESS
		excType string // for FAILURE
		excMsg  string
	}{
		{name: "success", fn: func(_ context.Context, x, y int64) (int64, error) { return x + y, nil },
			args: []any{int64(2), int64(3)}, status: backends.StatusSuccess, result: 5.0},
		{name: "go error", fn: func(context.Context) (any, error) { return nil, errors.New("boom") },
			status: backends.StatusFailure, excType: "RuntimeError", excMsg: "boom"},
		{name: "wrapped go error", fn: func(context.Context) (any, error) { return nil, errors.Join(errors.New("a"), errors.New("b")) },
			status: backends.StatusFailure, excType: "RuntimeError", excMsg: "a\nb"},
		{name: "python error", fn: func(context.Context) (any, error) { return nil, tasks.ValueError("bad value %d", 7) },
			status: backends.StatusFailure, excType: "ValueError", excMsg: "bad value 7"},
		{name: "panic", fn: func(context.Context) (any, error) { panic("kaboom") },
			status: backends.StatusFailure, excType: "RuntimeError", excMsg: "panic: kaboom"},
		{name: "bad arguments", fn: func(_ context.Context, x int64) (int64, error) { return x, nil },
			args: []any{"not a number"}, status: backends.StatusFailure, excType: "TypeError"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			reg := tasks.NewRegistry()
			reg.MustRegister("t.task", tc.fn)
			f := startWorker(t, reg, worker.Config{})
			f.publish("id1", "t.task", tc.args...)
			doc := f.result("id1", tc.status)
			f.waitAcked("id1")
			switch tc.status {
			case backends.StatusSuccess:
				if doc["result"] != tc.result || doc["traceback"] != nil {
					t.Fatalf("result %v traceback %v, want %v", doc["result"], doc["traceback"], tc.result)
				}
			case backends.StatusFailure:
				typ, msg := exc(doc)
				if typ != tc.excType || (tc.excMsg != "" && msg != tc.excMsg) {
					t.Fatalf("stored %s(%q), want %s(%q)", typ, msg, tc.excType, tc.excMsg)
				}
				if tb, _ := doc["traceback"].(string); !strings.HasPrefix(tb, "Traceback") {
					t.Fatalf("traceback %q", tb)
				}
			}
			if h := f.be.History("id1"); len(h) != 1 {
				t.Fatalf("stored %v, want one write", h)
			}
			if len(f.b.Rejected()) != 0 || len(f.b.Requeued()) != 0 {
				t.Fatalf("rejected %v requeued %v", f.b.Rejected(), f.b.Requeued())
			}
		})
	}
}

// TestSettledWithoutRunning: messages that must not run are settled with
// the right result, their task never runs, and the worker keeps serving.
func TestSettledWithoutRunning(t *testing.T) {
	t.Parallel()
	past := time.Now().Add(-time.Minute)
	for _, tc := range []struct {
		name    string
		setup   func(f *fixture)
		send    func(f *fixture)
		id      string // the id settled; "" when unreadable
		status  string // stored; "" for nothing
		excType string
		excMsg  string
		excHas  string // a part of the exception message
		cfg     worker.Config
		acked   bool // else rejected without requeue
	}{
		{name: "unregistered task",
			send: func(f *fixture) { f.publish("u1", "t.nope") },
			id:   "u1", status: backends.StatusFailure, excType: "NotRegistered", excMsg: "t.nope"},
		{name: "undecodable body with readable id",
			send: func(f *fixture) {
				f.b.Publish(testQueue, &protocol.Envelope{ContentType: "application/json", ContentEncoding: "utf-8",
					Headers: map[string]any{"task": "t.run", "id": "bad1"}, Body: []byte("{not json")})
			},
			id: "bad1", status: backends.StatusFailure, excType: "InvalidTaskError"},
		{name: "pickle is not accepted",
			send: func(f *fixture) {
				f.b.Publish(testQueue, &protocol.Envelope{ContentType: "application/x-python-serialize", ContentEncoding: "binary",
					Headers: map[string]any{"task": "t.run", "id": "pk1"}, Body: []byte("\x80\x04.")})
			},
			id: "pk1", status: backends.StatusFailure, excType: "ContentDisallowed"},
		{name: "larger than MaxMessageSize",
			cfg:  worker.Config{MaxMessageSize: 1024},
			send: func(f *fixture) { f.publish("big1", "t.run", strings.Repeat("x", 2048)) },
			id:   "big1", status: backends.StatusFailure, excType: "InvalidTaskError", excHas: "larger than the limit of 1024 bytes"},
		{name: "decompressed larger than MaxMessageSize",
			cfg: worker.Config{MaxMessageSize: 1024},
			send: func(f *fixture) {
				body := `[["` + strings.Repeat("x", 4096) + `"], {}, {}]`
				_, z, err := protocol.Compress("zlib", []byte(body))
				if err != nil || len(z) > 1024 {
					f.t.Fatalf("compress: %d bytes, %v", len(z), err)
				}
				f.b.Publish(testQueue, &protocol.Envelope{ContentType: "application/json", ContentEncoding: "utf-8",
					Headers: map[string]any{"task": "t.run", "id": "bomb1", "compression": protocol.CompressionZlib}, Body: z})
			},
			id: "bomb1", status: backends.StatusFailure, excType: "InvalidTaskError", excHas: "decompressed message body"},
		{name: "JSON body that is not UTF-8",
			send: func(f *fixture) {
				f.b.Publish(testQueue, &protocol.Envelope{ContentType: "application/json", ContentEncoding: "utf-8",
					Headers: map[string]any{"task": "t.run", "id": "utf1"}, Body: []byte("[[\"\xff\"], {}, {}]")})
			},
			id: "utf1", status: backends.StatusFailure, excType: "InvalidTaskError", excHas: "not UTF-8"},
		{name: "garbage without id",
			send: func(f *fixture) {
				f.b.Publish(testQueue, &protocol.Envelope{ContentType: "application/json", Body: []byte("garbage")})
			},
			id: ""},
		{name: "expired",
			send: func(f *fixture) { f.send(&protocol.Message{ID: "e1", Task: "t.run", Expires: &past}) },
			id:   "e1", status: backends.StatusRevoked, excType: "TaskRevokedError", excMsg: "expired", acked: true},
		{name: "revoked before it came",
			setup: func(f *fixture) {
				r := f.control("revoke", map[string]any{"task_id": "r1"})
				if asJSON(r) != `{"ok":"tasks {'r1'} flagged as revoked"}` {
					f.t.Fatalf("revoke reply %s", asJSON(r))
				}
			},
			send: func(f *fixture) { f.publish("r1", "t.run") },
			id:   "r1", status: backends.StatusRevoked, excType: "TaskRevokedError", excMsg: "revoked", acked: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runs := newRunLog()
			reg := tasks.NewRegistry()
			reg.MustRegister("t.run", func(ctx context.Context) (string, error) { runs.add(ctx); return "ran", nil })
			f := startWorker(t, reg, tc.cfg)
			if tc.setup != nil {
				tc.setup(f)
			}
			tc.send(f)
			if tc.acked {
				f.waitAcked(tc.id)
			} else {
				brokertest.WaitFor(t, patience, func() bool { return slices.Contains(f.b.Rejected(), tc.id) }, "rejection of "+tc.id)
				if slices.Contains(f.b.Acked(), tc.id) {
					t.Fatalf("%q both rejected and acked", tc.id)
				}
			}
			if tc.status != "" {
				doc := f.result(tc.id, tc.status)
				typ, msg := exc(doc)
				if typ != tc.excType || (tc.excMsg != "" && msg != tc.excMsg) || !strings.Contains(msg, tc.excHas) {
					t.Fatalf("stored %s(%q), want %s(%q)", typ, msg, tc.excType, tc.excMsg)
				}
			}
			// Still serving; and a task that runs now comes after the
			// settled message was handled.
			f.publish("ok", "t.run")
			f.result("ok", backends.StatusSuccess)
			if runs.total() != 1 || runs.count("ok") != 1 {
				t.Fatalf("runs %v: the settled message ran", runs.order)
			}
			if tc.status == "" {
				if ids := f.be.IDs(); !slices.Equal(ids, []string{"ok"}) {
					t.Fatalf("stored results for %v, want only ok", ids)
				}
			}
			if len(f.b.Requeued()) != 0 || f.b.Len(testQueue) != 0 {
				t.Fatalf("requeued %v, %d left in the queue", f.b.Requeued(), f.b.Len(testQueue))
			}
		})
	}
}

// TestIgnoreResult: nothing is stored for a success with ignore_result,
// set by the message or by the task, but a failure is.
func TestIgnoreResult(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		byMessage bool
		opts      []tasks.Option
		fail      bool
	}{
		{name: "message flag", byMessage: true},
		{name: "task option", opts: []tasks.Option{tasks.IgnoreResult()}},
		{name: "failure still stored", opts: []tasks.Option{tasks.IgnoreResult()}, fail: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			reg := tasks.NewRegistry()
			reg.MustRegister("t.quiet", func(context.Context) (string, error) {
				if tc.fail {
					return "", errors.New("failed")
				}
				return "shh", nil
			}, tc.opts...)
			reg.MustRegister("t.loud", func(context.Context) (string, error) { return "hi", nil })
			f := startWorker(t, reg, worker.Config{}) // one runner: quiet is done before loud starts
			f.send(&protocol.Message{ID: "quiet", Task: "t.quiet", IgnoreResult: tc.byMessage})
			f.publish("loud", "t.loud")
			f.result("loud", backends.StatusSuccess)
			f.waitAcked("quiet")
			if tc.fail {
				f.result("quiet", backends.StatusFailure)
			} else if h := f.be.History("quiet"); len(h) != 0 {
				t.Fatalf("stored %v for an ignored result", h)
			}
		})
	}
}

// TestAcksLate: an acks_late message is acked only once its result is
// stored; an ordinary one is acked before the task runs.
func TestAcksLate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		acksLate bool
		fail     bool
	}{
		{name: "acks early"},
		{name: "acks late", acksLate: true},
		{name: "acks late failure", acksLate: true, fail: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var opts []tasks.Option
			if tc.acksLate {
				opts = append(opts, tasks.AcksLate())
			}
			finished := make(chan struct{})
			reg := tasks.NewRegistry()
			reg.MustRegister("t.late", func(context.Context) (string, error) {
				defer close(finished)
				if tc.fail {
					return "", errors.New("late failure")
				}
				return "done", nil
			}, opts...)
			be := &asyncBackend{memBackend: newMemBackend(), gate: make(chan struct{})}
			f := startWorker(t, reg, worker.Config{Backend: be})
			f.publish("l1", "t.late")
			<-finished
			if !tc.fail {
				// The SUCCESS write is queued and held at the gate.
				brokertest.WaitFor(t, patience, func() bool { return slices.Contains(be.Waiting(), "l1") }, "the result write to be queued")
				if acked := slices.Contains(f.b.Acked(), "l1"); acked == tc.acksLate {
					t.Fatalf("acked=%v before the result was stored (acks_late %v)", acked, tc.acksLate)
				}
				close(be.gate)
			} else {
				close(be.gate) // failures are written in line
			}
			f.waitAcked("l1")
			if !tc.fail && f.be.Doc("l1") == nil && tc.acksLate {
				t.Fatal("acked before the result was stored")
			}
			want := backends.StatusSuccess
			if tc.fail {
				want = backends.StatusFailure
			}
			f.result("l1", want)
			if f.b.Unacked() != 0 {
				t.Fatalf("%d unacked", f.b.Unacked())
			}
		})
	}
}

// TestBackendFailureRetried: a failed result write is retried, for the
// plain and the pipelined (StoreAsync) backend.
func TestBackendFailureRetried(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		async bool
	}{{name: "Store"}, {name: "StoreAsync", async: true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			reg := tasks.NewRegistry()
			reg.MustRegister("t.ok", func(context.Context) (string, error) { return "ok", nil })
			mem := newMemBackend()
			var be worker.ResultBackend = mem
			if tc.async {
				be = &asyncBackend{memBackend: mem}
			}
			mem.FailNext(2)
			f := startWorker(t, reg, worker.Config{Backend: be})
			f.publish("s1", "t.ok")
			f.result("s1", backends.StatusSuccess)
			if mem.Failed() != 2 {
				t.Fatalf("%d failed writes, want 2", mem.Failed())
			}
		})
	}
}

// TestLostDeliveryNeverStarted: a delivery waiting for a runner when its
// connection is lost is never started (the broker has requeued it); the
// redelivered copy runs, once.
func TestLostDeliveryNeverStarted(t *testing.T) {
	t.Parallel()
	g := newGate()
	runs, reg := countRegistry()
	reg.MustRegister("t.block", g.handler)
	f := startWorker(t, reg, worker.Config{Concurrency: 1})
	f.publish("A", "t.block")
	g.waitRunning(t, "A")
	f.publish("B", "t.count")
	// B is taken by the worker and waits for the only runner.
	brokertest.WaitFor(t, patience, func() bool {
		r, _ := f.control("reserved", nil).([]any)
		return len(r) == 1 && r[0].(map[string]any)["id"] == "B"
	}, "B to be reserved")

	f.b.Drop(nil)
	g.Release()
	f.result("A", backends.StatusSuccess)
	// Wait for the run of the redelivered copy.
	brokertest.WaitFor(t, patience, func() bool {
		for _, r := range runs.requests("B") {
			if r.DeliveryInfo.Redelivered {
				return true
			}
		}
		return false
	}, "B to run from its redelivery")
	if n := runs.count("B"); n != 1 {
		t.Fatalf("B ran %d times, want exactly once (the lost delivery must not start)", n)
	}
	f.result("B", backends.StatusSuccess)
	f.waitAcked("B")
	if f.b.Dials() < 2 {
		t.Fatalf("%d dials: no reconnect", f.b.Dials())
	}
}

// TestETA: a countdown task is held with the prefetch window raised by one,
// then runs once its ETA has passed and the window shrinks back.
func TestETA(t *testing.T) {
	t.Parallel()
	runs := newRunLog()
	reg := tasks.NewRegistry()
	reg.MustRegister("t.later", func(ctx context.Context) (string, error) { runs.add(ctx); return "later", nil })
	f := startWorker(t, reg, worker.Config{Concurrency: 1, PrefetchMultiplier: 4})
	if p := f.b.Prefetch(); p != 4 {
		t.Fatalf("prefetch %d, want 4", p)
	}
	eta := time.Now().Add(250 * time.Millisecond)
	f.send(&protocol.Message{ID: "eta1", Task: "t.later", ETA: &eta})
	brokertest.WaitFor(t, patience, func() bool { return f.b.Prefetch() == 5 }, "the prefetch window to grow by the held message")
	if runs.total() != 0 {
		t.Fatal("ran before its ETA")
	}
	sched, _ := f.control("scheduled", nil).([]any)
	if len(sched) != 1 || sched[0].(map[string]any)["request"].(map[string]any)["id"] != "eta1" {
		t.Fatalf("scheduled %s", asJSON(sched))
	}
	f.result("eta1", backends.StatusSuccess)
	if at := runs.startedAt("eta1"); at.Before(eta) {
		t.Fatalf("ran %v before its ETA", eta.Sub(at))
	}
	brokertest.WaitFor(t, patience, func() bool { return f.b.Prefetch() == 4 }, "the prefetch window to shrink back")
	f.waitAcked("eta1")
}

// TestETAHeldRequeuedOnShutdown: a warm shutdown sends held messages back
// to the queue instead of waiting for their ETA, once its consumer is
// cancelled: requeued before, a message could come straight back to this
// worker, be held again and be requeued a second time (the cancel is made
// slow here, as basic.cancel's round trip is on RabbitMQ).
func TestETAHeldRequeuedOnShutdown(t *testing.T) {
	t.Parallel()
	runs := newRunLog()
	reg := tasks.NewRegistry()
	reg.MustRegister("t.later", func(ctx context.Context) (string, error) { runs.add(ctx); return "later", nil })
	f := newFixture(t, reg, worker.Config{Concurrency: 1})
	f.b.SlowCancel(100 * time.Millisecond)
	f.start()
	eta := time.Now().Add(time.Hour)
	f.send(&protocol.Message{ID: "eta1", Task: "t.later", ETA: &eta})
	brokertest.WaitFor(t, patience, func() bool { return f.b.Prefetch() == 5 }, "the message to be held")

	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	start := time.Now()
	if err := f.w.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("shutdown took %v", d)
	}
	if err := f.waitRun(time.Second); err != nil {
		t.Fatal(err)
	}
	if f.b.Len(testQueue) != 1 || !slices.Equal(f.b.Requeued(), []string{"eta1"}) || runs.total() != 0 {
		t.Fatalf("queue %d requeued %v runs %d", f.b.Len(testQueue), f.b.Requeued(), runs.total())
	}
	if live := f.b.RequeuedWhileConsuming(); len(live) != 0 {
		t.Fatalf("requeued %v while the consumer was still on", live)
	}
	if len(f.be.IDs()) != 0 {
		t.Fatalf("stored %v", f.be.IDs())
	}
}

// TestRateLimit: a rate-limited task type is spaced out; other types run
// at once meanwhile.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	runs := newRunLog()
	reg := tasks.NewRegistry()
	reg.MustRegister("t.limited", func(ctx context.Context) (string, error) { runs.add(ctx); return "l", nil }, tasks.RateLimit("10/s"))
	reg.MustRegister("t.free", func(ctx context.Context) (string, error) { runs.add(ctx); return "f", nil })
	f := startWorker(t, reg, worker.Config{Concurrency: 4})
	for _, id := range []string{"l1", "l2", "l3"} {
		f.publish(id, "t.limited")
	}
	f.publish("free", "t.free")
	for _, id := range []string{"l1", "l2", "l3", "free"} {
		f.result(id, backends.StatusSuccess)
	}
	// The limited ones may start in any order; they are spaced out.
	starts := []time.Time{runs.startedAt("l1"), runs.startedAt("l2"), runs.startedAt("l3")}
	slices.SortFunc(starts, func(a, b time.Time) int { return a.Compare(b) })
	first, second, third := starts[0], starts[1], starts[2]
	if d := third.Sub(first); d < 180*time.Millisecond {
		t.Fatalf("3 tasks at 10/s ran within %v, want >= ~200ms", d)
	}
	if d := second.Sub(first); d < 90*time.Millisecond {
		t.Fatalf("2 tasks at 10/s ran %v apart", d)
	}
	if free := runs.startedAt("free"); !free.Before(second) {
		t.Fatalf("the unlimited task waited for the rate limit: started %v after the first limited one", free.Sub(first))
	}
}

// TestRetry: a retry stores RETRY, then republishes the same id with
// retries+1 to the queue it came from, where it runs again.
func TestRetry(t *testing.T) {
	t.Parallel()
	runs := newRunLog()
	reg := tasks.NewRegistry()
	reg.MustRegister("t.flaky", func(ctx context.Context, _ string) (string, error) {
		if req := runs.add(ctx); req.Retries == 0 {
			return "", tasks.Retry(tasks.Countdown(0), tasks.Exc(tasks.KeyError("missing")))
		}
		return "second time lucky", nil
	})
	f := startWorker(t, reg, worker.Config{})
	f.send(&protocol.Message{ID: "r1", Task: "t.flaky", Args: []any{"x"}, Headers: map[string]any{"custom": "kept"}})
	doc := f.result("r1", backends.StatusSuccess)
	if doc["result"] != "second time lucky" {
		t.Fatalf("result %v", doc["result"])
	}
	if h := f.be.History("r1"); !slices.Equal(h, []string{backends.StatusRetry, backends.StatusSuccess}) {
		t.Fatalf("stored %v, want RETRY then SUCCESS", h)
	}
	sent := f.b.Published()
	if len(sent) != 1 || sent[0].Queue != testQueue {
		t.Fatalf("published %+v", sent)
	}
	m := decodeSent(t, sent[0])
	// Countdown(0): no ETA, as Celery's apply_async sets none for it.
	if m.ID != "r1" || m.Task != "t.flaky" || m.Retries != 1 || m.ETA != nil || asJSON(m.Args) != `["x"]` ||
		m.ParentID != "r1" || m.RootID != "r1" || m.Headers["custom"] != "kept" {
		t.Fatalf("retry message %+v", m)
	}
	reqs := runs.requests("r1")
	if len(reqs) != 2 || reqs[1].Retries != 1 {
		t.Fatalf("runs %+v", reqs)
	}
	brokertest.WaitFor(t, patience, func() bool { return len(f.b.Acked()) == 2 }, "both deliveries acked")
}

// TestRetryExhausted: past max_retries the task fails with its exception,
// or MaxRetriesExceededError without one.
func TestRetryExhausted(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		opts     []tasks.Option
		retry    []tasks.RetryOption
		runs     int
		excType  string
		excMatch string
	}{
		{name: "no exception", opts: []tasks.Option{tasks.MaxRetries(2)}, retry: nil,
			runs: 3, excType: "MaxRetriesExceededError", excMatch: "Can't retry t.retry[m1]"},
		{name: "with exception", opts: []tasks.Option{tasks.MaxRetries(1)},
			retry: []tasks.RetryOption{tasks.Exc(tasks.ValueError("still broken"))},
			runs:  2, excType: "ValueError", excMatch: "still broken"},
		{name: "override", opts: []tasks.Option{tasks.MaxRetries(5)},
			retry: []tasks.RetryOption{tasks.MaxRetriesOverride(0)},
			runs:  1, excType: "MaxRetriesExceededError"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runs := newRunLog()
			reg := tasks.NewRegistry()
			reg.MustRegister("t.retry", func(ctx context.Context) (any, error) {
				runs.add(ctx)
				return nil, tasks.Retry(append([]tasks.RetryOption{tasks.Countdown(0)}, tc.retry...)...)
			}, tc.opts...)
			f := startWorker(t, reg, worker.Config{})
			f.publish("m1", "t.retry")
			doc := f.result("m1", backends.StatusFailure)
			typ, msg := exc(doc)
			if typ != tc.excType || !strings.Contains(msg, tc.excMatch) {
				t.Fatalf("stored %s(%q), want %s(...%q...)", typ, msg, tc.excType, tc.excMatch)
			}
			if runs.count("m1") != tc.runs || len(f.b.Published()) != tc.runs-1 {
				t.Fatalf("%d runs %d retries published, want %d runs", runs.count("m1"), len(f.b.Published()), tc.runs)
			}
			h := f.be.History("m1")
			if len(h) != tc.runs || h[len(h)-1] != backends.StatusFailure {
				t.Fatalf("stored %v", h)
			}
			for _, s := range h[:len(h)-1] {
				if s != backends.StatusRetry {
					t.Fatalf("stored %v", h)
				}
			}
		})
	}
}

// TestDiscardedLater: a message that becomes expired or revoked while it
// waits (held for its ETA, or for a runner) is settled as REVOKED when
// its turn comes, without running.
func TestDiscardedLater(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		msg    func() *protocol.Message
		revoke bool // revoke it while it waits
		reason string
	}{
		{name: "expires before its ETA", reason: "expired", msg: func() *protocol.Message {
			eta, exp := time.Now().Add(60*time.Millisecond), time.Now().Add(20*time.Millisecond)
			return &protocol.Message{ID: "x", Task: "t.run", ETA: &eta, Expires: &exp}
		}},
		{name: "revoked while held", reason: "revoked", revoke: true, msg: func() *protocol.Message {
			eta := time.Now().Add(200 * time.Millisecond) // the revoke comes well before
			return &protocol.Message{ID: "x", Task: "t.run", ETA: &eta}
		}},
		{name: "revoked while reserved", reason: "revoked", revoke: true, msg: func() *protocol.Message {
			return &protocol.Message{ID: "x", Task: "t.run"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := newGate()
			runs := newRunLog()
			reg := okRegistry(g)
			reg.MustRegister("t.run", func(ctx context.Context) (string, error) { runs.add(ctx); return "ran", nil })
			f := startWorker(t, reg, worker.Config{Concurrency: 1})
			f.publish("busy", "t.block") // keeps the only runner busy
			g.waitRunning(t, "busy")
			m := tc.msg()
			f.send(m)
			brokertest.WaitFor(t, patience, func() bool {
				r, _ := f.control("query_task", map[string]any{"ids": []any{"x"}}).(map[string]any)
				return r["x"] != nil
			}, "x to be taken")
			if tc.revoke {
				f.control("revoke", map[string]any{"task_id": "x"})
			}
			if m.ETA == nil {
				g.Release() // checked again when a runner takes it
			}
			// A held message is checked when its ETA comes, even with the
			// runner busy.
			f.waitAcked("x")
			g.Release()
			doc := f.result("x", backends.StatusRevoked)
			if _, msg := exc(doc); msg != tc.reason {
				t.Fatalf("REVOKED (%s), want %s", msg, tc.reason)
			}
			f.result("busy", backends.StatusSuccess)
			if runs.count("x") != 0 {
				t.Fatal("the discarded task ran")
			}
		})
	}
}

// TestTimeLimits: the soft limit cancels the task's context with
// SoftTimeLimitExceeded; at the hard limit the worker records
// TimeLimitExceeded and abandons the goroutine.
func TestTimeLimits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		opts    []tasks.Option
		cfg     worker.Config
		excType string
	}{
		{name: "soft", opts: []tasks.Option{tasks.SoftTimeLimit(30 * time.Millisecond)}, excType: "SoftTimeLimitExceeded"},
		{name: "hard", opts: []tasks.Option{tasks.TimeLimit(30 * time.Millisecond)}, excType: "TimeLimitExceeded"},
		{name: "hard from the worker", cfg: worker.Config{TimeLimit: 30 * time.Millisecond}, excType: "TimeLimitExceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			release := make(chan struct{})
			reg := tasks.NewRegistry()
			reg.MustRegister("t.slow", func(ctx context.Context) (string, error) {
				select {
				case <-ctx.Done():
					if errors.Is(context.Cause(ctx), tasks.ErrSoftTimeLimitExceeded) {
						return "", context.Cause(ctx)
					}
					<-release // ignores the hard limit
					return "too late", nil
				case <-release:
					return "released", nil
				}
			}, tc.opts...)
			t.Cleanup(func() { close(release) })
			f := startWorker(t, reg, tc.cfg)
			f.publish("s1", "t.slow")
			doc := f.result("s1", backends.StatusFailure)
			if typ, _ := exc(doc); typ != tc.excType {
				t.Fatalf("stored %v", doc["result"])
			}
			if tc.excType == "TimeLimitExceeded" && f.w.Abandoned() != 1 {
				t.Fatalf("%d abandoned goroutines, want 1", f.w.Abandoned())
			}
			// The slot is free again.
			reg.MustRegister("t.ok", func(context.Context) (string, error) { return "ok", nil })
			f.publish("next", "t.ok")
			f.result("next", backends.StatusSuccess)
		})
	}
}

// TestStates: track_started stores STARTED first; UpdateState stores a
// custom state; SkipSucceeded acks a duplicate of a success unrun.
func TestStates(t *testing.T) {
	t.Parallel()
	runs := newRunLog()
	reg := tasks.NewRegistry()
	reg.MustRegister("t.tracked", func(ctx context.Context) (string, error) { runs.add(ctx); return "t", nil }, tasks.TrackStarted())
	reg.MustRegister("t.progress", func(ctx context.Context) (string, error) {
		runs.add(ctx)
		if err := tasks.UpdateState(ctx, "PROGRESS", map[string]any{"done": 1}); err != nil {
			return "", err
		}
		return "p", nil
	})
	reg.MustRegister("t.once", func(ctx context.Context) (string, error) { runs.add(ctx); return "o", nil }, tasks.SkipSucceeded())
	f := startWorker(t, reg, worker.Config{})
	f.publish("tr", "t.tracked")
	f.publish("pr", "t.progress")
	f.publish("on", "t.once")
	f.result("tr", backends.StatusSuccess)
	f.result("pr", backends.StatusSuccess)
	f.result("on", backends.StatusSuccess)
	if h := f.be.History("tr"); !slices.Equal(h, []string{"STARTED", "SUCCESS"}) {
		t.Errorf("tracked: stored %v", h)
	}
	if h := f.be.History("pr"); !slices.Equal(h, []string{"PROGRESS", "SUCCESS"}) {
		t.Errorf("progress: stored %v", h)
	}
	f.publish("on", "t.once") // a duplicate
	brokertest.WaitFor(t, patience, func() bool { return len(f.b.Acked()) == 4 }, "the duplicate acked")
	if runs.count("on") != 1 {
		t.Fatalf("the duplicate of a success ran (%d runs)", runs.count("on"))
	}
}

// TestAcksLateRedelivered: an acks_late task whose connection drops while
// it runs cannot be acked; the broker redelivers it, and with
// SkipSucceeded the copy is acked without running again.
func TestAcksLateRedelivered(t *testing.T) {
	t.Parallel()
	g := newGate()
	runs := newRunLog()
	reg := tasks.NewRegistry()
	reg.MustRegister("t.late", func(ctx context.Context, a []any, k map[string]any) (any, error) {
		runs.add(ctx)
		return g.handler(ctx, a, k)
	}, tasks.AcksLate(), tasks.SkipSucceeded())
	f := startWorker(t, reg, worker.Config{})
	f.be.SetDelay(5 * time.Millisecond) // a Redis round trip
	f.publish("L", "t.late")
	g.waitRunning(t, "L")
	f.b.Drop(nil)
	brokertest.WaitFor(t, patience, func() bool { return f.b.Conns() == 1 && f.b.Prefetch() >= 0 }, "a new connection")
	g.Release()
	f.result("L", backends.StatusSuccess)
	f.waitAcked("L") // the redelivered copy
	if runs.count("L") != 1 {
		t.Fatalf("ran %d times", runs.count("L"))
	}
	if f.b.Len(testQueue) != 0 || f.b.Unacked() != 0 {
		t.Fatalf("queue %d unacked %d", f.b.Len(testQueue), f.b.Unacked())
	}
}

// TestETAAcrossReconnect: a held message whose connection drops is held
// again from its redelivery and runs once; the lost copy is not counted
// or listed.
func TestETAAcrossReconnect(t *testing.T) {
	t.Parallel()
	runs := newRunLog()
	reg := tasks.NewRegistry()
	reg.MustRegister("t.later", func(ctx context.Context) (string, error) { runs.add(ctx); return "later", nil })
	f := startWorker(t, reg, worker.Config{Concurrency: 1, PrefetchMultiplier: 4})
	// Far enough ahead that a loaded machine does the reconnect first.
	eta := time.Now().Add(2 * time.Second)
	f.send(&protocol.Message{ID: "eta1", Task: "t.later", ETA: &eta})
	brokertest.WaitFor(t, patience, func() bool { return f.b.Prefetch() == 5 }, "the message to be held")
	f.b.Drop(nil)
	brokertest.WaitFor(t, patience, func() bool { return f.b.Conns() == 1 && f.b.Len(testQueue) == 0 && f.b.Unacked() == 1 }, "the redelivery")
	// The lost copy leaves the ETA heap: one held message, one extra
	// slot in the window, not two.
	brokertest.WaitFor(t, patience, func() bool {
		s, _ := f.control("scheduled", nil).([]any)
		return len(s) == 1 && f.b.Prefetch() == 5
	}, "the redelivered copy held alone")
	f.result("eta1", backends.StatusSuccess)
	f.waitAcked("eta1")
	if runs.count("eta1") != 1 {
		t.Fatalf("ran %d times", runs.count("eta1"))
	}
}

// TestRateLimitedRequeuedOnShutdown: a job waiting for its rate limit
// token goes back to the queue at a warm shutdown.
func TestRateLimitedRequeuedOnShutdown(t *testing.T) {
	t.Parallel()
	runs := newRunLog()
	reg := tasks.NewRegistry()
	reg.MustRegister("t.hourly", func(ctx context.Context) (string, error) { runs.add(ctx); return "h", nil }, tasks.RateLimit("1/h"))
	f := startWorker(t, reg, worker.Config{Concurrency: 2})
	f.publish("h1", "t.hourly")
	f.publish("h2", "t.hourly")
	brokertest.WaitFor(t, patience, func() bool {
		r, _ := f.control("reserved", nil).([]any)
		return runs.total() == 1 && len(r) == 1
	}, "one run, one waiting for its token")
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := f.w.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	waiting := "h2"
	if runs.count("h2") == 1 {
		waiting = "h1"
	}
	if f.b.Len(testQueue) != 1 || !slices.Equal(f.b.Requeued(), []string{waiting}) {
		t.Fatalf("queue %d requeued %v", f.b.Len(testQueue), f.b.Requeued())
	}
}

// TestQueues: several queues are consumed; a retry goes back to the queue
// it came from; unlimited prefetch is prefetch 0.
func TestQueues(t *testing.T) {
	t.Parallel()
	runs := newRunLog()
	reg := tasks.NewRegistry()
	reg.MustRegister("t.flaky", func(ctx context.Context) (string, error) {
		if runs.add(ctx).Retries == 0 {
			return "", tasks.Retry(tasks.Countdown(0))
		}
		return "ok", nil
	})
	f := startWorker(t, reg, worker.Config{Queues: []string{"q", "q2"}, PrefetchMultiplier: -1})
	if p := f.b.Prefetch(); p != 0 {
		t.Fatalf("prefetch %d, want 0 (unlimited)", p)
	}
	f.b.PublishMessage("q2", &protocol.Message{ID: "r2", Task: "t.flaky"})
	f.publish("r1", "t.flaky")
	f.result("r1", backends.StatusSuccess)
	f.result("r2", backends.StatusSuccess)
	for _, s := range f.b.Published() {
		id := s.Envelope.Headers["id"]
		if want := map[any]string{"r1": "q", "r2": "q2"}[id]; s.Queue != want {
			t.Errorf("retry of %v went to %q, want %q", id, s.Queue, want)
		}
	}
	if r := runs.requests("r2"); len(r) != 2 || r[1].DeliveryInfo.RoutingKey != "q2" {
		t.Fatalf("r2 runs %+v", r)
	}
}

// TestWaitingJobsStartInOrder: jobs waiting for the only runner start in
// the order they came, and held jobs that come due while it is busy in
// ETA order: they wait in one queue, not in a goroutine each racing for
// the runner.
func TestWaitingJobsStartInOrder(t *testing.T) {
	t.Parallel()
	g := newGate()
	runs := newRunLog()
	reg := okRegistry(g)
	reg.MustRegister("t.run", func(ctx context.Context) (string, error) { runs.add(ctx); return "ran", nil })
	f := startWorker(t, reg, worker.Config{Concurrency: 1, PrefetchMultiplier: -1})
	f.publish("A", "t.block")
	g.waitRunning(t, "A")
	const n = 40
	var want, held []string
	for i := range n {
		id := fmt.Sprintf("p%02d", i)
		f.publish(id, "t.run")
		want = append(want, id)
	}
	// Published latest-due first.
	due := time.Now().Add(200 * time.Millisecond)
	for i := n - 1; i >= 0; i-- {
		id := fmt.Sprintf("e%02d", i)
		eta := due.Add(time.Duration(i) * time.Millisecond)
		f.send(&protocol.Message{ID: id, Task: "t.run", ETA: &eta})
		held = append([]string{id}, held...)
	}
	want = append(want, held...)
	brokertest.WaitFor(t, patience, func() bool { return f.w.Snapshot().Reserved == 2*n }, "every job due and waiting")
	g.Release()
	brokertest.WaitFor(t, patience, func() bool { return runs.total() == 2*n }, "every job run")
	runs.mu.Lock()
	defer runs.mu.Unlock()
	if !slices.Equal(runs.order, want) {
		t.Fatalf("started in order\n%v\nwant\n%v", runs.order, want)
	}
}

// TestRateLimitedStartInOrder: jobs of a rate-limited task waiting for
// their tokens start in the order they came, one token apart.
func TestRateLimitedStartInOrder(t *testing.T) {
	t.Parallel()
	runs := newRunLog()
	reg := tasks.NewRegistry()
	reg.MustRegister("t.paced", func(ctx context.Context) (string, error) { runs.add(ctx); return "p", nil }, tasks.RateLimit("100/s"))
	f := startWorker(t, reg, worker.Config{Concurrency: 4, PrefetchMultiplier: -1})
	var want []string
	for i := range 30 {
		id := fmt.Sprintf("r%02d", i)
		f.publish(id, "t.paced")
		want = append(want, id)
	}
	brokertest.WaitFor(t, patience, func() bool { return runs.total() == len(want) }, "every job run")
	runs.mu.Lock()
	defer runs.mu.Unlock()
	if !slices.Equal(runs.order, want) {
		t.Fatalf("started in order\n%v\nwant\n%v", runs.order, want)
	}
	first, last := runs.at[want[0]][0], runs.at[want[len(want)-1]][0]
	if took := last.Sub(first); took < 250*time.Millisecond {
		t.Fatalf("30 runs at 100/s took %v", took)
	}
}
