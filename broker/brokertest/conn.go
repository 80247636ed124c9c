package brokertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
)

// conn is one connection. Its fields are guarded by b.mu.
type conn struct {
	b    *Broker
	name string

	prefetch  int
	cons      *consumer // the task consumer, nil before Consume
	unsettled map[uint64]*delivery
	control   map[string]bool // nodes consumed with ConsumeControl
	feeders   []chan struct{} // closed as each feeder goroutine exits

	ended bool
	err   error
	dying chan struct{} // closed when the connection starts ending
	done  chan struct{} // closed when it has ended
	// lost is closed once its unsettled deliveries are requeued: every
	// delivery's Lost.
	lost chan struct{}
}

// consumer is the task consumer of a connection. Messages the broker took
// from the queues for it wait in pending until the worker reads them: the
// client-side buffer of a real AMQP connection.
type consumer struct {
	queues       []string
	next         int // round-robin position in queues
	pending      []*delivery
	stopped      bool
	stop, exited chan struct{}
}

func (cs *consumer) halt() {
	if !cs.stopped {
		cs.stopped = true
		close(cs.stop)
	}
}

var _ broker.Conn = (*conn)(nil)

// feed hands what next yields to out, one at a time, until stop closes; it
// then closes out and exited. A value offered but not taken when stop
// closes goes back through unread, so nothing is lost in the hand-off.
// next and unread run under b.mu. Whoever closes stop does so under b.mu
// and broadcasts, so the wait below cannot miss it.
func feed[T any](b *Broker, out chan<- T, stop <-chan struct{}, exited chan<- struct{}, next func() (T, bool), unread func(T)) {
	defer close(exited)
	defer close(out)
	for {
		b.mu.Lock()
		var v T
		for {
			select {
			case <-stop:
				b.mu.Unlock()
				return
			default:
			}
			var ok bool
			if v, ok = next(); ok {
				break
			}
			b.cond.Wait()
		}
		b.mu.Unlock()
		select {
		case out <- v:
		case <-stop:
			b.mu.Lock()
			unread(v)
			b.mu.Unlock()
			return
		}
	}
}

// DeclareQueue creates the queue (by name: the fake has no exchanges) and
// records its definition for Declared.
func (c *conn) DeclareQueue(ctx context.Context, def broker.Queue) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	queue := def.Name
	if queue == "" {
		return errors.New("brokertest: declare: empty queue name")
	}
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.ended {
		return broker.ErrClosed
	}
	if _, ok := b.queues[queue]; !ok {
		b.queues[queue] = []*message{}
	}
	b.defs[queue] = def
	return nil
}

func (c *conn) Consume(ctx context.Context, queues []string, prefetch int) (<-chan broker.Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(queues) == 0 || prefetch < 0 {
		return nil, fmt.Errorf("brokertest: consume %v with prefetch %d", queues, prefetch)
	}
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.ended {
		return nil, broker.ErrClosed
	}
	if c.cons != nil && !c.cons.stopped {
		return nil, errors.New("brokertest: consume: this connection is already consuming")
	}
	for _, q := range queues {
		if _, ok := b.queues[q]; !ok {
			// As RabbitMQ's basic.consume: the worker must declare first.
			return nil, fmt.Errorf("brokertest: consume: NOT_FOUND - no queue %q", q)
		}
	}
	cs := &consumer{queues: slices.Clone(queues), stop: make(chan struct{}), exited: make(chan struct{})}
	c.cons, c.prefetch = cs, prefetch
	c.feeders = append(c.feeders, cs.exited)
	out := make(chan broker.Delivery)
	go feed(b, out, cs.stop, cs.exited,
		func() (broker.Delivery, bool) {
			if len(cs.pending) == 0 {
				return nil, false
			}
			d := cs.pending[0]
			// Cleared: the array behind pending would otherwise keep the
			// last delivery, and the broker's copy of its body, reachable
			// until the next one comes.
			cs.pending[0] = nil
			cs.pending = cs.pending[1:]
			if b.startAcks {
				return startingDelivery{d}, true
			}
			return d, true
		},
		func(d broker.Delivery) {
			if s, ok := d.(startingDelivery); ok {
				d = s.delivery
			}
			cs.pending = slices.Insert(cs.pending, 0, d.(*delivery))
		})
	b.changed()
	return out, nil
}

// AddQueue adds a queue to the running consumer (add_consumer).
func (c *conn) AddQueue(ctx context.Context, queue string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.ended {
		return broker.ErrClosed
	}
	cs := c.cons
	if cs == nil || cs.stopped {
		return errors.New("brokertest: add queue: not consuming")
	}
	if _, ok := b.queues[queue]; !ok {
		return fmt.Errorf("brokertest: consume: NOT_FOUND - no queue %q", queue)
	}
	if !slices.Contains(cs.queues, queue) {
		cs.queues = append(cs.queues, queue)
		b.changed()
	}
	return nil
}

