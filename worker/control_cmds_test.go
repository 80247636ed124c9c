package worker_test

// The remote control commands beyond the basic ones (control_test.go):
// their effect on the worker and the shape of their replies, as Celery
// 5.7's worker gives them.

import (
	"context"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/broker/brokertest"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
	"github.com/celeryworker/gocelery/worker"
)

// TestControlCommandRepliesCelery: the replies of the commands whose
// effect is elsewhere or none, in Celery's words (the error texts are the
// repr of the exception Celery's command raises).
func TestControlCommandRepliesCelery(t *testing.T) {
	t.Parallel()
	reg := okRegistry(nil)
	f := startWorker(t, reg, worker.Config{Concurrency: 2})
	for _, tc := range []struct {
		method string
		args   map[string]any
		want   string
	}{
		{"heartbeat", nil, `null`},
		{"election", map[string]any{"id": "e", "topic": "t"}, `null`},
		{"pool_restart", map[string]any{"reload": false}, `{"error":"ValueError('Pool restarts not enabled')"}`},
		{"autoscale", map[string]any{"max": 4, "min": 1}, `{"error":"ValueError('Autoscale not enabled')"}`},
		{"time_limit", map[string]any{"task_name": "t.nope", "hard": 1}, `{"error":"unknown task"}`},
		{"time_limit", map[string]any{"task_name": "t.ok", "hard": 10, "soft": 5}, `{"ok":"time limits set successfully"}`},
		{"enable_events", nil, `{"ok":"task events enabled"}`},
		{"enable_events", nil, `{"ok":"task events already enabled"}`},
		{"disable_events", nil, `{"ok":"task events disabled"}`},
		{"disable_events", nil, `{"ok":"task events already disabled"}`},
		{"hello", map[string]any{"from_node": testNode}, `null`},
		{"hello", map[string]any{"from_node": "other@host", "revoked": []any{"r1"}}, `{"clock":`},
		{"revoked", nil, `["r1"]`}, // merged from the hello
		{"dump_revoked", nil, `["r1"]`},
		{"dump_tasks", nil, `["t.ok"]`},
		{"objgraph", nil, `{"error":"NotImplementedError(`},
		{"revoke_by_stamped_headers", map[string]any{"headers": map[string]any{"mtask_id": []any{"a", "b"}}},
			`{"ok":"headers {'mtask_id': ['a', 'b']} flagged as revoked, but not terminated"}`},
		{"revoke_by_stamped_headers", map[string]any{"headers": []any{"k=v"}, "terminate": true},
			`{"ok":"headers {'k': 'v'} were not terminated"}`},
	} {
		got := asJSON(f.control(tc.method, tc.args))
		// A want ending in "(" or ":" is a prefix.
		prefix := strings.HasSuffix(tc.want, "(") || strings.HasSuffix(tc.want, ":")
		if got != tc.want && !(prefix && strings.HasPrefix(got, tc.want)) {
			t.Errorf("%s %v: reply %s, want %s", tc.method, tc.args, got, tc.want)
		}
	}
	report, _ := f.control("report", nil).(map[string]any)
	if s, _ := report["ok"].(string); !strings.HasPrefix(s, "\nsoftware -> gocelery:") ||
		!strings.Contains(s, "settings -> transport:memory results:") || !strings.Contains(s, "worker_concurrency: 2\n") {
		t.Errorf("report %q", report)
	}
	// memsample: a humanized RSS as Celery's with psutil; memdump lists the
	// samples since the last dump, then the RSS now.
	sample, _ := f.control("memsample", nil).(string)
	if !regexp.MustCompile(`^\d+(\.\d+)?(b|KB|MB|GB)$`).MatchString(sample) {
		t.Errorf("memsample %q", sample)
	}
	dump, _ := f.control("memdump", nil).(string)
	if !strings.HasPrefix(dump, "- rss (sample):\n-    > "+sample+",\n- rss (end): ") || !strings.HasSuffix(dump, ".\n") {
		t.Errorf("memdump %q", dump)
	}
	if dump, _ := f.control("memdump", nil).(string); !strings.HasPrefix(dump, "- rss (end): ") {
		t.Errorf("second memdump %q: the samples are cleared by a dump", dump)
	}
	for alias, name := range map[string]string{"dump_conf": "conf", "dump_active": "active",
		"dump_reserved": "reserved", "dump_schedule": "scheduled"} {
		if a, n := asJSON(f.control(alias, nil)), asJSON(f.control(name, nil)); a != n {
			t.Errorf("%s %s, %s %s", alias, a, name, n)
		}
	}
}

