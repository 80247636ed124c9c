package redisbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
)

// The tests use the shared Redis on 127.0.0.1:6379, database 4 (the
// Redis broker's in CI), every key under a prefix of their own, deleted at
// the end.
const testURL = "redis://127.0.0.1:6379/4"

// go-redis logs every failed dial; the dial-fault tests make some on purpose.
func init() { redis.SetLogger(quiet{}) }

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

type fixture struct {
	t      *testing.T
	tr     *Transport
	raw    *redis.Client
	prefix string
}

func newFixture(t *testing.T, opts map[string]any) *fixture {
	t.Helper()
	prefix := "gocelery-test-" + protocol.NewUUID()[:8] + ":"
	o := map[string]any{"global_keyprefix": prefix}
	for k, v := range opts {
		o[k] = v
	}
	tr, err := NewTransport(Params{URL: testURL, Options: o})
	if err != nil {
		t.Fatal(err)
	}
	raw := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", DB: 4})
	f := &fixture{t: t, tr: tr, raw: raw, prefix: prefix}
	t.Cleanup(func() {
		ctx := context.Background()
		keys, _ := raw.Keys(ctx, prefix+"*").Result()
		if len(keys) > 0 {
			raw.Del(ctx, keys...)
		}
		raw.Close()
	})
	return f
}

func (f *fixture) dial() *Conn {
	f.t.Helper()
	c, err := f.tr.Dial(context.Background(), broker.DialParams{Name: "test node@host"})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	return c.(*Conn)
}

func task(id string, pri uint8) *protocol.Envelope {
	return &protocol.Envelope{ContentType: protocol.ContentTypeJSON, ContentEncoding: "utf-8", DeliveryMode: 2,
		Priority: pri, CorrelationID: id, Headers: map[string]any{"id": id, "task": "t", "retries": int64(0)},
		Body: []byte(`[[1, 2], {}, {}]`)}
}

func (f *fixture) publish(c *Conn, queue string, ids ...string) {
	f.t.Helper()
	for _, id := range ids {
		if err := c.PublishTask(context.Background(), broker.Route{RoutingKey: queue}, task(id, 0)); err != nil {
			f.t.Fatal(err)
		}
	}
}

// listIDs are the ids waiting in a list, next to be taken first.
func (f *fixture) listIDs(key string) []string {
	f.t.Helper()
	raw, err := f.raw.LRange(context.Background(), f.prefix+key, 0, -1).Result()
	if err != nil {
		f.t.Fatal(err)
	}
	var ids []string
	for _, m := range slices.Backward(raw) {
		d, err := decodeMessage([]byte(m))
		if err != nil {
			f.t.Fatal(err)
		}
		ids = append(ids, d.env.Headers["id"].(string))
	}
	return ids
}

func (f *fixture) unacked() int64 {
	n, err := f.raw.HLen(context.Background(), f.prefix+"unacked").Result()
	if err != nil {
		f.t.Fatal(err)
	}
	return n
}

func recv(t *testing.T, ds <-chan broker.Delivery) broker.Delivery {
	t.Helper()
	select {
	case d, ok := <-ds:
		if !ok {
			t.Fatal("delivery channel closed")
		}
		return d
	case <-time.After(5 * time.Second):
		t.Fatal("no delivery within 5s")
	}
	return nil
}

func idOf(d broker.Delivery) string { return d.Envelope().Headers["id"].(string) }

