// Package brokertest is an in-memory broker.Transport for fast unit tests of
// the worker, as net/http/httptest is for HTTP handlers. It owns a set of
// named FIFO queues, the connections dialed to it and a record of everything
// the worker did (settlements, published tasks, events, control replies),
// and lets a test publish tasks, send remote control messages, make dials
// fail and drop connections.
//
// It mimics RabbitMQ where the worker depends on it: a prefetch window per
// connection that counts deliveries from the moment the broker hands them
// out (not when the worker reads the channel), requeue at the head of the
// queue with Redelivered set on reject, cancel and connection loss, and
// publishes to an unroutable exchange silently dropped. It does not model
// priorities (queues are strictly FIFO), TTLs, dead-lettering or exchanges
// beyond the routing rule of PublishTask.
package brokertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
)

// Broker is the in-memory transport. Create it with New; it is safe for
// concurrent use. All state sits under one mutex, and one condition
// variable wakes the goroutines that feed delivery channels whenever
// anything changes.
type Broker struct {
	mu   sync.Mutex
	cond *sync.Cond

	queues  map[string][]*message
	defs    map[string]broker.Queue         // as last declared
	control map[string][]*protocol.Envelope // per node: its pidbox queue
	conns   []*conn                         // live, in dial order
	tag     uint64
	clock   int64

	dialErr error
	dials   int
	ackErr  error
	ackFail int
	// startAcks: hand out deliveries that implement broker.AckStarter.
	startAcks bool
	// doubt: the next started ack is cut off (AckInDoubt); doubtTaken
	// says whether the broker takes it all the same.
	doubt, doubtTaken bool
	// slowCancel: CancelConsume waits this long before the consumer stops.
	slowCancel time.Duration

	acked, rejected, requeued []string
	requeuedLive              []string // requeued while their consumer was still on
	published                 []Sent
	events                    []map[string]any
	eventKeys                 []string
	replies                   []Reply
}

// Sent is one task message the worker published with PublishTask.
type Sent struct {
	Route    broker.Route
	Queue    string // where it was routed; "" when it was unroutable and dropped
	Envelope *protocol.Envelope
}

// Reply is one remote control reply the worker published.
type Reply struct {
	Exchange, RoutingKey string
	Body                 map[string]any
	Headers              map[string]any
}

// message is a task message as the broker stores it: its own copy of the
// envelope, so nothing the worker does to what it was handed changes it.
type message struct {
	env                  *protocol.Envelope
	exchange, routingKey string
	queue                string
	redelivered          bool
}

// New returns an empty broker.
func New() *Broker {
	b := &Broker{queues: map[string][]*message{}, defs: map[string]broker.Queue{}, control: map[string][]*protocol.Envelope{}}
	b.cond = sync.NewCond(&b.mu)
	return b
}

var _ broker.Transport = (*Broker)(nil)

// Dial opens a connection, or fails with the error set by FailDial.
func (b *Broker) Dial(ctx context.Context, p broker.DialParams) (broker.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dials++
	if b.dialErr != nil {
		return nil, b.dialErr
	}
	c := &conn{b: b, name: p.Name, done: make(chan struct{}), dying: make(chan struct{}), lost: make(chan struct{}), unsettled: map[uint64]*delivery{}}
	b.conns = append(b.conns, c)
	return c, nil
}

// Info describes the broker as a "memory" transport.
func (b *Broker) Info() broker.Info {
	return broker.Info{Transport: "memory", URL: "memory://localhost//", Hostname: "localhost", VirtualHost: "/"}
}

// changed must follow every change of state, under b.mu: it hands ready
// messages to consumers with room in their window and wakes the feeders.
func (b *Broker) changed() {
	// One message per consumer per round, so consumers of one queue share
	// it round-robin as RabbitMQ does instead of the first taking it all.
	for progress := true; progress; {
		progress = false
		for _, c := range b.conns {
			cs := c.cons
			if cs == nil || cs.stopped || (c.prefetch > 0 && len(c.unsettled) >= c.prefetch) {
				continue
			}
			if m := b.popRoundRobin(cs); m != nil {
				b.tag++
				d := newDelivery(c, b.tag, m)
				c.unsettled[d.tag] = d
				cs.pending = append(cs.pending, d)
				progress = true
			}
		}
	}
	b.cond.Broadcast()
}

// popRoundRobin takes the head of the next non-empty queue after the one
// served last.
func (b *Broker) popRoundRobin(cs *consumer) *message {
	n := len(cs.queues)
	for i := range n {
		q := cs.queues[(cs.next+i)%n]
		if ms := b.queues[q]; len(ms) > 0 {
			m := ms[0]
			// Cleared: the queue's array would otherwise keep the message
			// (its body) reachable until the next publish to the queue.
			ms[0] = nil
			b.queues[q] = ms[1:]
			cs.next = (cs.next + i + 1) % n
			return m
		}
	}
	return nil
}

// requeue puts m back at the head of its queue: RabbitMQ keeps a requeued
// message ahead of the ones published after it, flagged redelivered.
func (b *Broker) requeue(m *message) {
	m.redelivered = true
	b.queues[m.queue] = slices.Insert(b.queues[m.queue], 0, m)
}