// TestControlAddressing: destination, and pattern with kombu's matchers:
// glob by default (fnmatch: [!x] classes), pcre anchored at the start only;
// an unknown matcher and a miss get no reply; an empty destination list is
// everyone.
func TestControlAddressing(t *testing.T) {
	t.Parallel()
	f := startWorker(t, okRegistry(nil), worker.Config{})
	send := func(dest any, pattern, matcher any) string {
		body := brokertest.ControlBody("ping", nil)
		body["destination"], body["pattern"], body["matcher"] = dest, pattern, matcher
		f.b.SendControl(testNode, body)
		return body["ticket"].(string)
	}
	yes := []string{
		send([]any{}, nil, nil),
		send(nil, "w@*", "glob"),
		send(nil, "w@[!x]est", nil),
		send(nil, "w@t", "pcre"),
		send(nil, `w@te?st\b`, "pcre"),
		send([]any{testNode}, "nomatch", "glob"), // destination wins
	}
	no := []string{
		send([]any{"other@host"}, nil, nil),
		send(nil, "w@[x]est", "glob"),
		send(nil, "w@", "glob"),
		send(nil, "@test", "pcre"),
		send(nil, "w@*", "nosuch"),
	}
	last := send([]any{testNode}, nil, nil)
	f.reply(last) // processed in order: the others have been by now
	for _, ticket := range yes {
		f.reply(ticket)
	}
	for _, r := range f.b.Replies() {
		if slices.Contains(no, r.RoutingKey) {
			t.Errorf("reply to a message not for this node: %+v", r)
		}
	}
}

// TestControlTimeLimit: time_limit replaces a task's limits for the runs
// that start after it; a limit in the message still wins, and setting
// none falls back to the worker's.
func TestControlTimeLimit(t *testing.T) {
	t.Parallel()
	reg := tasks.NewRegistry()
	reg.MustRegister("t.wait", func(ctx context.Context) (string, error) {
		<-ctx.Done()
		return "", context.Cause(ctx)
	}, tasks.TimeLimit(time.Hour))
	reg.MustRegister("t.quick", func(ctx context.Context) (string, error) {
		select {
		case <-ctx.Done():
			return "", context.Cause(ctx)
		case <-time.After(100 * time.Millisecond):
			return "done", nil
		}
	})
	f := startWorker(t, reg, worker.Config{Concurrency: 2})
	if r := asJSON(f.control("time_limit", map[string]any{"task_name": "t.wait", "hard": 0.05})); r != `{"ok":"time limits set successfully"}` {
		t.Fatalf("time_limit: %s", r)
	}
	f.publish("hard", "t.wait")
	if typ, limit := exc(f.result("hard", backends.StatusFailure)); typ != "TimeLimitExceeded" || limit != "0.05" {
		t.Fatalf("hard limit: stored %s(%s)", typ, limit)
	}
	f.control("time_limit", map[string]any{"task_name": "t.wait", "soft": 0.05, "hard": nil})
	f.publish("soft", "t.wait")
	if typ, _ := exc(f.result("soft", backends.StatusFailure)); typ != "SoftTimeLimitExceeded" {
		t.Fatalf("soft limit: stored %s", typ)
	}
	// The message's own limit (timelimit header) comes first.
	f.send(&protocol.Message{ID: "own", Task: "t.quick", TimeLimit: protocol.TimeLimit{Hard: 5}})
	f.control("time_limit", map[string]any{"task_name": "t.quick", "hard": 0.02})
	f.publish("short", "t.quick")
	f.result("own", backends.StatusSuccess)
	if typ, _ := exc(f.result("short", backends.StatusFailure)); typ != "TimeLimitExceeded" {
		t.Fatalf("short: stored %s", typ)
	}
	// Setting neither limit clears the task's own hour as well, as in
	// Celery (the task's attributes are replaced).
	items := map[string]any{"taskinfoitems": []any{"time_limit", "soft_time_limit"}}
	f.control("time_limit", map[string]any{"task_name": "t.quick", "hard": 2.5})
	if r := asJSON(f.control("registered", items)); r != `["t.quick [time_limit=2.5]","t.wait [soft_time_limit=0.05]"]` {
		t.Fatalf("registered %s", r)
	}
	f.control("time_limit", map[string]any{"task_name": "t.wait"})
	if r := asJSON(f.control("registered", items)); r != `["t.quick [time_limit=2.5]","t.wait"]` {
		t.Fatalf("registered %s", r)
	}
}

