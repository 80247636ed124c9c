package client_test

import (
	"context"
	"errors"
	"math/big"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/client"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
	"github.com/celeryworker/gocelery/tasks/conformance"
	"github.com/celeryworker/gocelery/worker"
)

// End to end: a gocelery worker serving the conformance set runs in this
// process against the real RabbitMQ and Redis (db 13); the client sends to
// it and reads results back through Redis.

type line struct {
	SKU        string `json:"sku"`
	Quantity   int64  `json:"qty"`
	PriceCents int64  `json:"price_cents"`
}

type orderTotal struct {
	Lines      int    `json:"lines"`
	TotalCents int64  `json:"total_cents"`
	Currency   string `json:"currency"`
}

type env struct {
	c     *client.Client
	rb    *backends.Redis
	queue string
	node  string
}

func startWorker(t *testing.T) *env {
	t.Helper()
	tr := newAMQP(t)
	rb := newRedis(t)
	queue := "gocelery-client-e2e-" + protocol.NewUUID()[:8]
	e := &env{rb: rb, queue: queue}

	reg := tasks.NewRegistry()
	if err := conformance.Register(reg); err != nil {
		t.Fatal(err)
	}
	// A typed Go task, called with a typed client handle.
	reg.MustRegister("e2e.total", func(ctx context.Context, lines []line, currency string) (orderTotal, error) {
		out := orderTotal{Lines: len(lines), Currency: strings.ToUpper(currency)}
		for _, l := range lines {
			out.TotalCents += l.Quantity * l.PriceCents
		}
		return out, nil
	}, tasks.Params("lines", "currency"))
	// A task that sends a task: the child reports its request.
	reg.MustRegister("e2e.spawn", func(ctx context.Context) (string, error) {
		r, err := e.c.SendTask(ctx, "gocelery.request", nil, nil)
		if err != nil {
			return "", err
		}
		return r.ID, nil
	})

	// A task that waits for a child and returns the child's failure as its own.
	reg.MustRegister("e2e.relay", func(ctx context.Context, exc string) (any, error) {
		r, err := e.c.SendTask(ctx, "gocelery.fail", []any{exc, "from the child"}, nil)
		if err != nil {
			return nil, err
		}
		return r.Get(ctx)
	}, tasks.Params("exc"))

	log := zerolog.Nop()
	w, err := worker.New(worker.Config{Broker: tr, Backend: rb, Registry: reg, Queues: []string{queue},
		DefaultQueue: queue, Concurrency: 8, NodeName: "e2e-" + queue[len(queue)-8:] + "@%h", Logger: &log})
	if err != nil {
		t.Fatal(err)
	}
	e.node = w.NodeName()
	ctx, stop := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- w.Run(ctx) }()
	select {
	case <-w.Ready():
	case err := <-stopped:
		t.Fatalf("worker stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("worker not ready after 30 s")
	}
	t.Cleanup(func() {
		stop()
		select {
		case <-stopped:
		case <-time.After(30 * time.Second):
			t.Error("worker did not stop")
			w.Close()
		}
		deleteQueue(t, queue)
	})

	c, err := client.New(context.Background(), client.Config{Broker: tr, Backend: rb, DefaultQueue: queue})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	e.c = c
	return e
}

