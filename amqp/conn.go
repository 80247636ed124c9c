package amqp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
)

// Conn is one connection to RabbitMQ: a consuming channel, a publishing
// channel in confirm mode, a channel for events and one for remote
// control. It implements broker.Conn.
type Conn struct {
	conn *amqp091.Connection
	name string
	done chan struct{} // closed when the connection ends
	err  error         // why it ended; set before done is closed

	consumeMu sync.Mutex
	consumer  *consumer

	pubMu sync.Mutex
	pubCh *amqp091.Channel

	eventMu       sync.Mutex
	eventCh       *amqp091.Channel
	eventDeclared bool

	declaredMu sync.Mutex
	defs       map[string]broker.Queue // definitions given to DeclareQueue

	ensureMu   sync.Mutex
	ensured    map[string]bool // queues declared before publishing
	delayReady bool            // delayed delivery levels checked
	delayBound map[string]bool // queues bound for delayed delivery
}

var _ broker.Conn = (*Conn)(nil)

func newConn(c *amqp091.Connection, name string) *Conn {
	conn := &Conn{conn: c, name: name, done: make(chan struct{})}
	closed := c.NotifyClose(make(chan *amqp091.Error, 1))
	go func() {
		if e, ok := <-closed; ok && e != nil {
			conn.err = fmt.Errorf("amqp: connection lost: %w", e)
		}
		close(conn.done)
	}()
	return conn
}

// Done is closed when the connection ends, cleanly or not. Deliveries
// received on it can no longer be acknowledged: the broker requeues them.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err says why the connection ended (nil after Close or while it lives).
func (c *Conn) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Close sends the acknowledgements still batched, then closes the
// connection; unacknowledged deliveries go back to their queues.
func (c *Conn) Close() error {
	c.consumeMu.Lock()
	cons := c.consumer
	c.consumeMu.Unlock()
	if cons != nil {
		cons.ack.close()
	}
	if c.conn.IsClosed() {
		return nil
	}
	return c.conn.Close()
}

// IsClosed reports whether the connection is gone.
func (c *Conn) IsClosed() bool { return c.conn.IsClosed() }

// channel opens a channel, its error classified.
func (c *Conn) channel() (*amqp091.Channel, error) {
	ch, err := c.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("amqp: open channel: %w", err)
	}
	return ch, nil
}

// ensureQueue declares a task queue once per connection before publishing
// to it (a canvas step or errback naming its queue), as Celery's producer
// does: a message published to a queue that does not exist yet would be
// dropped.
func (c *Conn) ensureQueue(ctx context.Context, q broker.Queue) error {
	c.ensureMu.Lock()
	defer c.ensureMu.Unlock()
	if c.ensured[q.Name] {
		return nil
	}
	if err := c.DeclareQueue(ctx, q); err != nil {
		return err
	}
	if c.ensured == nil {
		c.ensured = map[string]bool{}
	}
	c.ensured[q.Name] = true
	return nil
}

// ensureDelayed makes sure a delayed message to q can arrive: the delay
// levels exist (declared as Celery's default, quorum, when nobody has
// yet) and q is bound to the delivery exchange. Python producers leave
// that to the worker; doing it here too means a delayed message is never
// dropped for want of a binding. Once per connection and queue.
func (c *Conn) ensureDelayed(ctx context.Context, q broker.Queue) error {
	c.ensureMu.Lock()
	defer c.ensureMu.Unlock()
	if !c.delayReady {
		exists, err := c.exchangeExists(delayedDeliveryExch)
		if err != nil {
			return err
		}
		if !exists {
			if err := c.DeclareDelayedDelivery(ctx, "quorum"); err != nil {
				return err
			}
		}
		c.delayReady = true
	}
	if c.delayBound[q.Name] {
		return nil
	}
	if _, err := c.BindDelayedDelivery(ctx, q); err != nil {
		return err
	}
	if c.delayBound == nil {
		c.delayBound = map[string]bool{}
	}
	c.delayBound[q.Name] = true
	return nil
}

// exchangeExists asks passively, on a channel of its own (RabbitMQ closes
// the channel of a passive declare that fails).
func (c *Conn) exchangeExists(name string) (bool, error) {
	ch, err := c.channel()
	if err != nil {
		return false, err
	}
	defer ch.Close()
	err = ch.ExchangeDeclarePassive(name, "topic", true, false, false, false, nil)
	var ae *amqp091.Error
	if errors.As(err, &ae) && ae.Code == amqp091.NotFound {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("amqp: check exchange %q: %w", name, classify(err))
	}
	return true, nil
}

// definition is the remembered definition of a declared queue.
func (c *Conn) definition(name string) (broker.Queue, bool) {
	c.declaredMu.Lock()
	defer c.declaredMu.Unlock()
	q, ok := c.defs[name]
	return q, ok
}

// perConsumerQoS: a quorum queue among queues refuses global QoS
// (NOT_IMPLEMENTED), so the window is set per consumer, as Celery's
// worker_detect_quorum_queues does.
func (c *Conn) perConsumerQoS(queues []string) bool {
	for _, name := range queues {
		if q, ok := c.definition(name); ok && q.Quorum() {
			return true
		}
	}
	return false
}