// TestControlPoolGrowShrink: pool_grow and pool_shrink change the number
// of runners (and with it stats' max-concurrency and processes, and the
// prefetch window) and how many tasks run at once; a pool keeps one runner.
func TestControlPoolGrowShrink(t *testing.T) {
	t.Parallel()
	g, g2 := newGate(), newGate()
	reg := okRegistry(g)
	reg.MustRegister("t.block2", g2.handler)
	f := startWorker(t, reg, worker.Config{Concurrency: 1, PrefetchMultiplier: 2})
	if r := asJSON(f.control("pool_grow", map[string]any{"n": 2})); r != `{"ok":"pool will grow"}` {
		t.Fatalf("pool_grow: %s", r)
	}
	checkPool(t, f, 3)
	for _, id := range []string{"a", "b", "c"} {
		f.publish(id, "t.block")
	}
	g.waitRunning(t, "a", "b", "c")
	if r := asJSON(f.control("pool_grow", nil)); r != `{"ok":"pool will grow"}` {
		t.Fatalf("pool_grow: %s", r)
	}
	checkPool(t, f, 4)
	// Shrinking while all are busy: they finish their tasks, then leave.
	if r := asJSON(f.control("pool_shrink", map[string]any{"n": 10})); r != `{"ok":"pool will shrink"}` {
		t.Fatalf("pool_shrink: %s", r)
	}
	checkPool(t, f, 1)
	g.Release()
	for _, id := range []string{"a", "b", "c"} {
		f.result(id, backends.StatusSuccess)
	}
	f.publish("d", "t.block2")
	f.publish("e", "t.block2")
	g2.waitRunning(t, "d")
	brokertest.WaitFor(t, patience, func() bool {
		r, _ := f.control("reserved", nil).([]any)
		return len(r) == 1 && len(g2.Running()) == 1
	}, "one task running, one waiting for the single runner")
	g2.Release()
	f.result("e", backends.StatusSuccess)
	if g2.Peak() != 1 {
		t.Fatalf("%d ran at once after shrinking to one runner", g2.Peak())
	}
}

// checkPool checks the pool size as stats, Concurrency and the prefetch
// window show it.
func checkPool(t *testing.T, f *fixture, n int) {
	t.Helper()
	stats, _ := f.control("stats", nil).(map[string]any)
	pool, _ := stats["pool"].(map[string]any)
	procs, _ := pool["processes"].([]any)
	if pool["max-concurrency"] != float64(n) || len(procs) != n || f.w.Concurrency() != n ||
		stats["prefetch_count"] != float64(2*n) || f.b.Prefetch() != 2*n {
		t.Fatalf("want %d runners: Concurrency %d, prefetch %d, stats %s", n, f.w.Concurrency(), f.b.Prefetch(), asJSON(stats))
	}
}

