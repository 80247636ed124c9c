package amqp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
)

// rawChannel is a channel of its own for checking what was declared
// (RabbitMQ closes a channel on a failed declare).
func rawChannel(t *testing.T, c *Conn) *amqp091.Channel {
	t.Helper()
	ch, err := c.conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	return ch
}

// cleanup deletes what a test declared.
func cleanup(t *testing.T, c *Conn, queues, exchanges []string) {
	t.Cleanup(func() {
		ch, err := c.conn.Channel()
		if err != nil {
			return
		}
		defer ch.Close()
		for _, q := range queues {
			ch.QueueDelete(q, false, false, false)
		}
		for _, e := range exchanges {
			ch.ExchangeDelete(e, false, false)
		}
	})
}

// DeclareQueue declares what kombu declares for the same definition: the
// table redeclares each queue and exchange raw with the flags and argument
// types py-amqp sends (RabbitMQ answers PRECONDITION_FAILED on any
// difference), and checks that what routes to the queue does.
func TestDeclareQueueAsKombu(t *testing.T) {
	c := liveConn(t).(*Conn)
	ctx := context.Background()
	u := fmt.Sprintf("%d", time.Now().UnixNano())
	tests := []struct {
		name     string
		q        broker.Queue
		kind     string        // the exchange's type as kombu declares it
		exDur    bool          // exchange durable
		durable  bool          // queue flags
		autoDel  bool          //
		excl     bool          //
		args     amqp091.Table // as py-amqp encodes the Python values
		rk       string        // a routing key that reaches the queue
		noDeclar bool
	}{
		{name: "missing", q: broker.NewQueue("t-missing-" + u), kind: "direct", exDur: true, durable: true, rk: "t-missing-" + u},
		{name: "quorum-topic", q: broker.Queue{Name: "t-quorum-" + u, Exchange: broker.Exchange{Name: "t-quorum-" + u, Type: "topic"}, RoutingKey: "t.#",
			Arguments: map[string]any{"x-queue-type": "quorum"}}, kind: "topic", exDur: true, durable: true,
			args: amqp091.Table{"x-queue-type": "quorum"}, rk: "t.a.b"},
		{name: "priority-fanout", q: broker.Queue{Name: "t-prio-" + u, Exchange: broker.Exchange{Name: "t-prio-" + u, Type: "fanout"},
			Arguments: map[string]any{"x-max-priority": 10, "x-message-ttl": int64(60000), "x-dead-letter-exchange": "dlx", "x-max-length": int64(5_000_000_000)}},
			kind: "fanout", exDur: true, durable: true, rk: "anything",
			args: amqp091.Table{"x-max-priority": int32(10), "x-message-ttl": int32(60000), "x-dead-letter-exchange": "dlx", "x-max-length": int64(5_000_000_000)}},
		{name: "transient-exclusive", q: broker.Queue{Name: "t-excl-" + u, Exchange: broker.Exchange{Name: "t-excl-" + u, Transient: true, AutoDelete: true},
			RoutingKey: "k", Transient: true, Exclusive: true}, kind: "direct", exDur: false, durable: false, autoDel: true, excl: true, rk: "k"},
		{name: "headers-binding", q: broker.Queue{Name: "t-hdr-" + u, Exchange: broker.Exchange{Name: "t-hdr-" + u, Type: "headers"},
			BindingArguments: map[string]any{"x-match": "all", "tenant": "acme"}}, kind: "headers", exDur: true, durable: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cleanup(t, c, []string{tt.q.Name}, []string{tt.q.Exchange.Name})
			for range 2 { // idempotent
				if err := c.DeclareQueue(ctx, tt.q); err != nil {
					t.Fatalf("DeclareQueue: %v", err)
				}
			}
			ch := rawChannel(t, c)
			if err := ch.ExchangeDeclare(tt.q.Exchange.Name, tt.kind, tt.exDur, tt.exDur == false, false, false, nil); err != nil {
				t.Fatalf("exchange as kombu declares it: %v", err)
			}
			if _, err := ch.QueueDeclare(tt.q.Name, tt.durable, tt.autoDel, tt.excl, false, tt.args); err != nil {
				t.Fatalf("queue as kombu declares it: %v", err)
			}
			// Another argument set is refused, so the check above could fail.
			ch2 := rawChannel(t, c)
			if _, err := ch2.QueueDeclare(tt.q.Name, tt.durable, tt.autoDel, tt.excl, false, amqp091.Table{"x-max-priority": int32(3)}); err == nil {
				t.Fatal("a different x-max-priority was accepted")
			}
			if tt.rk == "" && tt.q.Exchange.Kind() != "headers" {
				return
			}
			pub := amqp091.Publishing{Body: []byte("x")}
			if tt.q.Exchange.Kind() == "headers" {
				pub.Headers = amqp091.Table{"tenant": "acme"}
			}
			ch3 := rawChannel(t, c)
			if err := ch3.PublishWithContext(ctx, tt.q.Exchange.Name, tt.rk, false, false, pub); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "message routed to "+tt.q.Name, func() bool {
				n, err := ch3.QueueDeclarePassive(tt.q.Name, tt.durable, tt.autoDel, tt.excl, false, tt.args)
				return err == nil && n.Messages == 1
			})
		})
	}
}