func deleteQueue(t *testing.T, queue string) {
	conn, err := amqp091.Dial(testBrokerURL)
	if err != nil {
		t.Logf("cannot delete queue %s: %v", queue, err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	ch.QueueDelete(queue, false, false, false)
	ch.ExchangeDelete(queue, false, false)
}

func TestEndToEnd(t *testing.T) {
	e := startWorker(t)
	c := e.c

	t.Run("add", func(t *testing.T) {
		ctx := testCtx(t, 20*time.Second)
		if n, err := client.Call[int](ctx, c, "gocelery.add", 2, 3); err != nil || n != 5 {
			t.Errorf("add(2, 3) = %d, %v", n, err)
		}
		// Integers stay exact beyond float64.
		x := new(big.Int).Add(new(big.Int).Lsh(big.NewInt(1), 53), big.NewInt(1))
		r, err := c.SendTask(ctx, "gocelery.add", nil, map[string]any{"x": x, "y": 2})
		if err != nil {
			t.Fatal(err)
		}
		got, err := client.GetAs[*big.Int](ctx, r)
		if err != nil || got.String() != "9007199254740995" {
			t.Errorf("add(2**53+1, 2) = %v, %v", got, err)
		}
	})

	t.Run("typed Go task", func(t *testing.T) {
		ctx := testCtx(t, 20*time.Second)
		total := client.NewTask[orderTotal](c, "e2e.total")
		got, err := total.Call(ctx, []line{{"tea", 3, 450}, {"cup", 1, 900}}, "eur")
		if err != nil || got != (orderTotal{Lines: 2, TotalCents: 2250, Currency: "EUR"}) {
			t.Errorf("total = %+v, %v", got, err)
		}
	})

	t.Run("failure", func(t *testing.T) {
		ctx := testCtx(t, 20*time.Second)
		r, err := c.SendTask(ctx, "gocelery.fail", []any{"ValueError", "bad input"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = r.Get(ctx)
		var te *client.TaskError
		if !errors.As(err, &te) || te.Type != "ValueError" || te.Message != "bad input" || te.Traceback == "" {
			t.Fatalf("Get: %v (%+v)", err, te)
		}
		if failed, _ := r.Failed(ctx); !failed {
			t.Error("Failed false")
		}
	})

	t.Run("progress", func(t *testing.T) {
		ctx := testCtx(t, 20*time.Second)
		r, err := c.SendTask(ctx, "gocelery.progress", []any{3, 0.1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var seen []any
		m, err := r.Wait(ctx, func(m *client.Meta) {
			if m.State == "PROGRESS" {
				mu.Lock()
				seen = append(seen, m.Result)
				mu.Unlock()
			}
		})
		if err != nil || !m.Successful() || !equalJSON(t, m.Result, 3) {
			t.Fatalf("progress: %+v, %v", m, err)
		}
		if len(seen) == 0 || !equalJSON(t, seen[len(seen)-1], map[string]any{"current": 3, "total": 3}) {
			t.Errorf("PROGRESS updates %v", seen)
		}
	})

	t.Run("options", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		args := []any{"héllo ✓", big.NewInt(1 << 62), 1.5, nil, true, []any{1, "x"}}
		kw := map[string]any{"k": map[string]any{"nested": []any{}}}
		want := map[string]any{"args": args, "kwargs": kw}
		for name, opts := range map[string][]client.Option{
			"msgpack":  {client.Serializer("msgpack")},
			"zlib":     {client.Compression("zlib")},
			"both":     {client.Serializer("msgpack"), client.Compression("zlib")},
			"headers":  {client.Headers(map[string]any{"x-tenant": "acme"})},
			"shadow":   {client.Shadow("e2e.shadowed")},
			"priority": {client.Priority(5)},
			"exchange": {client.Exchange(e.queue), client.RoutingKey(e.queue)},
			"limits":   {client.TimeLimit(20 * time.Second), client.SoftTimeLimit(10 * time.Second)},
			"expires":  {client.Expires(time.Minute)},
		} {
			r, err := c.SendTask(ctx, "gocelery.echo", args, kw, opts...)
			if err != nil {
				t.Fatal(err)
			}
			got, err := r.Get(ctx)
			if err != nil || !equalJSON(t, got, want) {
				t.Errorf("%s: echo = %v, %v", name, got, err)
			}
		}
		// retries and routing, as the task's request sees them.
		r, err := c.SendTask(ctx, "gocelery.request", nil, nil, client.Retries(2))
		if err != nil {
			t.Fatal(err)
		}
		var req map[string]any
		if err := r.GetInto(ctx, &req); err != nil {
			t.Fatal(err)
		}
		if !equalJSON(t, req["retries"], 2) || req["routing_key"] != e.queue || req["hostname"] != e.node || req["root_id"] != r.ID {
			t.Errorf("request %v", req)
		}
	})

	t.Run("countdown and eta", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		start := time.Now()
		r1, err := c.SendTask(ctx, "gocelery.add", []any{1, 1}, nil, client.Countdown(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		r2, err := c.SendTask(ctx, "gocelery.add", []any{2, 2}, nil, client.ETA(time.Now().Add(time.Second)))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range []*client.AsyncResult{r1, r2} {
			m, err := r.Wait(ctx, nil)
			if err != nil || !m.Successful() || m.DateDone.Sub(start) < 900*time.Millisecond {
				t.Errorf("delayed task %+v, %v (after %v)", m, err, time.Since(start))
			}
		}
	})

	t.Run("expired", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		r, err := c.SendTask(ctx, "gocelery.add", []any{1, 1}, nil, client.Countdown(2*time.Second), client.Expires(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		_, err = r.Get(ctx)
		var te *client.TaskError
		if !errors.Is(err, client.ErrRevoked) || !errors.As(err, &te) || te.Message != "expired" {
			t.Errorf("expired task: %v", err)
		}
	})

	t.Run("time limits", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		hard, err := c.SendTask(ctx, "gocelery.sleep", []any{10}, nil, client.TimeLimit(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		soft, err := c.SendTask(ctx, "gocelery.sleep", []any{10}, nil, client.SoftTimeLimit(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for r, want := range map[*client.AsyncResult]string{hard: "TimeLimitExceeded", soft: "SoftTimeLimitExceeded"} {
			_, err := r.Get(ctx)
			var te *client.TaskError
			if !errors.As(err, &te) || te.Type != want {
				t.Errorf("%s: %v", want, err)
			}
		}
	})

	t.Run("ignore_result and link", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		cbID := protocol.NewUUID()
		r, err := c.SendTask(ctx, "gocelery.add", []any{2, 3}, nil, client.IgnoreResult(),
			client.Link(client.S("gocelery.echo", "cb").Set(client.TaskID(cbID))))
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.AsyncResult(cbID).Get(ctx)
		if err != nil || !equalJSON(t, got, map[string]any{"args": []any{5, "cb"}, "kwargs": map[string]any{}}) {
			t.Errorf("callback: %v, %v", got, err)
		}
		if s, _ := c.AsyncResult(r.ID).State(ctx); s != client.StatePending {
			t.Errorf("ignored result stored: %s", s)
		}
	})

	t.Run("link_error", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		ebID := protocol.NewUUID()
		r, err := c.SendTask(ctx, "gocelery.fail", []any{"KeyError", "gone"}, nil,
			client.LinkError(client.S("gocelery.limited").Set(client.TaskID(ebID))))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Get(ctx); err == nil {
			t.Error("fail succeeded")
		}
		// An old-style errback gets the failed task's id.
		if got, err := c.AsyncResult(ebID).Get(ctx); err != nil || got != r.ID {
			t.Errorf("errback: %v, %v", got, err)
		}
	})

	t.Run("revoke terminate", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		r, err := c.SendTask(ctx, "gocelery.sleep", []any{30}, nil)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if err := r.Revoke(ctx, true); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Get(ctx); !errors.Is(err, client.ErrRevoked) {
			t.Errorf("revoked task: %v", err)
		}
		// Revoked before it arrives: never runs.
		id := protocol.NewUUID()
		if err := c.Revoke(ctx, []string{id}, client.RevokeOptions{}); err != nil {
			t.Fatal(err)
		}
		r2, err := c.SendTask(ctx, "gocelery.add", []any{1, 1}, nil, client.TaskID(id))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r2.Get(ctx); !errors.Is(err, client.ErrRevoked) {
			t.Errorf("task revoked before it was sent: %v", err)
		}
	})

	t.Run("chain", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		r, err := c.Apply(ctx, client.Chain(client.S("gocelery.add", 1, 2), client.S("gocelery.add", 3), client.S("gocelery.add", 4)))
		if err != nil {
			t.Fatal(err)
		}
		if n, err := client.GetAs[int](ctx, r); err != nil || n != 10 {
			t.Errorf("chain = %d, %v", n, err)
		}
		if v, err := r.Parent.Get(ctx); err != nil || !equalJSON(t, v, 6) {
			t.Errorf("chain's middle step = %v, %v", v, err)
		}
		// A failing step fails the rest of the chain.
		r, err = c.Apply(ctx, client.Chain(client.S("gocelery.add", 1, 2), client.SI("gocelery.fail", "ValueError", "mid"), client.S("gocelery.add", 4)))
		if err != nil {
			t.Fatal(err)
		}
		var te *client.TaskError
		if _, err := r.Get(ctx); !errors.As(err, &te) || te.Type != "ValueError" {
			t.Errorf("chain with a failure: %v", err)
		}
	})

	t.Run("group", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		var members []*client.Signature
		for i := range 6 {
			members = append(members, client.S("gocelery.add", i, i))
		}
		g, err := c.ApplyGroup(ctx, client.Group(members...))
		if err != nil {
			t.Fatal(err)
		}
		var got []int
		if err := g.JoinInto(ctx, &got); err != nil || !reflect.DeepEqual(got, []int{0, 2, 4, 6, 8, 10}) {
			t.Errorf("group = %v, %v", got, err)
		}
		if n, _ := g.CompletedCount(ctx); n != 6 {
			t.Errorf("completed %d", n)
		}
	})

	t.Run("chord", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		var header []*client.Signature
		for i := range 5 {
			header = append(header, client.S("gocelery.add", i, i))
		}
		r, err := c.Apply(ctx, client.Chord(header, client.S("gocelery.xsum")))
		if err != nil {
			t.Fatal(err)
		}
		if n, err := client.GetAs[int](ctx, r); err != nil || n != 20 {
			t.Errorf("chord = %d, %v", n, err)
		}
		if vals, err := r.Header.Join(ctx); err != nil || !equalJSON(t, vals, []any{0, 2, 4, 6, 8}) {
			t.Errorf("chord header = %v, %v", vals, err)
		}
		// group | step in a chain is a chord the worker sends.
		r, err = c.Apply(ctx, client.Chain(client.S("gocelery.add", 1, 1),
			client.Group(client.S("gocelery.add", 10), client.S("gocelery.add", 20)), client.S("gocelery.xsum")))
		if err != nil {
			t.Fatal(err)
		}
		if n, err := client.GetAs[int](ctx, r); err != nil || n != 34 {
			t.Errorf("chain into chord = %d, %v", n, err)
		}
	})

	t.Run("task sends task", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		check := func(parent *client.AsyncResult, wantRoot string) {
			t.Helper()
			childID, err := client.GetAs[string](ctx, parent)
			if err != nil {
				t.Fatal(err)
			}
			var req map[string]any
			if err := c.AsyncResult(childID).GetInto(ctx, &req); err != nil {
				t.Fatal(err)
			}
			if req["parent_id"] != parent.ID || req["root_id"] != wantRoot {
				t.Errorf("child request %v: want parent %s root %s", req, parent.ID, wantRoot)
			}
		}
		top, err := c.SendTask(ctx, "e2e.spawn", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		check(top, top.ID)
		// Deeper in a workflow the root is the workflow's first task.
		r, err := c.Apply(ctx, client.Chain(client.SI("gocelery.noop"), client.SI("e2e.spawn")))
		if err != nil {
			t.Fatal(err)
		}
		check(r, r.Parent.ID)

		// A child's failure returned by the parent is the parent's failure,
		// with the same Python exception.
		relay, err := c.SendTask(ctx, "e2e.relay", []any{"KeyError"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		var te *client.TaskError
		if _, err := relay.Get(ctx); !errors.As(err, &te) || te.Type != "KeyError" || !equalJSON(t, te.Args, []any{"from the child"}) {
			t.Errorf("relayed failure: %v", err)
		}
	})
}

func TestEndToEndQueueDeclared(t *testing.T) {
	// Sending to a queue nobody declared yet: the client declares it as
	// kombu does, so the message waits there.
	tr := newAMQP(t)
	c, err := client.New(context.Background(), client.Config{Broker: tr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	queue := "gocelery-client-declare-" + protocol.NewUUID()[:8]
	defer deleteQueue(t, queue)
	if _, err := c.SendTask(context.Background(), "x", nil, nil, client.Queue(queue)); err != nil {
		t.Fatal(err)
	}
	conn, err := amqp091.Dial(testBrokerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, _ := conn.Channel()
	// Passive declarations fail unless both exist as kombu declares them.
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil || q.Messages != 1 {
		t.Fatalf("queue %s: %+v, %v", queue, q, err)
	}
	if err := ch.ExchangeDeclarePassive(queue, "direct", true, false, false, false, nil); err != nil {
		t.Fatalf("exchange %s: %v", queue, err)
	}
	// Revoke with no worker ever started still works: the client declares
	// the pidbox exchange as kombu does.
	if err := c.Revoke(context.Background(), []string{"nobody"}, client.RevokeOptions{}); err != nil {
		t.Errorf("revoke: %v", err)
	}
}