// TestControlAutoscale: with --autoscale the range changes at run time
// (growing to a raised minimum at once, shrinking to a lowered maximum),
// stats shows it as Celery's autoscaler info, and pool_grow/pool_shrink
// are refused as Celery refuses them.
func TestControlAutoscale(t *testing.T) {
	t.Parallel()
	f := startWorker(t, okRegistry(nil), worker.Config{Concurrency: 4, MinConcurrency: 1,
		AutoscaleKeepalive: time.Hour, PrefetchMultiplier: 2})
	stats, _ := f.control("stats", nil).(map[string]any)
	if a := asJSON(stats["autoscaler"]); a != `{"current":1,"max":4,"min":1,"qty":0}` {
		t.Fatalf("autoscaler %s", a)
	}
	for _, cmd := range []string{"pool_grow", "pool_shrink"} {
		want := `{"error":"` + cmd + ` is not supported with autoscale. Adjust autoscale range instead."}`
		if r := asJSON(f.control(cmd, map[string]any{"n": 1})); r != want {
			t.Errorf("%s: %s", cmd, r)
		}
	}
	if r := asJSON(f.control("autoscale", map[string]any{"max": 6, "min": 3})); r != `{"ok":"autoscale now max=6 min=3"}` {
		t.Fatalf("autoscale: %s", r)
	}
	if n, p := f.w.Concurrency(), f.b.Prefetch(); n != 3 || p != 6 {
		t.Fatalf("after min=3: %d runners, prefetch %d", n, p)
	}
	// Only the maximum: the minimum follows it down.
	if r := asJSON(f.control("autoscale", map[string]any{"max": 2, "min": nil})); r != `{"ok":"autoscale now max=2 min=2"}` {
		t.Fatalf("autoscale: %s", r)
	}
	if n, p := f.w.Concurrency(), f.b.Prefetch(); n != 2 || p != 4 {
		t.Fatalf("after max=2: %d runners, prefetch %d", n, p)
	}
	stats, _ = f.control("stats", nil).(map[string]any)
	if a := asJSON(stats["autoscaler"]); a != `{"current":2,"max":2,"min":2,"qty":0}` {
		t.Fatalf("autoscaler %s", a)
	}
}

// TestControlAddCancelConsumer: add_consumer consumes a new queue (across
// a reconnect too); cancel_consumer stops it before replying, so what is
// sent to it afterwards stays in the queue while the other queues are
// still served.
func TestControlAddCancelConsumer(t *testing.T) {
	t.Parallel()
	f := startWorker(t, okRegistry(nil), worker.Config{})
	queueNames := func() []string {
		var out []string
		qs, _ := f.control("active_queues", nil).([]any)
		for _, q := range qs {
			out = append(out, q.(map[string]any)["name"].(string))
		}
		return out
	}
	if r := asJSON(f.control("add_consumer", map[string]any{"queue": "q2", "exchange": nil, "exchange_type": "direct", "routing_key": nil})); r != `{"ok":"add consumer q2"}` {
		t.Fatalf("add_consumer: %s", r)
	}
	f.control("add_consumer", map[string]any{"queue": "q2"}) // twice: no second consumer
	if qs := queueNames(); !slices.Equal(qs, []string{testQueue, "q2"}) {
		t.Fatalf("active_queues %v", qs)
	}
	f.b.PublishMessage("q2", &protocol.Message{ID: "in-q2", Task: "t.ok"})
	f.result("in-q2", backends.StatusSuccess)
	f.b.Drop(nil)
	brokertest.WaitFor(t, patience, func() bool { return f.b.Conns() == 1 && f.b.Prefetch() >= 0 }, "a new connection")
	f.b.PublishMessage("q2", &protocol.Message{ID: "after-reconnect", Task: "t.ok"})
	f.result("after-reconnect", backends.StatusSuccess)

	if r := asJSON(f.control("cancel_consumer", map[string]any{"queue": "q2"})); r != `{"ok":"no longer consuming from q2"}` {
		t.Fatalf("cancel_consumer: %s", r)
	}
	if qs := queueNames(); !slices.Equal(qs, []string{testQueue}) {
		t.Fatalf("active_queues %v", qs)
	}
	f.b.PublishMessage("q2", &protocol.Message{ID: "left", Task: "t.ok"})
	f.publish("served", "t.ok")
	f.result("served", backends.StatusSuccess)
	if f.b.Len("q2") != 1 || f.be.Doc("left") != nil {
		t.Fatalf("q2 holds %d, left: %v", f.b.Len("q2"), f.be.Doc("left"))
	}
	// Cancelling a queue not consumed is not an error, as in Celery.
	if r := asJSON(f.control("cancel_consumer", map[string]any{"queue": "nope"})); r != `{"ok":"no longer consuming from nope"}` {
		t.Fatalf("cancel_consumer: %s", r)
	}
}