// CancelQueue removes a queue from the running consumer (cancel_consumer);
// what was already taken from it stays with the worker.
func (c *conn) CancelQueue(ctx context.Context, queue string) error {
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.ended {
		return broker.ErrClosed
	}
	if cs := c.cons; cs != nil {
		if i := slices.Index(cs.queues, queue); i >= 0 {
			cs.queues = slices.Delete(cs.queues, i, i+1)
			cs.next = 0
		}
	}
	return nil
}

func (c *conn) SetPrefetch(n int) error {
	if n < 0 {
		return fmt.Errorf("brokertest: prefetch %d", n)
	}
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.ended {
		return broker.ErrClosed
	}
	// Lowering it revokes nothing, as basic.qos: the window just refills
	// once enough deliveries are settled.
	c.prefetch = n
	b.changed()
	return nil
}

func (c *conn) CancelConsume(ctx context.Context) error {
	b := c.b
	b.mu.Lock()
	slow := b.slowCancel
	b.mu.Unlock()
	if slow > 0 {
		select {
		case <-time.After(slow):
		case <-ctx.Done():
		}
	}
	b.mu.Lock()
	if c.ended {
		b.mu.Unlock()
		return broker.ErrClosed
	}
	cs := c.cons
	if cs == nil || cs.stopped {
		b.mu.Unlock()
		return nil
	}
	cs.halt()
	b.cond.Broadcast()
	b.mu.Unlock()
	<-cs.exited // prompt: the feeder only waits on b.mu, cond or stop

	b.mu.Lock()
	defer b.mu.Unlock()
	// What the worker has not read goes back in order, flagged redelivered
	// as RabbitMQ flags what the client library rejects after a cancel.
	// (If the connection ended meanwhile, end has requeued them already.)
	for _, d := range slices.Backward(cs.pending) {
		if _, ok := c.unsettled[d.tag]; ok {
			delete(c.unsettled, d.tag)
			b.requeue(d.msg)
		}
	}
	cs.pending = nil
	b.changed()
	return nil
}

func (c *conn) PublishTask(ctx context.Context, r broker.Route, env *protocol.Envelope) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.ended {
		return broker.ErrClosed
	}
	if r.Queue != nil {
		// Declared first, as a real transport does.
		if _, ok := b.queues[r.Queue.Name]; !ok {
			b.queues[r.Queue.Name] = []*message{}
		}
		b.defs[r.Queue.Name] = *r.Queue
	}
	q := b.route(r, env)
	b.published = append(b.published, Sent{Route: r, Queue: q, Envelope: cloneEnv(env)})
	return nil
}

// PublishEvent records the event. Unlike a real broker it fails on a body
// that is not a JSON event or list of events, to catch worker bugs.
func (c *conn) PublishEvent(ctx context.Context, routingKey string, env *protocol.Envelope) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	evs, err := decodeObjects(env.Body)
	if err != nil {
		return fmt.Errorf("brokertest: event %s: %w", routingKey, err)
	}
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.ended {
		return broker.ErrClosed
	}
	b.events = append(b.events, evs...)
	b.eventKeys = append(b.eventKeys, routingKey)
	return nil
}

func (c *conn) ConsumeControl(ctx context.Context, node string) (<-chan *protocol.Envelope, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.ended {
		return nil, broker.ErrClosed
	}
	if c.control[node] {
		return nil, fmt.Errorf("brokertest: already consuming control messages for %s", node)
	}
	if c.control == nil {
		c.control = map[string]bool{}
	}
	c.control[node] = true
	out := make(chan *protocol.Envelope)
	exited := make(chan struct{})
	c.feeders = append(c.feeders, exited)
	// Messages stay in the node's queue until read, so one sent while the
	// worker reconnects reaches the next connection.
	go feed(b, out, c.dying, exited,
		func() (*protocol.Envelope, bool) {
			q := b.control[node]
			if len(q) == 0 {
				return nil, false
			}
			b.control[node] = q[1:]
			return q[0], true
		},
		func(e *protocol.Envelope) { b.control[node] = slices.Insert(b.control[node], 0, e) })
	return out, nil
}

// PublishReply records the reply. It fails on a body that is not a JSON
// object, which no control client could read.
func (c *conn) PublishReply(ctx context.Context, exchange, routingKey string, env *protocol.Envelope) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var body map[string]any
	if err := json.Unmarshal(env.Body, &body); err != nil {
		return fmt.Errorf("brokertest: reply body: %w", err)
	}
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.ended {
		return broker.ErrClosed
	}
	headers, _ := cloneValue(env.Headers).(map[string]any)
	b.replies = append(b.replies, Reply{Exchange: exchange, RoutingKey: routingKey, Body: body, Headers: headers})
	return nil
}

