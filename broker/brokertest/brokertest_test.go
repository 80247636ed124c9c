package brokertest_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/broker/brokertest"
	"github.com/celeryworker/gocelery/protocol"
)

const wait = 5 * time.Second

var ctx = context.Background()

func env(id string) *protocol.Envelope {
	return &protocol.Envelope{ContentType: "application/json", Headers: map[string]any{"id": id}, Body: []byte(`[[],{},{}]`)}
}

func dial(t *testing.T, b *brokertest.Broker) broker.Conn {
	t.Helper()
	c, err := b.Dial(ctx, broker.DialParams{Name: "w@test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func consume(t *testing.T, c broker.Conn, prefetch int, queues ...string) <-chan broker.Delivery {
	t.Helper()
	for _, q := range queues {
		if err := c.DeclareQueue(ctx, broker.NewQueue(q)); err != nil {
			t.Fatal(err)
		}
	}
	ch, err := c.Consume(ctx, queues, prefetch)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func recv(t *testing.T, ch <-chan broker.Delivery) broker.Delivery {
	t.Helper()
	select {
	case d, ok := <-ch:
		if !ok {
			t.Fatal("delivery channel closed")
		}
		return d
	case <-time.After(wait):
		t.Fatal("no delivery")
	}
	return nil
}

func id(d broker.Delivery) string { return d.Envelope().Headers["id"].(string) }

// drained fails unless ch is closed, any deliveries left in it first.
func drained(t *testing.T, ch <-chan broker.Delivery) {
	t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatal("delivery channel not closed")
		}
	}
}

func TestPrefetchWindow(t *testing.T) {
	for _, tc := range []struct {
		prefetch, raise int
		wantHeld        int // handed out before any ack
		wantAfter       int // after SetPrefetch(raise)
	}{
		{prefetch: 0, raise: 0, wantHeld: 5, wantAfter: 5},
		{prefetch: 1, raise: 3, wantHeld: 1, wantAfter: 3},
		{prefetch: 2, raise: 0, wantHeld: 2, wantAfter: 5},
		{prefetch: 4, raise: 2, wantHeld: 4, wantAfter: 4}, // lowering revokes nothing
	} {
		t.Run(fmt.Sprintf("%d->%d", tc.prefetch, tc.raise), func(t *testing.T) {
			b := brokertest.New()
			for i := range 5 {
				b.Publish("q", env(fmt.Sprint(i)))
			}
			c := dial(t, b)
			ch := consume(t, c, tc.prefetch, "q")
			if b.Prefetch() != tc.prefetch || b.Unacked() != tc.wantHeld || b.Len("q") != 5-tc.wantHeld {
				t.Fatalf("prefetch %d unacked %d ready %d", b.Prefetch(), b.Unacked(), b.Len("q"))
			}
			var got []broker.Delivery
			for range tc.wantHeld {
				got = append(got, recv(t, ch))
			}
			if err := c.SetPrefetch(tc.raise); err != nil {
				t.Fatal(err)
			}
			if b.Prefetch() != tc.raise || b.Unacked() != tc.wantAfter {
				t.Fatalf("after SetPrefetch(%d): prefetch %d unacked %d", tc.raise, b.Prefetch(), b.Unacked())
			}
			for _, d := range got { // settling frees the window for the rest
				d.Ack()
			}
			for range 5 - len(got) {
				recv(t, ch).Ack()
			}
			if len(b.Acked()) != 5 || b.Unacked() != 0 || b.Len("q") != 0 {
				t.Fatalf("acked %v unacked %d", b.Acked(), b.Unacked())
			}
		})
	}
}

func TestRoundRobinAndFIFO(t *testing.T) {
	b := brokertest.New()
	for i := range 3 {
		b.Publish("a", env(fmt.Sprint("a", i)))
	}
	b.Publish("b", env("b0"))
	ch := consume(t, dial(t, b), 0, "a", "b", "empty")
	var ids []string
	for range 4 {
		ids = append(ids, id(recv(t, ch)))
	}
	if want := []string{"a0", "b0", "a1", "a2"}; !slices.Equal(ids, want) {
		t.Fatalf("order %v, want %v", ids, want)
	}
}

func TestRouting(t *testing.T) {
	for _, tc := range []struct {
		route broker.Route
		want  string // queue, "" for dropped
	}{
		{broker.Route{RoutingKey: "new"}, "new"},
		{broker.Route{Exchange: "celery", RoutingKey: "celery"}, "celery"},
		{broker.Route{Exchange: "celery", RoutingKey: "other"}, "other"},
		{broker.Route{Exchange: "celery", RoutingKey: "missing"}, "celery"},
		{broker.Route{Exchange: "nowhere", RoutingKey: "missing"}, ""},
		{broker.Route{}, ""},
	} {
		t.Run(fmt.Sprintf("%s/%s", tc.route.Exchange, tc.route.RoutingKey), func(t *testing.T) {
			b := brokertest.New()
			c := dial(t, b)
			for _, q := range []string{"celery", "other"} {
				if err := c.DeclareQueue(ctx, broker.NewQueue(q)); err != nil {
					t.Fatal(err)
				}
			}
			e := env("x")
			e.Priority = 7
			if err := c.PublishTask(ctx, tc.route, e); err != nil {
				t.Fatal(err)
			}
			e.Headers["id"] = "mutated" // the broker kept its own copy
			pub := b.Published()
			if len(pub) != 1 || pub[0].Queue != tc.want || pub[0].Route != tc.route || pub[0].Envelope.Headers["id"] != "x" {
				t.Fatalf("published %+v, want queue %q", pub, tc.want)
			}
			if tc.want == "" {
				return
			}
			if b.Len(tc.want) != 1 {
				t.Fatalf("queue %s has %d", tc.want, b.Len(tc.want))
			}
			d := recv(t, consume(t, dial(t, b), 0, tc.want))
			want := broker.DeliveryInfo{Exchange: tc.route.Exchange, RoutingKey: tc.route.RoutingKey, Priority: 7, Queue: tc.want}
			if d.Info() != want || id(d) != "x" {
				t.Fatalf("info %+v, want %+v", d.Info(), want)
			}
		})
	}
}

func TestSettle(t *testing.T) {
	b := brokertest.New()
	b.PublishMessage("q", &protocol.Message{ID: "1", Task: "t", Args: []any{[]any{"nested"}}})
	for _, i := range []string{"2", "3"} {
		b.Publish("q", env(i))
	}
	c := dial(t, b)
	ch := consume(t, c, 1, "q")

	d := recv(t, ch)
	e := d.Envelope()
	if e == nil || d.Envelope() != nil {
		t.Fatal("Envelope should be handed over once")
	}
	e.Headers["timelimit"].([]any)[0] = "mutated" // the worker's copy only
	e.Body[0] = 'X'                               // the worker's copy only
	if err := d.Reject(true); err != nil {
		t.Fatal(err)
	}
	if d.Reject(true) == nil || d.Ack() == nil {
		t.Fatal("settling twice should fail")
	}
	d = recv(t, ch)
	e = d.Envelope()
	if e.Headers["id"] != "1" || !d.Info().Redelivered || e.Headers["timelimit"].([]any)[0] != nil || e.Body[0] != '[' {
		t.Fatalf("requeued delivery: %+v %v", d.Info(), e.Headers)
	}
	d.Ack()
	d = recv(t, ch)
	d.Reject(false)
	recv(t, ch).Ack()
	if !slices.Equal(b.Acked(), []string{"1", "3"}) || !slices.Equal(b.Rejected(), []string{"2"}) ||
		!slices.Equal(b.Requeued(), []string{"1"}) || b.Len("q") != 0 || b.Unacked() != 0 {
		t.Fatalf("acked %v rejected %v requeued %v", b.Acked(), b.Rejected(), b.Requeued())
	}
}

func TestDropRequeuesAndLoses(t *testing.T) {
	b := brokertest.New()
	for _, i := range []string{"1", "2", "3", "4", "5"} {
		b.Publish("q", env(i))
	}
	c := dial(t, b)
	ch := consume(t, c, 3, "q")
	d1, d2 := recv(t, ch), recv(t, ch)
	d1.Ack() // "3" and "4" now wait in the client buffer, "5" in the queue
	boom := errors.New("connection reset")
	b.Drop(boom)

	select {
	case <-c.Done():
	default:
		t.Fatal("Done not closed")
	}
	select {
	case <-d2.Lost():
	default:
		t.Fatal("Lost not closed")
	}
	drained(t, ch)
	if c.Err() != boom || b.Conns() != 0 || b.Unacked() != 0 || b.Prefetch() != -1 {
		t.Fatalf("err %v conns %d unacked %d", c.Err(), b.Conns(), b.Unacked())
	}
	if err := d2.Ack(); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("ack on a dropped connection: %v", err)
	}
	if err := c.PublishTask(ctx, broker.Route{RoutingKey: "q"}, env("x")); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("publish on a dropped connection: %v", err)
	}

	ch = consume(t, dial(t, b), 0, "q")
	for _, want := range []struct {
		id          string
		redelivered bool
	}{{"2", true}, {"3", true}, {"4", true}, {"5", false}} {
		d := recv(t, ch)
		if got := id(d); got != want.id || d.Info().Redelivered != want.redelivered {
			t.Fatalf("got %s redelivered=%v, want %+v", got, d.Info().Redelivered, want)
		}
	}
}