// TestControlRegisteredInfo: registered appends the set task attributes
// Celery's does ("name [rate_limit=5/s]"), the ones asked for in their
// order, private names skipped, and follows rate_limit.
func TestControlRegisteredInfo(t *testing.T) {
	t.Parallel()
	reg := tasks.NewRegistry()
	reg.MustRegister("t.limited", func(context.Context) (string, error) { return "", nil }, tasks.RateLimit("5/s"))
	reg.MustRegister("t.plain", func(context.Context) (string, error) { return "", nil },
		tasks.AcksLate(), tasks.MaxRetries(-1), tasks.SoftTimeLimit(1500*time.Millisecond))
	f := startWorker(t, reg, worker.Config{})
	if r := asJSON(f.control("registered", nil)); r != `["t.limited [rate_limit=5/s]","t.plain"]` {
		t.Fatalf("registered %s", r)
	}
	items := map[string]any{"taskinfoitems": []any{"rate_limit", "max_retries", "_private", "acks_late", "soft_time_limit", "serializer", "nosuch"}}
	want := `["t.limited [rate_limit=5/s max_retries=3 acks_late=False serializer=json]",` +
		`"t.plain [acks_late=True soft_time_limit=1.5 serializer=json]"]`
	if r := asJSON(f.control("registered", items)); r != want {
		t.Fatalf("registered %s\nwant %s", r, want)
	}
	f.control("rate_limit", map[string]any{"task_name": "t.plain", "rate_limit": "10/m"})
	f.control("rate_limit", map[string]any{"task_name": "t.limited", "rate_limit": nil})
	if r := asJSON(f.control("registered", nil)); r != `["t.limited","t.plain [rate_limit=10/m]"]` {
		t.Fatalf("registered after rate_limit %s", r)
	}
}

// TestInspectRequestInfo: an active task shows the worker's pid and when
// it started (in active and query_task); a reserved one neither;
// query_task calls a task held for its ETA "scheduled", as Celery 5.7.
func TestInspectRequestInfo(t *testing.T) {
	t.Parallel()
	g := newGate()
	f := startWorker(t, okRegistry(g), worker.Config{Concurrency: 1})
	f.publish("A", "t.block")
	g.waitRunning(t, "A")
	f.publish("B", "t.ok")
	eta := time.Now().Add(time.Hour)
	f.send(&protocol.Message{ID: "C", Task: "t.ok", ETA: &eta})
	var q map[string]any
	brokertest.WaitFor(t, patience, func() bool {
		q, _ = f.control("query_task", map[string]any{"ids": []any{"A", "B", "C"}}).(map[string]any)
		return len(q) == 3
	}, "query_task to know the three")
	pid := float64(os.Getpid())
	for id, want := range map[string]string{"A": "active", "B": "reserved", "C": "scheduled"} {
		entry := q[id].([]any)
		info := entry[1].(map[string]any)
		if entry[0] != want || info["id"] != id {
			t.Errorf("query_task %s: %s", id, asJSON(entry))
		}
		if running := want == "active"; running != (info["worker_pid"] == pid) || running != (info["time_start"] != nil) {
			t.Errorf("query_task %s: worker_pid %v time_start %v", id, info["worker_pid"], info["time_start"])
		}
	}
	active, _ := f.control("active", map[string]any{"safe": true}).([]any)
	if len(active) != 1 {
		t.Fatalf("active %s", asJSON(active))
	}
	a := active[0].(map[string]any)
	if start, _ := a["time_start"].(float64); a["worker_pid"] != pid || time.Since(time.Unix(int64(start), 0)) > time.Minute {
		t.Fatalf("active %s", asJSON(a))
	}
	g.Release()
	f.result("B", backends.StatusSuccess)
}

