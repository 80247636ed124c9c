package cli

import (
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/broker/brokertest"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
	"github.com/celeryworker/gocelery/tasks/conformance"
	"github.com/celeryworker/gocelery/worker"
)

// The producer commands (call, result, inspect, control, status) run here
// against an in-memory broker (brokertest, which answers remote control
// calls too) with an in-process worker serving the conformance tasks, and
// the test Redis (db 12) for results.

const cmdRedisURL = "redis://127.0.0.1:6379/12"

var producer = Program{Name: "gocelery", Version: "test"}

// memBroker makes the producer commands dial an in-memory broker for the
// rest of the test.
func memBroker(t *testing.T) *brokertest.Broker {
	t.Helper()
	b := brokertest.New()
	saved := newTransport
	newTransport = func(string, string) (broker.Transport, error) { return b, nil }
	t.Cleanup(func() { newTransport = saved })
	return b
}

// memWorker runs a worker serving the conformance tasks on b and queue,
// storing results in rb (nil: none). It returns the worker's node name.
func memWorker(t *testing.T, b *brokertest.Broker, queue string, rb *backends.Redis) string {
	t.Helper()
	reg := tasks.NewRegistry()
	if err := conformance.Register(reg); err != nil {
		t.Fatal(err)
	}
	node := uniq("cmdtest-") + "@localhost"
	cfg := worker.Config{Broker: b, Registry: reg, Queues: []string{queue}, Concurrency: 4,
		NodeName: node, WithoutHeartbeat: true}
	if rb != nil {
		cfg.Backend = rb
	}
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("worker did not stop")
		}
	})
	select {
	case <-w.Ready():
	case err := <-done:
		t.Fatalf("worker stopped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("worker not ready")
	}
	return node
}

// testRedis connects to the test Redis; the result keys of the ids
// returned by track are deleted when the test ends.
func testRedis(t *testing.T) (rb *backends.Redis, track func(id string)) {
	t.Helper()
	needService(t, "127.0.0.1:6379")
	rb, err := backends.NewRedis(backends.RedisParams{URL: cmdRedisURL})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	t.Cleanup(func() {
		for _, id := range ids {
			rb.Client().Del(context.Background(), rb.Key(id))
		}
		rb.Close()
	})
	return rb, func(id string) { ids = append(ids, id) }
}

func applyOpts(t *testing.T, args ...string) (string, []any, map[string]any, map[string]any) {
	t.Helper()
	_, name, a, k, opts, err := parseCall("gocelery", args)
	if err != nil {
		t.Fatalf("%q: %v", args, err)
	}
	o := map[string]any{}
	for _, f := range opts {
		f(o)
	}
	return name, a, k, o
}

func TestParseCall(t *testing.T) {
	name, a, k, o := applyOpts(t, "proj.add", "--args", `[2, 3, 9007199254740993]`, "-k", `{"x": {"y": [1.5]}}`,
		"--queue", "q", "--countdown", "2.5", "--expires", "60", "--priority", "7", "--serializer", "msgpack",
		"--time-limit", "10", "--soft-time-limit", "5")
	if name != "proj.add" {
		t.Errorf("name %q", name)
	}
	// Integers stay exact (no float64 on the way).
	if raw, _ := protocol.MarshalJSON(a); string(raw) != "[2, 3, 9007199254740993]" {
		t.Errorf("args %s", raw)
	}
	if raw, _ := protocol.MarshalJSON(k); string(raw) != `{"x": {"y": [1.5]}}` {
		t.Errorf("kwargs %s", raw)
	}
	want := map[string]any{"queue": "q", "countdown": 2.5, "expires": 60.0, "priority": int64(7),
		"serializer": "msgpack", "time_limit": int64(10), "soft_time_limit": int64(5)}
	if !reflect.DeepEqual(o, want) {
		t.Errorf("options\n got %#v\nwant %#v", o, want)
	}

	_, a, k, o = applyOpts(t, "t", "--eta", "2030-01-02T03:04:05", "--expires", "2030-01-03T00:00:00+02:00",
		"--exchange", "ex", "--routing-key", "rk")
	if len(a) != 0 || len(k) != 0 {
		t.Errorf("defaults: args %v kwargs %v", a, k)
	}
	eta, _ := o["eta"].(time.Time)
	exp, _ := o["expires"].(time.Time)
	if !eta.Equal(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)) || !exp.Equal(time.Date(2030, 1, 2, 22, 0, 0, 0, time.UTC)) {
		t.Errorf("eta %v expires %v (naive means UTC)", eta, exp)
	}
	if o["exchange"] != "ex" || o["routing_key"] != "rk" || o["serializer"] != "json" {
		t.Errorf("options %v", o)
	}
}

func TestCallUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"call"}, "missing the task NAME"},
		{[]string{"call", "a", "b"}, `unexpected argument "b"`},
		{[]string{"call", "t", "--args", "[1,"}, "--args"},
		{[]string{"call", "t", "--args", `{"a": 1}`}, "--args must be a JSON array"},
		{[]string{"call", "t", "--kwargs", "[1]"}, "--kwargs must be a JSON object"},
		{[]string{"call", "t", "--priority", "300"}, "--priority"},
		{[]string{"call", "t", "--countdown", "-1"}, "--countdown"},
		{[]string{"call", "t", "--eta", "tomorrow"}, "--eta"},
		{[]string{"call", "t", "--expires", "soon"}, "--expires"},
		{[]string{"call", "t", "--exchange", "x"}, "--routing-key"},
		{[]string{"call", "t", "--serializer", "pickle"}, "--serializer"},
		{[]string{"call", "t", "--timeout", "5"}, "--wait"},
		{[]string{"call", "t", "--nope"}, "--nope"},
	} {
		code, out, errb := run(t, producer, c.args...)
		if code != 2 || out != "" || !strings.Contains(errb, c.want) || !strings.Contains(errb, "gocelery call -h") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2 and %q", c.args, code, out, errb, c.want)
		}
	}
	for _, args := range [][]string{{"call", "-h"}, {"help", "call"}} {
		code, out, _ := run(t, producer, args...)
		if code != 0 || !strings.Contains(out, "usage: gocelery [global options] call NAME") || !strings.Contains(out, "--countdown") {
			t.Errorf("%q: exit %d, %q", args, code, out)
		}
	}
}

// call publishes the message Celery's send_task would and prints the id.
func TestCallSends(t *testing.T) {
	b := memBroker(t)
	code, out, errb := run(t, producer, "call", "gocelery.add", "--args", "[2, 3]", "--queue", "q1",
		"--countdown", "30", "--priority", "3")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb)
	}
	id := strings.TrimSpace(out)
	msgs := b.Messages("q1")
	if len(msgs) != 1 {
		t.Fatalf("%d messages in q1", len(msgs))
	}
	m, err := protocol.Decode(msgs[0], protocol.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != id || m.Task != "gocelery.add" || m.ETA == nil || msgs[0].Priority != 3 {
		t.Errorf("message %+v (priority %d), printed id %q", m, msgs[0].Priority, id)
	}
	if raw, _ := protocol.MarshalJSON(m.Args); string(raw) != "[2, 3]" {
		t.Errorf("args %s", raw)
	}

	// --json prints the id as a JSON object.
	code, out, _ = run(t, producer, "call", "gocelery.noop", "--queue", "q1", "--json")
	var doc map[string]string
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || doc["task_id"] == "" {
		t.Errorf("--json: exit %d, %q", code, out)
	}
}

// The broker and backend come from the command's flag, else the global
// option, else the environment, else Celery's defaults.
func TestConnFlagsResolve(t *testing.T) {
	t.Setenv("CELERY_BROKER_URL", "amqp://env//")
	t.Setenv("CELERY_RESULT_BACKEND", "redis://env/1")
	f := connFlags{}
	f.resolve(nil)
	if f.broker != "amqp://env//" || f.backend != "redis://env/1" {
		t.Errorf("env: %+v", f)
	}
	f = connFlags{}
	f.resolve(&globals{broker: "amqp://global//", backend: "redis://global/2"})
	if f.broker != "amqp://global//" || f.backend != "redis://global/2" {
		t.Errorf("globals: %+v", f)
	}
	f = connFlags{broker: "amqp://flag//"}
	f.resolve(&globals{broker: "amqp://global//"})
	if f.broker != "amqp://flag//" || f.backend != "redis://env/1" {
		t.Errorf("flag: %+v", f)
	}
	t.Setenv("CELERY_BROKER_URL", "")
	t.Setenv("CELERY_RESULT_BACKEND", "")
	f = connFlags{}
	f.resolve(nil)
	if f.broker != defaultBroker || f.backend != defaultBackend {
		t.Errorf("defaults: %+v", f)
	}
}