func TestCloseRequeues(t *testing.T) {
	b := brokertest.New()
	b.Publish("q", env("1"))
	c := dial(t, b)
	ch := consume(t, c, 0, "q")
	d := recv(t, ch)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	drained(t, ch)
	<-d.Lost()
	if c.Err() != nil || b.Len("q") != 1 || b.Messages("q")[0].Headers["id"] != "1" {
		t.Fatalf("err %v len %d", c.Err(), b.Len("q"))
	}
}

func TestCancelConsumeRequeuesUnread(t *testing.T) {
	b := brokertest.New()
	for i := range 5 {
		b.Publish("q", env(fmt.Sprint(i)))
	}
	c := dial(t, b)
	ch := consume(t, c, 0, "q")
	d0 := recv(t, ch)
	if b.Len("q") != 0 || b.Unacked() != 5 { // all prefetched, as RabbitMQ pushes them
		t.Fatalf("len %d unacked %d", b.Len("q"), b.Unacked())
	}
	if err := c.CancelConsume(ctx); err != nil {
		t.Fatal(err)
	}
	drained(t, ch) // at most one more, offered as the cancel came
	if b.Len("q")+b.Unacked() != 5 || b.Len("q") < 3 || b.Prefetch() != -1 {
		t.Fatalf("len %d unacked %d", b.Len("q"), b.Unacked())
	}
	if err := d0.Ack(); err != nil { // still valid after the cancel
		t.Fatal(err)
	}
	if m := b.Messages("q"); m[len(m)-1].Headers["id"] != "4" {
		t.Fatalf("queue order broken: tail %v", m[len(m)-1].Headers["id"])
	}
	// A new consumer on the same connection gets them.
	ch = consume(t, c, 0, "q")
	if d := recv(t, ch); !d.Info().Redelivered {
		t.Fatal("requeued after cancel should be redelivered")
	}
}

