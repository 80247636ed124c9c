package worker_test

import (
	"context"
	"errors"
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

// TestControlReplies: the shape of simple replies, as `celery inspect`
// reads them.
func TestControlReplies(t *testing.T) {
	t.Parallel()
	reg := okRegistry(nil)
	reg.MustRegister("t.limited", func(context.Context) (string, error) { return "", nil })
	f := startWorker(t, reg, worker.Config{Concurrency: 3, PrefetchMultiplier: 2})
	for _, tc := range []struct {
		method string
		args   map[string]any
		want   string // the reply under the node name, as JSON
	}{
		{"ping", nil, `{"ok":"pong"}`},
		{"x", nil, `{"error":"KeyError('x')"}`},
		{"registered", nil, `["t.limited","t.ok"]`},
		{"active", nil, `[]`},
		{"reserved", nil, `[]`},
		{"scheduled", nil, `[]`},
		{"revoked", nil, `[]`},
		{"query_task", map[string]any{"ids": []any{"nope"}}, `{}`},
		{"rate_limit", map[string]any{"task_name": "t.limited", "rate_limit": "5/m"}, `{"ok":"new rate limit set successfully"}`},
		{"rate_limit", map[string]any{"task_name": "t.limited", "rate_limit": nil}, `{"ok":"rate limit disabled successfully"}`},
		{"rate_limit", map[string]any{"task_name": "t.nope", "rate_limit": "1/s"}, `{"error":"unknown task"}`},
		{"enable_events", nil, `{"ok":"task events enabled"}`},
		{"disable_events", nil, `{"ok":"task events disabled"}`},
		{"revoke", map[string]any{"task_id": []any{"x1", "x2"}}, `{"ok":"tasks {'x1', 'x2'} flagged as revoked"}`},
		{"revoked", nil, `["x1","x2"]`},
		{"revoke", map[string]any{"task_id": "x3", "terminate": true}, `{"ok":"terminate: tasks unknown"}`},
	} {
		body := brokertest.ControlBody(tc.method, tc.args)
		f.b.SendControl(testNode, body)
		r := f.reply(body["ticket"].(string))
		if got := asJSON(r.Body[testNode]); got != tc.want {
			t.Errorf("%s %v: reply %s, want %s", tc.method, tc.args, got, tc.want)
		}
		if len(r.Body) != 1 || r.Headers["ticket"] != body["ticket"] || r.Exchange != "reply.celery.pidbox" {
			t.Errorf("%s: reply %+v: want one node, the ticket header, the pidbox reply exchange", tc.method, r)
		}
	}
	// An invalid rate limit is an error, not a change.
	if r := asJSON(f.control("rate_limit", map[string]any{"task_name": "t.limited", "rate_limit": "fast"})); !strings.HasPrefix(r, `{"error":"Invalid rate limit string`) {
		t.Errorf("invalid rate limit: %s", r)
	}

	stats, _ := f.control("stats", nil).(map[string]any)
	br, _ := stats["broker"].(map[string]any)
	pool, _ := stats["pool"].(map[string]any)
	if br["transport"] != "memory" || br["hostname"] != "localhost" || pool["max-concurrency"] != 3.0 || stats["prefetch_count"] != 6.0 {
		t.Errorf("stats %s", asJSON(stats))
	}
	queues, _ := f.control("active_queues", nil).([]any)
	if len(queues) != 1 || queues[0].(map[string]any)["name"] != testQueue {
		t.Errorf("active_queues %s", asJSON(queues))
	}
	conf, _ := f.control("conf", nil).(map[string]any)
	if conf["broker_url"] != "memory://localhost//" || conf["worker_concurrency"] != 3.0 {
		t.Errorf("conf %s", asJSON(conf))
	}
	c1, _ := f.control("clock", nil).(map[string]any)
	c2, _ := f.control("clock", nil).(map[string]any)
	if n1, n2 := c1["clock"].(float64), c2["clock"].(float64); n2 <= n1 {
		t.Errorf("clock went %v then %v", n1, n2)
	}
}

// TestControlNoReply: messages for other nodes get no reply; heartbeat,
// asked for one, answers None as Celery's worker does; a later command is
// answered, so the earlier ones were processed.
func TestControlNoReply(t *testing.T) {
	t.Parallel()
	f := startWorker(t, okRegistry(nil), worker.Config{})
	other := brokertest.ControlBody("ping", nil)
	other["destination"] = []any{"other@host"}
	f.b.SendControl(testNode, other)
	pattern := brokertest.ControlBody("ping", nil)
	pattern["pattern"] = "other@*"
	f.b.SendControl(testNode, pattern)
	hb := brokertest.ControlBody("heartbeat", nil)
	f.b.SendControl(testNode, hb)
	mine := brokertest.ControlBody("ping", nil)
	mine["destination"] = []any{"other@host", testNode}
	f.b.SendControl(testNode, mine)
	glob := brokertest.ControlBody("ping", nil)
	glob["pattern"] = "w@*"
	f.b.SendControl(testNode, glob)
	f.reply(mine["ticket"].(string))
	f.reply(glob["ticket"].(string))
	if r := f.reply(hb["ticket"].(string)); len(r.Body) != 1 || r.Body[testNode] != nil {
		t.Fatalf("heartbeat reply %+v, want {node: None}", r.Body)
	}
	if r := f.b.Replies(); len(r) != 3 {
		t.Fatalf("%d replies, want 3: %+v", len(r), r)
	}
	// heartbeat answers with an event instead.
	brokertest.WaitFor(t, patience, func() bool { return slices.Contains(eventTypes(f.b), "worker-heartbeat") }, "a heartbeat event")
}

// TestControlActiveAndReserved: inspect shows the running task as active
// and the ones waiting for a runner as reserved; query_task knows both.
func TestControlActiveAndReserved(t *testing.T) {
	t.Parallel()
	g := newGate()
	f := startWorker(t, okRegistry(g), worker.Config{Concurrency: 1})
	f.publish("A", "t.block", "arg")
	g.waitRunning(t, "A")
	f.publish("B", "t.ok")
	brokertest.WaitFor(t, patience, func() bool {
		r, _ := f.control("reserved", nil).([]any)
		return len(r) == 1
	}, "B reserved")
	active, _ := f.control("active", nil).([]any)
	if len(active) != 1 {
		t.Fatalf("active %s", asJSON(active))
	}
	a := active[0].(map[string]any)
	if a["id"] != "A" || a["name"] != "t.block" || a["hostname"] != testNode || a["acknowledged"] != true ||
		asJSON(a["args"]) != `["arg"]` || a["time_start"] == nil {
		t.Fatalf("active %s", asJSON(a))
	}
	if di := a["delivery_info"].(map[string]any); di["routing_key"] != testQueue {
		t.Fatalf("delivery_info %s", asJSON(di))
	}
	q, _ := f.control("query_task", map[string]any{"ids": []any{"A", "B", "C"}}).(map[string]any)
	if len(q) != 2 || q["A"].([]any)[0] != "active" || q["B"].([]any)[0] != "reserved" {
		t.Fatalf("query_task %s", asJSON(q))
	}
	g.Release()
	f.result("B", backends.StatusSuccess)
	brokertest.WaitFor(t, patience, func() bool {
		r, _ := f.control("active", nil).([]any)
		return len(r) == 0
	}, "nothing active")
}

// TestControlRateLimit: rate_limit changes a task's limit at run time.
func TestControlRateLimit(t *testing.T) {
	t.Parallel()
	runs := newRunLog()
	reg := okRegistry(nil)
	reg.MustRegister("t.slow", func(ctx context.Context) (string, error) { runs.add(ctx); return "s", nil })
	f := startWorker(t, reg, worker.Config{Concurrency: 2})
	if r := asJSON(f.control("rate_limit", map[string]any{"task_name": "t.slow", "rate_limit": "1/h"})); r != `{"ok":"new rate limit set successfully"}` {
		t.Fatalf("rate_limit: %s", r)
	}
	f.publish("s1", "t.slow")
	f.publish("s2", "t.slow")
	f.publish("ok", "t.ok")
	f.result("ok", backends.StatusSuccess)
	brokertest.WaitFor(t, patience, func() bool { return runs.total() == 1 }, "one run of the limited task")
	r, _ := f.control("reserved", nil).([]any)
	if len(r) != 1 || runs.total() != 1 {
		t.Fatalf("reserved %s, runs %v: want one waiting for its token", asJSON(r), runs.order)
	}
}

// TestRevokeTerminate: revoke with terminate cancels a running task, whose
// result is REVOKED.
func TestRevokeTerminate(t *testing.T) {
	t.Parallel()
	g := newGate()
	f := startWorker(t, okRegistry(g), worker.Config{})
	f.publish("A", "t.block")
	g.waitRunning(t, "A")
	if r := asJSON(f.control("revoke", map[string]any{"task_id": "A", "terminate": true})); r != `{"ok":"terminate: A"}` {
		t.Fatalf("revoke: %s", r)
	}
	// The running task records REVOKED ("terminated") itself; revoke
	// does not also write "revoked" for it, so the stored reason is
	// always the true one.
	f.result("A", backends.StatusRevoked)
	if typ, msg := exc(f.be.Doc("A")); typ != "TaskRevokedError" || msg != "terminated" {
		t.Fatalf("stored %v", f.be.Doc("A"))
	}
	if h := f.be.History("A"); !slices.Equal(h, []string{backends.StatusRevoked}) {
		t.Fatalf("stored %v, want one REVOKED write", h)
	}
	if !errors.Is(g.Cause("A"), tasks.ErrTerminated) {
		t.Fatalf("cause %v", g.Cause("A"))
	}
	f.waitAcked("A")
	f.publish("B", "t.ok")
	f.result("B", backends.StatusSuccess)
}

// TestEvents: worker-online when consuming, task-received/started/
// succeeded with task events on, worker-offline at shutdown; no
// heartbeats with WithoutHeartbeat.
func TestEvents(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		cfg     worker.Config
		enable  bool // enable_events by remote control
		task    bool // task events expected
		failure bool
	}{
		{name: "task events", cfg: worker.Config{TaskEvents: true, WithoutHeartbeat: true}, task: true},
		{name: "task events failure", cfg: worker.Config{TaskEvents: true, WithoutHeartbeat: true}, task: true, failure: true},
		{name: "worker events only", cfg: worker.Config{WithoutHeartbeat: true}},
		{name: "enabled by control", cfg: worker.Config{WithoutHeartbeat: true}, enable: true, task: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			reg := okRegistry(nil)
			reg.MustRegister("t.fail", func(context.Context) (string, error) { return "", tasks.ValueError("no") })
			f := startWorker(t, reg, tc.cfg)
			brokertest.WaitFor(t, patience, func() bool { return slices.Contains(eventTypes(f.b), "worker-online") }, "worker-online")
			online := f.b.Events()[0]
			if online["type"] != "worker-online" || online["hostname"] != testNode || online["sw_ident"] != "gocelery" {
				t.Fatalf("first event %v", online)
			}
			if tc.enable {
				f.control("enable_events", nil)
			}
			name, final := "t.ok", backends.StatusSuccess
			if tc.failure {
				name, final = "t.fail", backends.StatusFailure
			}
			f.publish("e1", name)
			f.result("e1", final)
			var want []string
			if tc.task {
				want = []string{"task-received", "task-started", "task-succeeded"}
				if tc.failure {
					want[2] = "task-failed"
				}
				// Sent in the background; see TestEventsFlushedAtShutdown.
				brokertest.WaitFor(t, patience, func() bool { return len(taskEvents(f.b, "e1")) == 3 }, "the task events")
			}
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			if err := f.w.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			types := eventTypes(f.b)
			if types[len(types)-1] != "worker-offline" || slices.Contains(types, "worker-heartbeat") {
				t.Fatalf("events %v", types)
			}
			if got := taskEvents(f.b, "e1"); !slices.Equal(got, want) {
				t.Fatalf("task events %v, want %v (all: %v)", taskEvents(f.b, "e1"), want, types)
			}
			for _, e := range f.b.Events() {
				if e["hostname"] != testNode {
					t.Fatalf("event %v from another host", e)
				}
				if e["uuid"] == "e1" && e["type"] == "task-received" && e["name"] != name {
					t.Fatalf("task-received %v", e)
				}
			}
		})
	}
}