// Consume starts consumers on queues, on one channel whose prefetch count
// is shared by all of them (global QoS, as kombu sets on RabbitMQ), and
// merges their deliveries into one channel. prefetch 0 means unlimited.
// When one of the queues is a quorum queue (by its DeclareQueue
// definition), the count applies to each consumer instead: quorum queues
// refuse global QoS.
func (c *Conn) Consume(_ context.Context, queues []string, prefetch int) (<-chan broker.Delivery, error) {
	ch, err := c.channel()
	if err != nil {
		return nil, err
	}
	cons, err := startConsumer(ch, c.name, queues, prefetch, !c.perConsumerQoS(queues), c.done)
	if err != nil {
		ch.Close()
		return nil, err
	}
	c.consumeMu.Lock()
	c.consumer = cons
	c.consumeMu.Unlock()
	return cons.out, nil
}

// SetPrefetch changes the consuming channel's prefetch count (Celery
// raises it while it holds ETA messages). With per-consumer QoS (quorum
// queues) RabbitMQ applies a new count to consumers started afterwards
// only, as Celery notes for its own prefetch changes.
func (c *Conn) SetPrefetch(n int) error {
	c.consumeMu.Lock()
	cons := c.consumer
	c.consumeMu.Unlock()
	if cons == nil {
		return errors.New("amqp: qos: not consuming")
	}
	if err := cons.call(func() error { return cons.ch.Qos(n, 0, cons.global) }); err != nil {
		return fmt.Errorf("amqp: qos %d: %w", n, err)
	}
	cons.ack.setWindow(n)
	return nil
}

// CancelConsume stops the consumers; see broker.Conn.
func (c *Conn) CancelConsume(_ context.Context) error {
	c.consumeMu.Lock()
	cons := c.consumer
	c.consumeMu.Unlock()
	if cons == nil {
		return nil
	}
	return cons.cancel()
}

// AddQueue starts consuming one more queue on the running consumer (the
// add_consumer control command); the queue must be declared.
func (c *Conn) AddQueue(_ context.Context, queue string) error {
	c.consumeMu.Lock()
	cons := c.consumer
	c.consumeMu.Unlock()
	if cons == nil {
		return errors.New("amqp: add queue: not consuming")
	}
	if cons.global && c.perConsumerQoS([]string{queue}) {
		// RabbitMQ would answer NOT_IMPLEMENTED, a connection error: every
		// delivery would go with it.
		return broker.Misconfigured(fmt.Errorf("amqp: add queue %q: a quorum queue cannot be consumed under the global prefetch window of the running consumers (name it with the other queues at start)", queue))
	}
	return cons.add(queue)
}

// CancelQueue stops consuming one queue (cancel_consumer); deliveries
// already received from it stay valid.
func (c *Conn) CancelQueue(_ context.Context, queue string) error {
	c.consumeMu.Lock()
	cons := c.consumer
	c.consumeMu.Unlock()
	if cons == nil {
		return nil
	}
	return cons.remove(queue)
}

// PublishTask publishes a task message and waits for the broker's confirm.
// The destination queue is declared first (once per connection); a
// message due later to a quorum queue behind a non-direct exchange goes
// through native delayed delivery, as Celery's producer sends it.
func (c *Conn) PublishTask(ctx context.Context, r broker.Route, env *protocol.Envelope) error {
	q := r.Queue
	if q == nil && r.Exchange == "" {
		nq := broker.NewQueue(r.RoutingKey)
		q = &nq
	}
	if q != nil {
		if err := c.ensureQueue(ctx, *q); err != nil {
			return err
		}
	}
	pub, err := PublishingOf(env)
	if err != nil {
		return err
	}
	exchange, key := r.Exchange, r.RoutingKey
	if ex, k, ok := delayedRoute(r, time.Now()); ok {
		if err := c.ensureDelayed(ctx, *q); err != nil {
			return err
		}
		exchange, key = ex, k
	}
	return c.publishConfirmed(ctx, exchange, key, pub)
}

// PublishReply answers a remote control request.
func (c *Conn) PublishReply(ctx context.Context, exchange, routingKey string, env *protocol.Envelope) error {
	pub, err := PublishingOf(env)
	if err != nil {
		return err
	}
	return c.publishConfirmed(ctx, exchange, routingKey, pub)
}

func (c *Conn) publishConfirmed(ctx context.Context, exchange, routingKey string, msg amqp091.Publishing) error {
	c.pubMu.Lock()
	if c.pubCh == nil || c.pubCh.IsClosed() {
		ch, err := c.channel()
		if err != nil {
			c.pubMu.Unlock()
			return err
		}
		if err := ch.Confirm(false); err != nil {
			c.pubMu.Unlock()
			return fmt.Errorf("amqp: confirm mode: %w", err)
		}
		c.pubCh = ch
	}
	conf, err := c.pubCh.PublishWithDeferredConfirmWithContext(ctx, exchange, routingKey, false, false, msg)
	c.pubMu.Unlock()
	if err != nil {
		return fmt.Errorf("amqp: publish to %q/%q: %w", exchange, routingKey, err)
	}
	ok, err := conf.WaitContext(ctx)
	if err != nil {
		return fmt.Errorf("amqp: publish to %q/%q: waiting for confirm: %w", exchange, routingKey, err)
	}
	if !ok {
		return fmt.Errorf("amqp: publish to %q/%q: broker nacked the message", exchange, routingKey)
	}
	return nil
}