// A queue declared otherwise is a misconfiguration whose error says how
// gocelery wanted it.
func TestDeclareQueueMismatchIsMisconfigured(t *testing.T) {
	c := liveConn(t).(*Conn)
	name := fmt.Sprintf("t-mismatch-%d", time.Now().UnixNano())
	cleanup(t, c, []string{name}, []string{name})
	if err := c.DeclareQueue(context.Background(), broker.NewQueue(name)); err != nil {
		t.Fatal(err)
	}
	q := broker.NewQueue(name)
	q.Arguments = map[string]any{"x-queue-type": "quorum"}
	err := c.DeclareQueue(context.Background(), q)
	if !errors.Is(err, broker.ErrMisconfigured) || !strings.Contains(err.Error(), "quorum") || !strings.Contains(err.Error(), "PRECONDITION_FAILED") {
		t.Fatalf("quorum over classic: %v", err)
	}
	bad := broker.Queue{Name: name, Exchange: broker.Exchange{Name: name, Type: "fan"}}
	if err := c.DeclareQueue(context.Background(), bad); !errors.Is(err, broker.ErrMisconfigured) {
		t.Fatalf("unknown exchange type: %v", err)
	}
}

// TestQueueArgs: declaration arguments take the field types py-amqp writes
// for the same Python values, whatever Go type the configuration decoded
// them into (RabbitMQ compares a redeclaration's arguments with the
// queue's, so an int must not go out as a string or a 64-bit field).
func TestQueueArgs(t *testing.T) {
	cases := []struct {
		name string
		in   any
		want any
	}{
		{"int", 10, int32(10)},
		{"int64 that fits", int64(86400000), int32(86400000)},
		{"int64 beyond 32 bits", int64(1) << 40, int64(1) << 40},
		{"uint64", uint64(255), int32(255)},
		{"json.Number", json.Number("5"), int32(5)},
		{"float32", float32(1.5), float64(1.5)},
		{"string", "quorum", "quorum"},
		{"list", []any{int64(1), "a"}, []any{int32(1), "a"}},
		{"table", map[string]any{"n": uint8(2)}, amqp091.Table{"n": int32(2)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := queueArgs(map[string]any{"x": c.in})["x"]
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("queueArgs(%T %v) = %T %v, want %T %v", c.in, c.in, got, got, c.want, c.want)
			}
		})
	}
}

// kombu's calculate_routing_key.
func TestDelayRoutingKey(t *testing.T) {
	for _, tt := range []struct {
		secs int64
		key  string
		want string
	}{
		{5, "q", strings.Repeat("0.", 25) + "1.0.1.q"},
		{1, strings.Repeat("0.", 27) + "1.q", strings.Repeat("0.", 27) + "1.q"}, // an earlier prefix is replaced
		{1<<28 - 1, "a.b", strings.Repeat("1.", 28) + "a.b"},
	} {
		if got := delayRoutingKey(tt.secs, tt.key); got != tt.want {
			t.Errorf("delayRoutingKey(%d, %q) = %q, want %q", tt.secs, tt.key, got, tt.want)
		}
	}
	now := time.Now()
	topicQuorum := broker.Queue{Name: "q", Exchange: broker.Exchange{Name: "q", Type: "topic"}, RoutingKey: "q", Arguments: map[string]any{"x-queue-type": "quorum"}}
	direct := broker.NewQueue("q")
	direct.Arguments = topicQuorum.Arguments
	classic := topicQuorum
	classic.Arguments = nil
	for _, tt := range []struct {
		name string
		r    broker.Route
		ok   bool
	}{
		{"quorum topic", broker.Route{Exchange: "q", RoutingKey: "q", Queue: &topicQuorum, ETA: now.Add(3 * time.Second)}, true},
		{"under a second", broker.Route{Exchange: "q", RoutingKey: "q", Queue: &topicQuorum, ETA: now.Add(900 * time.Millisecond)}, false},
		{"no eta", broker.Route{Exchange: "q", RoutingKey: "q", Queue: &topicQuorum}, false},
		{"direct", broker.Route{RoutingKey: "q", Queue: &direct, ETA: now.Add(time.Hour)}, false},
		{"classic", broker.Route{Exchange: "q", RoutingKey: "q", Queue: &classic, ETA: now.Add(time.Hour)}, false},
	} {
		ex, key, ok := delayedRoute(tt.r, now)
		if ok != tt.ok || (ok && (ex != "celery_delayed_27" || !strings.HasSuffix(key, ".1.1.q"))) {
			t.Errorf("%s: delayedRoute = %q %q %v", tt.name, ex, key, ok)
		}
	}
}

