package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/amqp"
	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
	"github.com/celeryworker/gocelery/worker"
)

// These tests run the worker against the real RabbitMQ and Redis that
// scripts/services.sh starts on loopback.

func brokerURL() string {
	if u := os.Getenv("GOCELERY_TEST_BROKER"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672//"
}

const backendURL = "redis://127.0.0.1:6379/14"

// checkFor polls f until it returns nil or the timeout passes.
func checkFor(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type env struct {
	t         *testing.T
	queue     string
	backend   *backends.Redis
	transport *amqp.Transport
	conn      broker.Conn
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr, err := amqp.NewTransport(amqp.Params{URL: brokerURL()})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tr.Dial(ctx, broker.DialParams{Name: "worker-test"})
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("RabbitMQ not reachable (run scripts/services.sh): %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	be, err := backends.NewRedis(backends.RedisParams{URL: backendURL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	if err := be.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, queue: fmt.Sprintf("worker-test-%d", time.Now().UnixNano()), backend: be, transport: tr, conn: conn}
}

func (e *env) start(reg *tasks.Registry, cfg worker.Config) *worker.Worker {
	e.t.Helper()
	cfg.Broker = e.transport
	cfg.Queues = []string{e.queue}
	cfg.Registry = reg
	cfg.Backend = e.backend
	if cfg.NodeName == "" {
		cfg.NodeName = "test@%h"
	}
	w, err := worker.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(context.Background()) }()
	select {
	case <-w.Ready():
	case err := <-done:
		e.t.Fatalf("worker stopped before it was ready: %v", err)
	case <-time.After(15 * time.Second):
		e.t.Fatal("worker not ready after 15s")
	}
	e.t.Cleanup(func() {
		w.Close()
		<-done
	})
	return w
}

func (e *env) publish(id, name string, args []any, kwargs map[string]any) {
	e.t.Helper()
	m := &protocol.Message{ID: id, Task: name, Args: args, Kwargs: kwargs, RootID: id}
	env, err := protocol.Encode(m, protocol.EncodeOptions{Serializer: "json"})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.conn.PublishTask(ctx, broker.Route{RoutingKey: e.queue}, env); err != nil {
		e.t.Fatal(err)
	}
}

// result waits for a ready result document of id.
func (e *env) result(id string) map[string]any {
	e.t.Helper()
	var doc map[string]any
	checkFor(e.t, 20*time.Second, func() error {
		b, err := e.backend.Get(context.Background(), id)
		if err != nil {
			return err
		}
		if b == nil {
			return errors.New("no result yet for " + id)
		}
		doc = nil
		if err := json.Unmarshal(b, &doc); err != nil {
			return err
		}
		if !backends.Ready(doc["status"].(string)) {
			return fmt.Errorf("state %v", doc["status"])
		}
		return nil
	})
	return doc
}

func newID(t *testing.T, tag string) string {
	return fmt.Sprintf("%s-%s-%d", t.Name(), tag, time.Now().UnixNano())
}

func TestTypedFunctionThroughWorker(t *testing.T) {
	e := newEnv(t)
	reg := tasks.NewRegistry()
	reg.MustRegister("t.add", func(ctx context.Context, x, y int) (int, error) { return x + y, nil }, tasks.Params("x", "y"))
	e.start(reg, worker.Config{Concurrency: 2})
	id := newID(t, "add")
	e.publish(id, "t.add", []any{int64(40)}, map[string]any{"y": int64(2)})
	doc := e.result(id)
	if doc["status"] != "SUCCESS" || doc["result"] != float64(42) {
		t.Fatalf("got %v", doc)
	}
	bad := newID(t, "bad")
	e.publish(bad, "t.add", []any{"x", int64(2)}, nil)
	doc = e.result(bad)
	exc, _ := doc["result"].(map[string]any)
	if doc["status"] != "FAILURE" || exc["exc_type"] != "TypeError" {
		t.Fatalf("got %v", doc)
	}
}

func TestPanicBecomesFailureWithStack(t *testing.T) {
	e := newEnv(t)
	reg := tasks.NewRegistry()
	reg.MustRegister("t.panic", func() error { panic("kaboom") })
	reg.MustRegister("t.ok", func() string { return "ok" })
	e.start(reg, worker.Config{Concurrency: 1})
	id := newID(t, "panic")
	e.publish(id, "t.panic", nil, nil)
	doc := e.result(id)
	exc, _ := doc["result"].(map[string]any)
	tb, _ := doc["traceback"].(string)
	if doc["status"] != "FAILURE" || exc["exc_type"] != "RuntimeError" || !strings.Contains(fmt.Sprint(exc["exc_message"]), "kaboom") {
		t.Fatalf("got %v", doc)
	}
	if !strings.Contains(tb, "worker_test.go") {
		t.Fatalf("traceback has no stack pointing at the panic:\n%s", tb)
	}
	ok := newID(t, "ok")
	e.publish(ok, "t.ok", nil, nil)
	if doc := e.result(ok); doc["result"] != "ok" {
		t.Fatalf("worker did not keep serving: %v", doc)
	}
}

func TestSkipSucceededDuplicate(t *testing.T) {
	e := newEnv(t)
	var runs atomic.Int64
	reg := tasks.NewRegistry()
	reg.MustRegister("t.once", func(ctx context.Context) (int64, error) { return runs.Add(1), nil }, tasks.SkipSucceeded())
	reg.MustRegister("t.marker", func() bool { return true })
	// One slot, prefetch 1: the marker is delivered only after the
	// duplicate was handled and acknowledged.
	e.start(reg, worker.Config{Concurrency: 1, PrefetchMultiplier: 1})
	id := newID(t, "once")
	e.publish(id, "t.once", nil, nil)
	if doc := e.result(id); doc["result"] != float64(1) {
		t.Fatalf("got %v", doc)
	}
	e.publish(id, "t.once", nil, nil) // duplicate publish of a succeeded task
	marker := newID(t, "marker")
	e.publish(marker, "t.marker", nil, nil)
	e.result(marker)
	if n := runs.Load(); n != 1 {
		t.Fatalf("task ran %d times, want 1", n)
	}
}

func TestAcksLateRedeliveredAfterWorkerLoss(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	defer close(release)
	var calls atomic.Int64
	reg := tasks.NewRegistry()
	reg.MustRegister("t.late", func(ctx context.Context) (bool, error) {
		req, _ := tasks.RequestFromContext(ctx)
		if calls.Add(1) == 1 {
			<-release // the first worker is lost while this runs
		}
		return req.DeliveryInfo.Redelivered, nil
	}, tasks.AcksLate())
	w1 := e.start(reg, worker.Config{Concurrency: 1})
	id := newID(t, "late")
	e.publish(id, "t.late", nil, nil)
	checkFor(t, 10*time.Second, func() error {
		if calls.Load() == 0 {
			return errors.New("task not started")
		}
		return nil
	})
	w1.Close() // unacknowledged: the broker requeues it
	e.start(reg, worker.Config{Concurrency: 1, NodeName: "second@%h"})
	doc := e.result(id)
	if doc["status"] != "SUCCESS" || doc["result"] != true {
		t.Fatalf("want SUCCESS with redelivered=true, got %v", doc)
	}
}

func TestHardTimeLimitAbandonsGoroutine(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	reg := tasks.NewRegistry()
	reg.MustRegister("t.stuck", func() { <-release }, tasks.TimeLimit(200*time.Millisecond))
	w := e.start(reg, worker.Config{Concurrency: 1})
	id := newID(t, "stuck")
	e.publish(id, "t.stuck", nil, nil)
	doc := e.result(id)
	exc, _ := doc["result"].(map[string]any)
	if doc["status"] != "FAILURE" || exc["exc_type"] != "TimeLimitExceeded" {
		t.Fatalf("got %v", doc)
	}
	if n := w.Abandoned(); n != 1 {
		t.Fatalf("Abandoned() = %d, want 1", n)
	}
	close(release)
	checkFor(t, 5*time.Second, func() error {
		if n := w.Abandoned(); n != 0 {
			return fmt.Errorf("Abandoned() = %d after the goroutine returned", n)
		}
		return nil
	})
}

func TestShutdownWaitsForRunningTasks(t *testing.T) {
	e := newEnv(t)
	started := make(chan struct{})
	reg := tasks.NewRegistry()
	reg.MustRegister("t.slow", func(ctx context.Context) (string, error) {
		close(started)
		time.Sleep(300 * time.Millisecond)
		return "done", nil
	})
	w := e.start(reg, worker.Config{Concurrency: 1})
	id := newID(t, "slow")
	e.publish(id, "t.slow", nil, nil)
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := e.backend.Get(context.Background(), id)
	if err != nil || !strings.Contains(string(b), `"status": "SUCCESS"`) {
		t.Fatalf("result not stored before Shutdown returned: %s %v", b, err)
	}
}

// closeBrokerConnection makes RabbitMQ close the connection whose
// connection_name is name, as a broker restart or a network cut would.
func closeBrokerConnection(t *testing.T, name string) {
	t.Helper()
	var pid string
	checkFor(t, 10*time.Second, func() error {
		out, err := exec.Command("rabbitmqctl", "-n", "rabbit@localhost", "-q", "list_connections", "pid", "client_properties").CombinedOutput()
		if err != nil {
			return fmt.Errorf("rabbitmqctl: %v: %s", err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, name) {
				pid = strings.Fields(line)[0]
				return nil
			}
		}
		return fmt.Errorf("no connection named %s", name)
	})
	if out, err := exec.Command("rabbitmqctl", "-n", "rabbit@localhost", "-q", "close_connection", pid, "test: simulated broker loss").CombinedOutput(); err != nil {
		t.Fatalf("close_connection: %v: %s", err, out)
	}
}

func TestReconnectsAfterConnectionLoss(t *testing.T) {
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		t.Skip("rabbitmqctl not installed")
	}
	e := newEnv(t)
	reg := tasks.NewRegistry()
	reg.MustRegister("t.echo", func(s string) string { return s })
	node := fmt.Sprintf("reconnect-%d@test", time.Now().UnixNano())
	e.start(reg, worker.Config{Concurrency: 2, NodeName: node})
	before := newID(t, "before")
	e.publish(before, "t.echo", []any{"before"}, nil)
	e.result(before)
	closeBrokerConnection(t, node)
	after := newID(t, "after")
	e.publish(after, "t.echo", []any{"after"}, nil)
	if doc := e.result(after); doc["result"] != "after" {
		t.Fatalf("after reconnect: %v", doc)
	}
}

func TestConsumesSeveralQueues(t *testing.T) {
	e := newEnv(t)
	reg := tasks.NewRegistry()
	reg.MustRegister("t.echo", func(s string) string { return s })
	second := e.queue + "-b"
	cfg := worker.Config{Concurrency: 2, Broker: e.transport, Queues: []string{e.queue, second},
		Registry: reg, Backend: e.backend, NodeName: "multi@%h"}
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(context.Background()) }()
	defer func() { w.Close(); <-done }()
	<-w.Ready()
	for _, q := range []string{e.queue, second} {
		id := newID(t, q)
		m := &protocol.Message{ID: id, Task: "t.echo", Args: []any{q}}
		env, _ := protocol.Encode(m, protocol.EncodeOptions{Serializer: "msgpack"})
		if err := e.conn.PublishTask(context.Background(), broker.Route{RoutingKey: q}, env); err != nil {
			t.Fatal(err)
		}
		if doc := e.result(id); doc["result"] != q {
			t.Fatalf("queue %s: %v", q, doc)
		}
	}
}

func TestCloseFailsAcknowledgedRunningTasks(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	defer close(release)
	started := make(chan struct{}, 1)
	reg := tasks.NewRegistry()
	reg.MustRegister("t.block", func() { started <- struct{}{}; <-release })
	w := e.start(reg, worker.Config{Concurrency: 1})
	id := newID(t, "block")
	e.publish(id, "t.block", nil, nil)
	<-started
	w.Close() // cold: the message was acked before it ran
	doc := e.result(id)
	exc, _ := doc["result"].(map[string]any)
	if doc["status"] != "FAILURE" || exc["exc_type"] != "WorkerLostError" {
		t.Fatalf("got %v", doc)
	}
}