// TestStatsRusageAndPool: stats gives getrusage(2) in Celery's field
// names and the pool in the shape of Celery's prefork pool info.
func TestStatsRusageAndPool(t *testing.T) {
	t.Parallel()
	f := startWorker(t, okRegistry(nil), worker.Config{Concurrency: 3, SoftTimeLimit: 1500 * time.Millisecond})
	stats, _ := f.control("stats", nil).(map[string]any)
	ru, isMap := stats["rusage"].(map[string]any)
	if !isMap {
		t.Fatalf("rusage %s", asJSON(stats["rusage"]))
	}
	for _, k := range []string{"utime", "stime", "maxrss", "ixrss", "idrss", "isrss", "minflt", "majflt",
		"nswap", "inblock", "oublock", "msgsnd", "msgrcv", "nsignals", "nvcsw", "nivcsw"} {
		if _, isNum := ru[k].(float64); !isNum {
			t.Errorf("rusage %s = %v", k, ru[k])
		}
	}
	if ru["utime"].(float64)+ru["stime"].(float64) <= 0 || ru["maxrss"].(float64) <= 0 {
		t.Errorf("rusage %s", asJSON(ru))
	}
	pid := float64(os.Getpid())
	want := map[string]any{"implementation": "gocelery:goroutines", "max-concurrency": 3.0,
		"processes": []any{pid, pid, pid}, "max-tasks-per-child": "N/A", "put-guarded-by-semaphore": false,
		"timeouts": []any{1.5, 0.0},
		"writes": map[string]any{"total": 0, "avg": "0.00", "all": "", "raw": "", "strategy": "fair",
			"inqueues": map[string]any{"total": 3, "active": 0}}}
	if got := asJSON(stats["pool"]); got != asJSON(want) {
		t.Fatalf("pool %s\nwant %s", got, asJSON(want))
	}
	if _, found := stats["autoscaler"]; found {
		t.Fatalf("autoscaler shown without --autoscale: %s", asJSON(stats))
	}
	// writes: the jobs each runner took, as Celery's per-process writes.
	for _, id := range []string{"a", "b", "c", "d"} {
		f.publish(id, "t.ok")
		f.result(id, backends.StatusSuccess)
	}
	stats, _ = f.control("stats", nil).(map[string]any)
	writes := stats["pool"].(map[string]any)["writes"].(map[string]any)
	var sum int
	for _, n := range strings.Split(writes["raw"].(string), ", ") {
		v, err := strconv.Atoi(n)
		if err != nil {
			t.Fatalf("writes %s", asJSON(writes))
		}
		sum += v
	}
	if writes["total"] != 4.0 || sum != 4 || writes["strategy"] != "fair" {
		t.Fatalf("writes %s", asJSON(writes))
	}
}