func (c *conn) Done() <-chan struct{} { return c.done }

func (c *conn) Err() error {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	return c.err
}

// Close ends the connection; closing an ended connection does nothing.
func (c *conn) Close() error {
	c.end(nil)
	return nil
}

// end closes the connection with err (nil for Close): its channels close,
// its unsettled deliveries are requeued and marked lost, then done closes.
// A second call waits for the first.
func (c *conn) end(err error) {
	b := c.b
	b.mu.Lock()
	if c.ended {
		b.mu.Unlock()
		<-c.done
		return
	}
	c.ended, c.err = true, err
	b.conns = slices.DeleteFunc(b.conns, func(x *conn) bool { return x == c })
	close(c.dying)
	if c.cons != nil {
		c.cons.halt()
	}
	b.cond.Broadcast()
	feeders := slices.Clone(c.feeders)
	b.mu.Unlock()
	for _, exited := range feeders {
		<-exited
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	// Back at the heads of their queues in delivery order, as RabbitMQ
	// requeues a dead channel's unacknowledged messages.
	for _, tag := range slices.Backward(slices.Sorted(maps.Keys(c.unsettled))) {
		d := c.unsettled[tag]
		b.requeue(d.msg)
	}
	// One channel for all of them, as the AMQP transport has: a channel
	// per delivery cost each held message 96 bytes in the worker's
	// memory benchmarks.
	close(c.lost)
	clear(c.unsettled)
	if c.cons != nil {
		c.cons.pending = nil
	}
	close(c.done)
	b.changed()
}

// delivery is one message handed to a connection.
type delivery struct {
	c       *conn
	tag     uint64
	msg     *message // the broker's copy, requeued if need be
	info    broker.DeliveryInfo
	env     atomic.Pointer[protocol.Envelope] // the worker's copy until taken
	settled bool                              // under b.mu
}

func newDelivery(c *conn, tag uint64, m *message) *delivery {
	d := &delivery{c: c, tag: tag, msg: m, info: broker.DeliveryInfo{
		Exchange: m.exchange, RoutingKey: m.routingKey, Redelivered: m.redelivered, Priority: m.env.Priority,
		Queue: m.queue,
	}}
	d.env.Store(cloneEnv(m.env))
	return d
}

// Envelope hands the envelope over: a second call returns nil, so a test
// catches a worker that expects the transport to keep it.
func (d *delivery) Envelope() *protocol.Envelope { return d.env.Swap(nil) }

func (d *delivery) Info() broker.DeliveryInfo { return d.info }
func (d *delivery) Lost() <-chan struct{}     { return d.c.lost }
func (d *delivery) Ack() error                { return d.settle(true, false) }
func (d *delivery) Reject(requeue bool) error { return d.settle(false, requeue) }

// startingDelivery can start its ack without waiting (broker.AckStarter),
// as the AMQP transport's can; the fake settles it at once.
type startingDelivery struct{ *delivery }

func (d startingDelivery) StartAck() func() error {
	b := d.c.b
	b.mu.Lock()
	doubt, taken := b.doubt, b.doubtTaken
	b.doubt = false
	b.mu.Unlock()
	if !doubt {
		err := d.Ack()
		return func() error { return err }
	}
	if taken {
		_ = d.Ack()
	}
	go d.c.end(broker.ErrClosed)
	return func() error {
		<-d.c.done
		return fmt.Errorf("brokertest: %w: the connection ended before its confirmation", broker.ErrAckInDoubt)
	}
}

func (d *delivery) settle(ack, requeue bool) error {
	b := d.c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if d.c.ended {
		return broker.ErrClosed
	}
	if ack && b.ackErr != nil {
		b.ackFail++
		return b.ackErr
	}
	if d.settled {
		// RabbitMQ would even close the channel (unknown delivery tag).
		return fmt.Errorf("brokertest: delivery %d of %s already settled", d.tag, taskID(d.msg.env))
	}
	d.settled = true
	delete(d.c.unsettled, d.tag)
	id := taskID(d.msg.env)
	switch {
	case ack:
		b.acked = append(b.acked, id)
	case requeue:
		b.requeued = append(b.requeued, id)
		if cs := d.c.cons; cs != nil && !cs.stopped {
			b.requeuedLive = append(b.requeuedLive, id)
		}
		b.requeue(d.msg)
	default:
		b.rejected = append(b.rejected, id)
	}
	b.changed()
	return nil
}