// TestTaskEventKinds: the task events for retries, discarded and invalid
// messages.
func TestTaskEventKinds(t *testing.T) {
	t.Parallel()
	past := time.Now().Add(-time.Minute)
	for _, tc := range []struct {
		name      string
		send      func(f *fixture)
		id        string
		want      []string
		unordered bool
		check     func(t *testing.T, evs []map[string]any)
	}{
		{name: "retried", id: "r1",
			send: func(f *fixture) { f.publish("r1", "t.retry") },
			// The retry is published before task-retried is sent (as in
			// Celery), so the second task-received may come first.
			unordered: true,
			want:      []string{"task-received", "task-started", "task-retried", "task-received", "task-started", "task-succeeded"}},
		{name: "expired", id: "e1",
			send: func(f *fixture) { f.send(&protocol.Message{ID: "e1", Task: "t.ok", Expires: &past}) },
			want: []string{"task-received", "task-revoked"},
			check: func(t *testing.T, evs []map[string]any) {
				if evs[1]["expired"] != true {
					t.Errorf("task-revoked %v", evs[1])
				}
			}},
		{name: "unregistered", id: "u1",
			send: func(f *fixture) { f.publish("u1", "t.nope") },
			want: []string{"task-failed"}},
		{name: "invalid", id: "i1",
			send: func(f *fixture) {
				f.b.Publish(testQueue, &protocol.Envelope{ContentType: "application/json",
					Headers: map[string]any{"task": "t.ok", "id": "i1"}, Body: []byte("[")})
			},
			want: []string{"task-rejected"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			reg := okRegistry(nil)
			reg.MustRegister("t.retry", func(ctx context.Context) (string, error) {
				if req, _ := tasks.RequestFromContext(ctx); req.Retries == 0 {
					return "", tasks.Retry(tasks.Countdown(0))
				}
				return "ok", nil
			})
			f := startWorker(t, reg, worker.Config{TaskEvents: true, WithoutHeartbeat: true})
			tc.send(f)
			brokertest.WaitFor(t, patience, func() bool { return len(taskEvents(f.b, tc.id)) >= len(tc.want) }, "the task events")
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			if err := f.w.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			got, want := taskEvents(f.b, tc.id), slices.Clone(tc.want)
			if tc.unordered {
				if len(got) > 2 && !slices.Equal(got[:2], want[:2]) {
					t.Fatalf("events %v, want %v first", got, want[:2])
				}
				slices.Sort(got)
				slices.Sort(want)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("events %v, want %v", taskEvents(f.b, tc.id), tc.want)
			}
			if tc.check != nil {
				var evs []map[string]any
				for _, e := range f.b.Events() {
					if e["uuid"] == tc.id {
						evs = append(evs, e)
					}
				}
				tc.check(t, evs)
			}
		})
	}
}