// TestRevokeByStampedHeaders: tasks stamped with a revoked value are
// discarded as revoked when a runner would start them, a running one only
// with terminate; values match as Celery matches them (a stamp may be a
// list, the revoked values accumulate).
func TestRevokeByStampedHeaders(t *testing.T) {
	t.Parallel()
	g := newGate()
	f := startWorker(t, okRegistry(g), worker.Config{Concurrency: 1})
	stamped := func(id, name string, stamp any) *protocol.Message {
		return &protocol.Message{ID: id, Task: name, StampedHeaders: []string{"mtask_id"},
			Stamps: map[string]any{"mtask_id": stamp}}
	}
	f.send(stamped("A", "t.block", "m1"))
	g.waitRunning(t, "A")
	f.send(stamped("B", "t.ok", "m1"))
	f.send(stamped("C", "t.ok", []any{"x", "m2"}))
	f.send(stamped("D", "t.ok", "m3"))
	f.publish("E", "t.ok")
	brokertest.WaitFor(t, patience, func() bool {
		r, _ := f.control("reserved", nil).([]any)
		return len(r) == 4
	}, "B to E waiting for the runner")
	if r := asJSON(f.control("revoke_by_stamped_headers", map[string]any{"headers": map[string]any{"mtask_id": "m1"}})); r != `{"ok":"headers {'mtask_id': 'm1'} flagged as revoked, but not terminated"}` {
		t.Fatalf("revoke_by_stamped_headers: %s", r)
	}
	f.control("revoke_by_stamped_headers", map[string]any{"headers": []any{"mtask_id=m2"}})
	g.Release()
	f.result("A", backends.StatusSuccess) // running: not terminated
	for _, id := range []string{"B", "C"} {
		if typ, msg := exc(f.result(id, backends.StatusRevoked)); typ != "TaskRevokedError" || msg != "revoked" {
			t.Errorf("%s stored %v", id, f.be.Doc(id))
		}
	}
	f.result("D", backends.StatusSuccess)
	f.result("E", backends.StatusSuccess)
	for _, id := range []string{"B", "C"} {
		f.waitAcked(id)
	}

	// With terminate, a running task stamped so is terminated.
	g2 := newGate()
	reg2 := okRegistry(g2)
	f2 := startWorker(t, reg2, worker.Config{Concurrency: 2})
	f2.send(stamped("R", "t.block", []any{"m7", "m8"}))
	f2.send(stamped("S", "t.block", "m9"))
	g2.waitRunning(t, "R", "S")
	r, _ := f2.control("revoke_by_stamped_headers", map[string]any{"headers": map[string]any{"mtask_id": []any{"m8", "m0"}}, "terminate": true}).(map[string]any)
	if r["ok"] != "headers defaultdict(<class 'set'>, {'mtask_id': {'m8'}}) revoked" {
		t.Fatalf("revoke_by_stamped_headers terminate: %s", r)
	}
	if typ, msg := exc(f2.result("R", backends.StatusRevoked)); typ != "TaskRevokedError" || msg != "terminated" {
		t.Fatalf("R stored %v", f2.be.Doc("R"))
	}
	g2.Release()
	f2.result("S", backends.StatusSuccess)
}

// TestTaskRetriedEventException: task-retried carries repr() of the
// exception given to retry, as Celery's: RuntimeError('flaky'), or None.
func TestTaskRetriedEventException(t *testing.T) {
	t.Parallel()
	reg := tasks.NewRegistry()
	reg.MustRegister("t.flaky", func(ctx context.Context, withExc bool) (string, error) {
		if req, _ := tasks.RequestFromContext(ctx); req.Retries == 0 {
			if withExc {
				return "", tasks.Retry(tasks.Countdown(0), tasks.Exc(tasks.RuntimeError("flaky")))
			}
			return "", tasks.Retry(tasks.Countdown(0))
		}
		return "ok", nil
	}, tasks.Params("with_exc"))
	f := startWorker(t, reg, worker.Config{TaskEvents: true, WithoutHeartbeat: true})
	f.publish("with", "t.flaky", true)
	f.publish("without", "t.flaky", false)
	for id, want := range map[string]string{"with": "RuntimeError('flaky')", "without": "None"} {
		var ev map[string]any
		brokertest.WaitFor(t, patience, func() bool {
			for _, e := range f.b.Events() {
				if e["uuid"] == id && e["type"] == "task-retried" {
					ev = e
					return true
				}
			}
			return false
		}, "task-retried of "+id)
		if ev["exception"] != want {
			t.Errorf("%s: task-retried exception %v, want %s", id, ev["exception"], want)
		}
		f.result(id, backends.StatusSuccess)
	}
	// The retry message's argsrepr is a tuple's, as Celery's retry (through
	// a signature) writes it.
	if m := sentByID(t, f.b, "with"); m == nil || m.ArgsRepr != "(True,)" {
		t.Fatalf("retry message %+v", m)
	}
}