func TestEvents(t *testing.T) {
	b := brokertest.New()
	c := dial(t, b)
	for _, tc := range []struct {
		key, body string
		ok        bool
	}{
		{"worker.online", `{"type": "worker-online"}`, true},
		{"task.multi", `[{"type": "task-received"}, {"type": "task-started"}]`, true},
		{"task.bad", `[1]`, false},
		{"task.bad", `"x"`, false},
	} {
		err := c.PublishEvent(ctx, tc.key, &protocol.Envelope{ContentType: "application/json", Body: []byte(tc.body)})
		if (err == nil) != tc.ok {
			t.Errorf("%s %s: err %v", tc.key, tc.body, err)
		}
	}
	var types []string
	for _, e := range b.Events() {
		types = append(types, e["type"].(string))
	}
	if !slices.Equal(types, []string{"worker-online", "task-received", "task-started"}) ||
		!slices.Equal(b.EventKeys(), []string{"worker.online", "task.multi"}) {
		t.Fatalf("events %v keys %v", types, b.EventKeys())
	}
}

func TestControl(t *testing.T) {
	b := brokertest.New()
	body := brokertest.ControlBody("ping", nil)
	b.SendControl("w@test", body) // held until the worker consumes
	c := dial(t, b)
	ch, err := c.ConsumeControl(ctx, "w@test")
	if err != nil {
		t.Fatal(err)
	}
	var e *protocol.Envelope
	select {
	case e = <-ch:
	case <-time.After(wait):
		t.Fatal("no control message")
	}
	v, err := protocol.Unmarshal(e.ContentType, e.Body, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := v.(map[string]any)
	rt := m["reply_to"].(map[string]any)
	if m["method"] != "ping" || m["ticket"] != body["ticket"] || rt["exchange"] != "reply.celery.pidbox" || e.Headers["clock"] != int64(1) {
		t.Fatalf("control message %v headers %v", m, e.Headers)
	}
	reply := &protocol.Envelope{ContentType: "application/json", Headers: map[string]any{"ticket": m["ticket"]}, Body: []byte(`{"w@test": {"ok": "pong"}}`)}
	if err := c.PublishReply(ctx, rt["exchange"].(string), rt["routing_key"].(string), reply); err != nil {
		t.Fatal(err)
	}
	r := b.Replies()
	if len(r) != 1 || r[0].RoutingKey != body["ticket"] || r[0].Body["w@test"].(map[string]any)["ok"] != "pong" || r[0].Headers["ticket"] != body["ticket"] {
		t.Fatalf("replies %+v", r)
	}
	c.Close()
	if _, ok := <-ch; ok {
		t.Fatal("control channel open after Close")
	}
}

func TestDial(t *testing.T) {
	b := brokertest.New()
	bad := broker.Misconfigured(errors.New("ACCESS_REFUSED"))
	b.FailDial(bad)
	if _, err := b.Dial(ctx, broker.DialParams{}); !errors.Is(err, broker.ErrMisconfigured) {
		t.Fatalf("dial: %v", err)
	}
	b.FailDial(nil)
	dial(t, b)
	if b.Dials() != 2 || b.Conns() != 1 || b.Info().Transport != "memory" {
		t.Fatalf("dials %d conns %d", b.Dials(), b.Conns())
	}
	c := dial(t, b)
	if _, err := c.Consume(ctx, []string{"undeclared"}, 0); err == nil {
		t.Fatal("consume of an undeclared queue should fail")
	}
}

// TestConcurrent has consumers on several connections race with
// publishers, acks, requeues and a drop: every message ends acked once.
func TestConcurrent(t *testing.T) {
	before := runtime.NumGoroutine()
	b := brokertest.New()
	const n = 300
	var wg sync.WaitGroup
	for w := range 4 {
		c, err := b.Dial(ctx, broker.DialParams{})
		if err != nil {
			t.Fatal(err)
		}
		c.DeclareQueue(ctx, broker.NewQueue("q"))
		ch, err := c.Consume(ctx, []string{"q"}, w) // windows 0 to 3
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for d := range ch {
				if d.Info().Redelivered || w%2 == 0 {
					d.Ack()
				} else {
					d.Reject(true)
				}
			}
		})
	}
	for i := range n {
		b.Publish("q", env(fmt.Sprint(i)))
	}
	brokertest.WaitFor(t, wait, func() bool { return len(b.Acked()) >= n/2 }, "half the messages acked")
	b.Drop(nil)
	wg.Wait()

	c := dial(t, b)
	ch := consume(t, c, 0, "q")
	for len(b.Acked()) < n {
		recv(t, ch).Ack()
	}
	c.Close()
	acked := b.Acked()
	slices.Sort(acked)
	if len(slices.Compact(acked)) != n || b.Len("q") != 0 {
		t.Fatalf("%d distinct acked, %d left", len(acked), b.Len("q"))
	}
	brokertest.WaitFor(t, wait, func() bool { return runtime.NumGoroutine() <= before }, "feeder goroutines to exit")
}