// TestStatsTotals: stats counts started tasks by name.
func TestStatsTotals(t *testing.T) {
	t.Parallel()
	f := startWorker(t, okRegistry(nil), worker.Config{})
	for _, id := range []string{"a", "b", "c"} {
		f.publish(id, "t.ok")
		f.result(id, backends.StatusSuccess)
	}
	stats, _ := f.control("stats", nil).(map[string]any)
	if got := asJSON(stats["total"]); got != `{"t.ok":3}` {
		t.Fatalf("total %s", got)
	}
}

// TestEventsFlushedAtShutdown: task events queued before a warm shutdown
// are all sent, before worker-offline, even when a batch is on its way
// while the worker stops.
func TestEventsFlushedAtShutdown(t *testing.T) {
	t.Parallel()
	tr := &slowEvents{Broker: brokertest.New(), delay: 100 * time.Millisecond}
	f := startWorker(t, okRegistry(nil), worker.Config{Broker: tr, TaskEvents: true, WithoutHeartbeat: true})
	f.publish("e1", "t.ok")
	f.result("e1", backends.StatusSuccess)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := f.w.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// Whatever is still on its way has had time to land.
	brokertest.WaitFor(t, 10*tr.delay, func() bool { return len(taskEvents(f.b, "e1")) == 3 }, "the three task events")
	types := eventTypes(f.b)
	if types[len(types)-1] != "worker-offline" {
		t.Fatalf("events %v: worker-offline is not last", types)
	}
}