// A broker or backend that cannot be used ends the command with exit
// status 1 and one line naming the flag, without the password.
func TestCallMisconfigured(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"call", "t", "-b", "redis://u:Secr3tPw@localhost:6379/0"}, "fix -b/--broker (CELERY_BROKER_URL)"},
		{[]string{"-b", "amqp://u:Secr3tPw@127.0.0.1:1//", "call", "t"}, "fix -b/--broker (CELERY_BROKER_URL)"},
		{[]string{"call", "t", "--wait", "--result-backend", "mongodb://u:Secr3tPw@h/0"}, "fix --result-backend (CELERY_RESULT_BACKEND)"},
		{[]string{"call", "t", "--wait", "--result-backend", "redis://:Secr3tPw@127.0.0.1:1/0"}, "fix --result-backend (CELERY_RESULT_BACKEND)"},
		{[]string{"result", "x", "--result-backend", "redis://:Secr3tPw@127.0.0.1:1/0"}, "fix --result-backend (CELERY_RESULT_BACKEND)"},
		{[]string{"inspect", "ping", "-b", "amqp://u:Secr3tPw@127.0.0.1:1//"}, "fix -b/--broker (CELERY_BROKER_URL)"},
	} {
		start := time.Now()
		code, out, errb := run(t, producer, c.args...)
		lines := strings.Split(strings.TrimSpace(errb), "\n")
		if code != 1 || out != "" || len(lines) != 1 || !strings.Contains(errb, c.want) || strings.Contains(errb, "Secr3tPw") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 1 and one line with %q", c.args, code, out, errb, c.want)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%q: took %v", c.args, d)
		}
	}
}

// call --wait prints the id, then the result; the exit status is the
// outcome.
func TestCallWait(t *testing.T) {
	rb, track := testRedis(t)
	b := memBroker(t)
	memWorker(t, b, "qw", rb)
	wait := func(args ...string) (int, []string, string) {
		t.Helper()
		args = append([]string{"call"}, append(args, "--queue", "qw", "--wait", "--timeout", "20", "--result-backend", cmdRedisURL)...)
		code, out, errb := run(t, producer, args...)
		lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
		var doc struct {
			TaskID string `json:"task_id"`
		}
		if json.Unmarshal([]byte(lines[0]), &doc) == nil {
			track(doc.TaskID)
		} else {
			track(lines[0])
		}
		return code, lines, errb
	}
	code, lines, errb := wait("gocelery.add", "--args", "[2, 3]")
	if code != 0 || len(lines) != 2 || len(lines[0]) != 36 || lines[1] != "5" {
		t.Errorf("add: exit %d, stdout %q, stderr %q", code, lines, errb)
	}
	code, lines, _ = wait("gocelery.echo", "--args", `["a", null]`, "--kwargs", `{"k": 1.5}`)
	if code != 0 || len(lines) != 2 || lines[1] != `{"args": ["a", null], "kwargs": {"k": 1.5}}` {
		t.Errorf("echo: exit %d, stdout %q", code, lines)
	}
	code, lines, _ = wait("gocelery.fail", "--args", `["ValueError", "boom"]`)
	if code != 1 || len(lines) != 2 || lines[1] != "ValueError: boom" {
		t.Errorf("fail: exit %d, stdout %q", code, lines)
	}
	code, lines, _ = wait("gocelery.fail", "--args", `["ValueError", "boom"]`, "--traceback")
	if code != 1 || !strings.Contains(strings.Join(lines, "\n"), "boom") {
		t.Errorf("fail --traceback: exit %d, stdout %q", code, lines)
	}
	// Without a terminal, each PROGRESS state is one line.
	code, lines, _ = wait("gocelery.progress", "--args", "[2, 0.05]")
	if code != 0 || lines[len(lines)-1] != "2" || !slices.Contains(lines, `PROGRESS {"current": 2, "total": 2}`) {
		t.Errorf("progress: exit %d, stdout %q", code, lines)
	}
	// --json: every line a document.
	code, lines, _ = wait("gocelery.add", "--args", "[1, 1]", "--json")
	var last map[string]any
	if code != 0 || len(lines) != 2 || json.Unmarshal([]byte(lines[1]), &last) != nil || last["status"] != "SUCCESS" || last["result"] != 2.0 {
		t.Errorf("--json: exit %d, stdout %q", code, lines)
	}
	// Nobody consumes this queue: --timeout passes, exit 3.
	code, out, errb := run(t, producer, "call", "gocelery.add", "--args", "[1, 1]", "--queue", "nobody",
		"--wait", "--timeout", "0.3", "--result-backend", cmdRedisURL)
	if code != exitNotReady || !strings.Contains(errb, "still PENDING") {
		t.Errorf("timeout: exit %d, stdout %q, stderr %q", code, out, errb)
	}
}