// route applies PublishTask's routing rule under b.mu and returns the queue
// the message went to ("" when it was dropped as unroutable).
func (b *Broker) route(r broker.Route, env *protocol.Envelope) string {
	q := r.RoutingKey
	if r.Exchange == "" && q == "" {
		return "" // the default exchange has no queue named ""
	}
	if r.Exchange != "" {
		// A direct exchange bound to queues by their names, as kombu sets
		// up the default "celery" exchange; no such queue means no binding,
		// and RabbitMQ drops a message nobody is bound for (no mandatory).
		if _, ok := b.queues[q]; !ok {
			q = r.Exchange
			if _, ok := b.queues[q]; !ok {
				return ""
			}
		}
	}
	m := &message{env: cloneEnv(env), exchange: r.Exchange, routingKey: r.RoutingKey, queue: q}
	b.queues[q] = append(b.queues[q], m)
	b.changed()
	return q
}

// Declared returns the definition queue was last declared with.
func (b *Broker) Declared(queue string) (broker.Queue, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	q, ok := b.defs[queue]
	return q, ok
}

// Publish appends env to queue (created if missing) as if published to the
// default exchange with the queue name as routing key.
func (b *Broker) Publish(queue string, env *protocol.Envelope) {
	b.PublishRoute(broker.Route{RoutingKey: queue}, env)
}

// PublishRoute publishes env as PublishTask would, without recording it in
// Published. It is how a test sends to e.g. Route{"celery", "celery"}.
func (b *Broker) PublishRoute(r broker.Route, env *protocol.Envelope) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.route(r, env)
}

// PublishVia puts env in queue as if it had been routed there from r's
// exchange and routing key by bindings the fake does not model (a topic
// pattern, RabbitMQ's delay levels); the delivery reports r.
func (b *Broker) PublishVia(queue string, r broker.Route, env *protocol.Envelope) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.queues[queue] = append(b.queues[queue], &message{env: cloneEnv(env), exchange: r.Exchange, routingKey: r.RoutingKey, queue: queue})
	b.changed()
}

// PublishMessage encodes m as a JSON protocol v2 message and publishes it
// to queue. It panics if m cannot be encoded, which is a bug in the test.
func (b *Broker) PublishMessage(queue string, m *protocol.Message) {
	env, err := protocol.Encode(m, protocol.EncodeOptions{})
	if err != nil {
		panic(fmt.Sprintf("brokertest: PublishMessage: %v", err))
	}
	b.Publish(queue, env)
}

// Len is the number of ready messages in queue (not handed to a consumer).
func (b *Broker) Len(queue string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queues[queue])
}

// Messages returns copies of the ready messages in queue, head first.
func (b *Broker) Messages(queue string) []*protocol.Envelope {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*protocol.Envelope, len(b.queues[queue]))
	for i, m := range b.queues[queue] {
		out[i] = cloneEnv(m.env)
	}
	return out
}

// Unacked is the number of deliveries handed to live connections and not
// settled, counting those not yet read from the delivery channel.
func (b *Broker) Unacked() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, c := range b.conns {
		n += len(c.unsettled)
	}
	return n
}

// Acked returns the task ids of acknowledged deliveries, in order.
func (b *Broker) Acked() []string { return b.strings(&b.acked) }

// Rejected returns the task ids of deliveries rejected without requeue.
func (b *Broker) Rejected() []string { return b.strings(&b.rejected) }

// Requeued returns the task ids of deliveries rejected with requeue (not
// those requeued by CancelConsume or a lost connection).
func (b *Broker) Requeued() []string { return b.strings(&b.requeued) }

// RequeuedWhileConsuming lists the task ids of Requeued whose connection's
// consumer was still on at the reject: the broker may hand such a message
// straight back to the same worker.
func (b *Broker) RequeuedWhileConsuming() []string { return b.strings(&b.requeuedLive) }

func (b *Broker) strings(s *[]string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(*s)
}

// Published returns the task messages the worker published, routed or not.
func (b *Broker) Published() []Sent {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.published)
}

// Events returns the decoded bodies of the events the worker sent, a batch
// (a JSON list, as on routing key task.multi) flattened into its events.
// Numbers decode as float64.
func (b *Broker) Events() []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.events)
}

// EventKeys returns the routing key of each PublishEvent call, in order.
func (b *Broker) EventKeys() []string { return b.strings(&b.eventKeys) }

// Replies returns the control replies the worker published.
func (b *Broker) Replies() []Reply {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.replies)
}

// ControlBody builds a control request body as `celery inspect` sends it,
// with a fresh ticket and reply_to (the ticket doubles as reply routing key).
func ControlBody(method string, args map[string]any) map[string]any {
	if args == nil {
		args = map[string]any{}
	}
	ticket := protocol.NewUUID()
	return map[string]any{
		"method": method, "arguments": args,
		"destination": nil, "pattern": nil, "matcher": nil,
		"ticket":   ticket,
		"reply_to": map[string]any{"exchange": "reply.celery.pidbox", "routing_key": ticket},
	}
}