func TestWireLayoutIsKombus(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial()
	ctx := context.Background()
	if err := c.PublishTask(ctx, broker.Route{RoutingKey: "q"}, task("a", 5)); err != nil {
		t.Fatal(err)
	}
	raw, err := f.raw.LIndex(ctx, f.prefix+"q\x06\x163", 0).Result()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		t.Fatal(err)
	}
	props := m["properties"].(map[string]any)
	if m["body"] != "W1sxLCAyXSwge30sIHt9XQ==" || m["content-type"] != "application/json" || m["content-encoding"] != "utf-8" ||
		props["body_encoding"] != "base64" || props["priority"] != 5.0 || props["delivery_mode"] != 2.0 ||
		props["correlation_id"] != "a" || len(props["delivery_tag"].(string)) != 36 ||
		!reflectEqual(props["delivery_info"], map[string]any{"exchange": "", "routing_key": "q"}) {
		t.Errorf("message %s", raw)
	}
	// The producer declares the queue as Celery's does.
	members, _ := f.raw.SMembers(ctx, f.prefix+"_kombu.binding.q").Result()
	if !slices.Equal(members, []string{"q\x06\x16\x06\x16q"}) {
		t.Errorf("binding %q", members)
	}
	// Consuming records the message in unacked as [message, exchange, routing key].
	ds, err := c.Consume(ctx, []string{"q"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	d := recv(t, ds)
	entry, _ := f.raw.HGet(ctx, f.prefix+"unacked", props["delivery_tag"].(string)).Result()
	if entry != "["+raw+`, "", "q"]` {
		t.Errorf("unacked entry %s", entry)
	}
	if n, _ := f.raw.ZCard(ctx, f.prefix+"unacked_index").Result(); n != 1 {
		t.Errorf("unacked_index has %d", n)
	}
	if info := d.Info(); info.RoutingKey != "q" || info.Priority != 5 || info.Redelivered {
		t.Errorf("info %+v", info)
	}
	if err := d.Ack(); err != nil {
		t.Fatal(err)
	}
	checkFor(t, func() bool { return f.unacked() == 0 }, "the ack to empty unacked")
}

func reflectEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func checkFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPriorityAndFairOrder(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial()
	ctx := context.Background()
	for _, m := range []struct {
		q   string
		id  string
		pri uint8
	}{{"a", "a-low", 9}, {"a", "a1", 0}, {"a", "a2", 0}, {"b", "b1", 0}, {"b", "b-mid", 4}} {
		if err := c.PublishTask(ctx, broker.Route{RoutingKey: m.q}, task(m.id, m.pri)); err != nil {
			t.Fatal(err)
		}
	}
	ds, err := c.Consume(ctx, []string{"a", "b"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 5 {
		d := recv(t, ds)
		got = append(got, idOf(d))
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	// Step 0 first, the queues taking turns; kombu's lower number first.
	if want := []string{"a1", "b1", "a2", "b-mid", "a-low"}; !slices.Equal(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
}

func TestPrefetchWindow(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial()
	f.publish(c, "q", "1", "2", "3", "4")
	ds, err := c.Consume(context.Background(), []string{"q"}, 2)
	if err != nil {
		t.Fatal(err)
	}
	d1, d2 := recv(t, ds), recv(t, ds)
	select {
	case d := <-ds:
		t.Fatalf("a third delivery %s with prefetch 2", idOf(d))
	case <-time.After(200 * time.Millisecond):
	}
	if n := f.unacked(); n != 2 {
		t.Errorf("unacked %d, want 2", n)
	}
	_ = d1.Ack()
	if got := idOf(recv(t, ds)); got != "3" {
		t.Errorf("next %s", got)
	}
	_ = d2.Ack()
	recv(t, ds)
}

func TestCancelAndCloseRestoreInOrder(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial()
	f.publish(c, "q", "1", "2", "3", "4", "5", "6")
	ds, err := c.Consume(context.Background(), []string{"q"}, 4)
	if err != nil {
		t.Fatal(err)
	}
	d1, d2 := recv(t, ds), recv(t, ds)
	checkFor(t, func() bool { return f.unacked() == 4 }, "4 taken")
	// 3 and 4 were taken but never handed over: back at the head now.
	if err := c.CancelConsume(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := f.listIDs("q"); !slices.Equal(got, []string{"3", "4", "5", "6"}) {
		t.Errorf("after cancel %v", got)
	}
	// The worker puts back what it will not start, one by one (1, then
	// 2): all of it goes back at close in one batch, in the order it was
	// taken, ahead of what the cancel put back. (Put back one at a time at
	// the head, 2 would end up before 1.)
	if err := d1.Reject(true); err != nil {
		t.Fatal(err)
	}
	if err := d2.Reject(true); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got := f.listIDs("q"); !slices.Equal(got, []string{"1", "2", "3", "4", "5", "6"}) {
		t.Errorf("after close %v", got)
	}
	if n := f.unacked(); n != 0 {
		t.Errorf("unacked %d after close", n)
	}
	if err := d1.Ack(); err == nil {
		t.Error("ack of a settled delivery after close succeeded")
	}
	// Marked redelivered, as kombu marks restored messages.
	c2 := f.dial()
	ds2, _ := c2.Consume(context.Background(), []string{"q"}, 1)
	if d := recv(t, ds2); !d.Info().Redelivered {
		t.Error("restored message not marked redelivered")
	}
}

func TestRejectRequeueGoesToTheTail(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial()
	f.publish(c, "q", "1", "2")
	ds, _ := c.Consume(context.Background(), []string{"q"}, 1)
	d := recv(t, ds)
	if err := d.Reject(true); err != nil {
		t.Fatal(err)
	}
	if got := idOf(recv(t, ds)); got != "2" {
		t.Errorf("after requeue %s, want 2 (kombu requeues at the tail)", got)
	}
}

func TestRestoreVisibleAfterTimeout(t *testing.T) {
	f := newFixture(t, map[string]any{"visibility_timeout": 1.0, "unacked_restore_interval": 0.1, "unacked_restore_throttle": 1})
	dead := f.dial()
	f.publish(dead, "q", "1", "2")
	ds, _ := dead.Consume(context.Background(), []string{"q"}, 0)
	recv(t, ds)
	checkFor(t, func() bool { return f.unacked() == 2 }, "both taken")
	// A dead worker: its messages stay in unacked; no restore at close.
	dead.consumer().halt()
	<-dead.consumer().fetchDone
	dead.consumer().mu.Lock()
	dead.consumer().stopping = true
	dead.consumer().ended = true
	clear(dead.consumer().unsettled)
	dead.consumer().mu.Unlock()

	live := f.dial()
	t0 := time.Now()
	ds2, _ := live.Consume(context.Background(), []string{"q"}, 0)
	a, b := recv(t, ds2), recv(t, ds2)
	if waited := time.Since(t0); waited < 800*time.Millisecond {
		t.Errorf("restored after %s, before the visibility timeout", waited)
	}
	if ia, ib := idOf(a), idOf(b); ia != "1" || ib != "2" || !a.Info().Redelivered {
		t.Errorf("restored %s %s", ia, ib)
	}
}

func TestHeldMessagesStayInvisible(t *testing.T) {
	f := newFixture(t, map[string]any{"visibility_timeout": 0.4, "unacked_restore_interval": 0.1, "unacked_restore_throttle": 1})
	c := f.dial()
	f.publish(c, "q", "eta")
	ds, _ := c.Consume(context.Background(), []string{"q"}, 0)
	d := recv(t, ds)
	// Held three visibility timeouts by a live consumer: nobody restores it.
	other := f.dial()
	for range 6 {
		time.Sleep(200 * time.Millisecond)
		if n, err := other.RestoreVisible(context.Background()); err != nil || n != 0 {
			t.Fatalf("restored %d (%v) under a live consumer", n, err)
		}
	}
	if err := d.Ack(); err != nil {
		t.Fatal(err)
	}
}

func TestRoutingAndFanout(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial()
	ctx := context.Background()
	if err := c.declare(ctx, "q1", "ex", "topic", "orders.*"); err != nil {
		t.Fatal(err)
	}
	if err := c.declare(ctx, "q2", "ex", "topic", "orders.#"); err != nil {
		t.Fatal(err)
	}
	if err := c.PublishTask(ctx, broker.Route{Exchange: "ex", RoutingKey: "orders.eu.paid"}, task("t", 0)); err != nil {
		t.Fatal(err)
	}
	if a, b := f.listIDs("q1"), f.listIDs("q2"); len(a) != 0 || !slices.Equal(b, []string{"t"}) {
		t.Errorf("topic routing: q1 %v q2 %v", a, b)
	}
	// Another connection that never declared "ex" still routes by the
	// stored pattern.
	other := f.dial()
	if err := other.PublishTask(ctx, broker.Route{Exchange: "ex", RoutingKey: "orders.paid"}, task("u", 0)); err != nil {
		t.Fatal(err)
	}
	if a, b := f.listIDs("q1"), f.listIDs("q2"); !slices.Equal(a, []string{"u"}) || !slices.Equal(b, []string{"t", "u"}) {
		t.Errorf("undeclared topic routing: q1 %v q2 %v", a, b)
	}
	// Events go over pub/sub on /<db>.celeryev/<routing key>.
	sub := f.raw.PSubscribe(ctx, f.prefix+"/4.celeryev/*")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	ev := &protocol.Envelope{ContentType: protocol.ContentTypeJSON, Body: []byte(`{"type": "task-sent"}`)}
	if err := c.PublishEvent(ctx, "task.sent", ev); err != nil {
		t.Fatal(err)
	}
	m, err := sub.ReceiveMessage(ctx)
	if err != nil || m.Channel != f.prefix+"/4.celeryev/task.sent" {
		t.Fatalf("event on %v: %v", m, err)
	}
}

func TestMailboxRoundTrip(t *testing.T) {
	f := newFixture(t, nil)
	node := f.dial()
	ctx := context.Background()
	ctrl, err := node.ConsumeControl(ctx, "w1@h")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for env := range ctrl {
			var req struct {
				ReplyTo struct {
					Exchange   string `json:"exchange"`
					RoutingKey string `json:"routing_key"`
				} `json:"reply_to"`
				Ticket string `json:"ticket"`
			}
			_ = json.Unmarshal(env.Body, &req)
			reply := &protocol.Envelope{ContentType: protocol.ContentTypeJSON, Headers: map[string]any{"ticket": req.Ticket},
				Body: []byte(`{"w1@h": {"ok": "pong"}}`)}
			_ = node.PublishReply(ctx, req.ReplyTo.Exchange, req.ReplyTo.RoutingKey, reply)
		}
	}()
	client := f.dial()
	body := fmt.Sprintf(`{"method": "ping", "arguments": {}, "destination": null, "ticket": "tk", "reply_to": {"exchange": %q, "routing_key": "cid"}}`, ControlReplyExchange)
	replies, err := client.Call(ctx, broker.MailboxCall{Exchange: ControlExchange, ReplyExchange: ControlReplyExchange,
		ReplyKey: "cid", Ticket: "tk", Timeout: 3 * time.Second, Limit: 1,
		Request: &protocol.Envelope{ContentType: protocol.ContentTypeJSON, Body: []byte(body)}})
	if err != nil || len(replies) != 1 || string(replies[0].Body) != `{"w1@h": {"ok": "pong"}}` {
		t.Fatalf("replies %v, %v", replies, err)
	}
	// The node's pidbox queue is bound as kombu binds it.
	if ok, _ := f.raw.SIsMember(ctx, f.prefix+"_kombu.binding.celery.pidbox", "\x06\x16\x06\x16w1@h.celery.pidbox").Result(); !ok {
		t.Error("pidbox binding missing")
	}
}

func TestDialFaults(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// A password the server does not have: refused like redis-py's AUTH.
	tr, err := NewTransport(Params{URL: "redis://:wrong@127.0.0.1:6379/4"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Dial(ctx, broker.DialParams{Name: "n"}); !errors.Is(err, broker.ErrMisconfigured) {
		t.Errorf("wrong password: %v, want misconfigured", err)
	}
	// Nobody listening: may heal, so not misconfigured.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	tr, _ = NewTransport(Params{URL: "redis://" + addr + "/0"})
	if _, err := tr.Dial(ctx, broker.DialParams{Name: "n"}); err == nil || errors.Is(err, broker.ErrMisconfigured) {
		t.Errorf("refused: %v, want a retryable error", err)
	}
}

func TestLostConnectionRestoredByTheNext(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial()
	f.publish(c, "q", "1", "2", "3")
	ds, _ := c.Consume(context.Background(), []string{"q"}, 3)
	d1, d2 := recv(t, ds), recv(t, ds)
	checkFor(t, func() bool { return f.unacked() == 3 }, "3 taken")
	if err := d1.Ack(); err != nil {
		t.Fatal(err)
	}
	c.fail(errors.New("network gone"))
	<-c.Done()
	select {
	case <-d2.Lost():
	default:
		t.Fatal("a delivery of the dead connection is not lost")
	}
	if err := d2.Ack(); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("ack on a dead connection: %v", err)
	}
	if c.Err() == nil {
		t.Error("Err() is nil after a failure")
	}
	// The next connection settles what the dead one could not: 1 was
	// acked, 2 and 3 go back in order, at once.
	f.dial()
	if got := f.listIDs("q"); !slices.Equal(got, []string{"2", "3"}) {
		t.Errorf("after reconnect %v", got)
	}
	if n := f.unacked(); n != 0 {
		t.Errorf("unacked %d", n)
	}
}

func TestCancelQueueTakesNothingMore(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial()
	ctx := context.Background()
	if err := c.DeclareQueue(ctx, broker.NewQueue("a")); err != nil {
		t.Fatal(err)
	}
	ds, err := c.Consume(ctx, []string{"a", "b"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Cancel while a blocking pop on a and b is in flight.
	checkFor(t, func() bool {
		list, _ := f.raw.ClientList(ctx).Result()
		for _, line := range strings.Split(list, "\n") {
			if strings.Contains(line, " name=test_node@host ") && strings.Contains(line, " cmd=brpop ") {
				return true
			}
		}
		return false
	}, "the blocking pop")
	if err := c.CancelQueue(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	f.publish(c, "a", "left")
	f.publish(c, "b", "taken")
	if got := idOf(recv(t, ds)); got != "taken" {
		t.Errorf("got %s", got)
	}
	if got := f.listIDs("a"); !slices.Equal(got, []string{"left"}) {
		t.Errorf("queue a %v: a cancelled queue was consumed", got)
	}
	if err := c.AddQueue(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if got := idOf(recv(t, ds)); got != "left" {
		t.Errorf("after add_consumer got %s", got)
	}
}