// A message published with an ETA to a quorum queue behind a topic
// exchange waits in the delay levels for the whole seconds left (Celery
// truncates; the worker holds the rest by the eta header).
func TestPublishThroughNativeDelayedDelivery(t *testing.T) {
	c := liveConn(t).(*Conn)
	ctx := context.Background()
	name := fmt.Sprintf("t-delayed-%d", time.Now().UnixNano())
	cleanup(t, c, []string{name}, []string{name})
	q := broker.Queue{Name: name, Exchange: broker.Exchange{Name: name, Type: "topic"}, RoutingKey: name, Arguments: map[string]any{"x-queue-type": "quorum"}}
	if err := c.DeclareQueue(ctx, q); err != nil {
		t.Fatal(err)
	}
	if err := c.DeclareDelayedDelivery(ctx, "quorum"); err != nil {
		t.Fatal(err)
	}
	if skipped, err := c.BindDelayedDelivery(ctx, q); err != nil || len(skipped) > 0 {
		t.Fatalf("bind: %v %v", skipped, err)
	}
	if skipped, _ := c.BindDelayedDelivery(ctx, broker.NewQueue(name)); len(skipped) != 1 {
		t.Fatalf("a direct exchange is not skipped: %v", skipped)
	}
	start := time.Now()
	r := broker.RouteTo(q, "", "", nil)
	r.ETA = start.Add(2500 * time.Millisecond)
	if err := c.PublishTask(ctx, r, &protocol.Envelope{Body: []byte("late")}); err != nil {
		t.Fatal(err)
	}
	ds, err := c.Consume(ctx, []string{name}, 4)
	if err != nil {
		t.Fatalf("consume a quorum queue (per-consumer QoS): %v", err)
	}
	select {
	case d := <-ds:
		waited := time.Since(start)
		info := d.Info()
		if waited < 1900*time.Millisecond || waited > 5*time.Second || info.Queue != name || !strings.HasSuffix(info.RoutingKey, "."+name) {
			t.Fatalf("arrived after %v with %+v", waited, info)
		}
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("delayed message never arrived")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Global QoS and a quorum queue do not mix (RabbitMQ closes the whole
// connection): a quorum queue added to consumers started with global QoS
// is refused before it reaches the broker, and the connection lives on.
func TestAddQuorumQueueToGlobalQoSConsumer(t *testing.T) {
	c := liveConn(t).(*Conn)
	ctx := context.Background()
	u := time.Now().UnixNano()
	classic := broker.NewQueue(fmt.Sprintf("t-global-%d", u))
	quorum := quorumQueue(fmt.Sprintf("t-quorum-add-%d", u))
	cleanup(t, c, []string{classic.Name, quorum.Name}, []string{classic.Name, quorum.Name})
	for _, q := range []broker.Queue{classic, quorum} {
		if err := c.DeclareQueue(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Consume(ctx, []string{classic.Name}, 4); err != nil {
		t.Fatal(err)
	}
	if err := c.AddQueue(ctx, quorum.Name); !errors.Is(err, broker.ErrMisconfigured) {
		t.Fatalf("AddQueue(quorum) under global QoS: %v", err)
	}
	if c.IsClosed() {
		t.Fatal("the connection was closed")
	}
}

func quorumQueue(name string) broker.Queue {
	return broker.Queue{Name: name, Exchange: broker.Exchange{Name: name, Type: "topic"}, RoutingKey: name,
		Arguments: map[string]any{"x-queue-type": "quorum"}}
}