// SendControl queues body (e.g. from ControlBody) as a JSON control message
// on node's pidbox queue, which holds it until a connection consumes node
// with ConsumeControl. It panics if body is not JSON-encodable.
func (b *Broker) SendControl(node string, body map[string]any) {
	raw, err := json.Marshal(body)
	if err != nil {
		panic(fmt.Sprintf("brokertest: SendControl: %v", err))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.clock++
	env := &protocol.Envelope{
		ContentType: "application/json", ContentEncoding: "utf-8",
		Headers: map[string]any{"clock": b.clock}, DeliveryMode: 2, Body: raw,
	}
	b.control[node] = append(b.control[node], env)
	b.changed()
}

// Drop kills every live connection as a broker restart would: delivery
// channels close, unsettled deliveries are requeued with Redelivered set
// and their Lost channels closed, then Done closes and Err returns err
// (broker.ErrClosed if err is nil). It returns once all that is done.
func (b *Broker) Drop(err error) {
	if err == nil {
		err = broker.ErrClosed
	}
	b.mu.Lock()
	conns := slices.Clone(b.conns)
	b.mu.Unlock()
	for _, c := range conns {
		c.end(err)
	}
}

// FailDial makes every following Dial fail with err (broker.Misconfigured
// for a final failure, anything else for one the worker retries); nil makes
// dials work again.
func (b *Broker) FailDial(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dialErr = err
}

// StartAcks makes the deliveries handed out from now on broker.AckStarters
// (as the AMQP transport's are), so the worker acknowledges early-ack
// tasks ahead of their run.
func (b *Broker) StartAcks(on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.startAcks = on
}

// AckInDoubt makes the next ack started with StartAck end as a connection
// lost between the ack and its confirmation leaves it: the broker takes the
// ack (the message is gone) when taken is set and not otherwise (it is
// requeued with Redelivered set), the connection ends, and then the wait
// reports an error wrapping broker.ErrAckInDoubt. Only deliveries handed
// out under StartAcks have StartAck.
func (b *Broker) AckInDoubt(taken bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.doubt, b.doubtTaken = true, taken
}

// SlowCancel makes CancelConsume wait d before it stops the consumer, as
// RabbitMQ's basic.cancel takes a round trip: until then the consumer is
// on.
func (b *Broker) SlowCancel(d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.slowCancel = d
}

// FailAcks makes every following Ack fail with err without settling, as
// the write of an ack fails on a connection that died unnoticed (the
// broker will redeliver the message); nil makes acks work again.
func (b *Broker) FailAcks(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ackErr = err
}

// AckFailures counts the acks FailAcks failed.
func (b *Broker) AckFailures() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ackFail
}

// Dials counts Dial calls, failed ones included.
func (b *Broker) Dials() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dials
}

// Conns counts live connections.
func (b *Broker) Conns() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

// Prefetch is the window of the most recently dialed live connection that
// is consuming tasks (0: unlimited), or -1 when none is.
func (b *Broker) Prefetch() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range slices.Backward(b.conns) {
		if c.cons != nil && !c.cons.stopped {
			return c.prefetch
		}
	}
	return -1
}

// WaitFor polls cond until it holds, failing t with what after timeout.
// Call it from the test goroutine (it may call t.Fatalf).
func WaitFor(t testing.TB, timeout time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for wait := 100 * time.Microsecond; !cond(); wait = min(2*wait, 10*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("brokertest: timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(wait)
	}
}

// taskID is what the worker settled, for Acked and friends: the id header
// of protocol v2, else the correlation id (protocol v1 keeps the id in the
// body, and Celery sets correlation_id to it).
func taskID(env *protocol.Envelope) string {
	if id, ok := env.Headers["id"].(string); ok {
		return id
	}
	return env.CorrelationID
}

// decodeObjects decodes a JSON object, or a list of them, into maps.
func decodeObjects(body []byte) ([]map[string]any, error) {
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, err
	}
	switch x := v.(type) {
	case map[string]any:
		return []map[string]any{x}, nil
	case []any:
		out := make([]map[string]any, 0, len(x))
		for _, e := range x {
			m, ok := e.(map[string]any)
			if !ok {
				return nil, errors.New("a list element is not a JSON object")
			}
			out = append(out, m)
		}
		return out, nil
	}
	return nil, errors.New("not a JSON object or list")
}

// cloneEnv deep-copies an envelope so the broker and the worker never
// share headers or body.
func cloneEnv(e *protocol.Envelope) *protocol.Envelope {
	c := *e
	c.Headers, _ = cloneValue(e.Headers).(map[string]any)
	c.Body = slices.Clone(e.Body)
	return &c
}

func cloneValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		if x == nil {
			return x
		}
		c := make(map[string]any, len(x))
		for k, e := range x {
			c[k] = cloneValue(e)
		}
		return c
	case []any:
		if x == nil {
			return x
		}
		c := make([]any, len(x))
		for i, e := range x {
			c[i] = cloneValue(e)
		}
		return c
	case []byte:
		return slices.Clone(x)
	}
	return v
}
