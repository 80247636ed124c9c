package amqp

import (
	"context"
	"errors"
	"fmt"
	"sync"

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
	declared   map[string]bool
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

// DeclareQueue declares a queue the way kombu does for a queue named on
// the worker's command line (task_create_missing_queues): a durable direct
// exchange of the same name, a durable queue, bound by the queue's name.
// Matching attributes exactly keeps RabbitMQ from answering
// PRECONDITION_FAILED when Python declares the same queue; when it does
// answer so (the queue or exchange exists otherwise), the error wraps
// broker.ErrMisconfigured.
func (c *Conn) DeclareQueue(_ context.Context, name string) error {
	ch, err := c.channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	if err := ch.ExchangeDeclare(name, "direct", true, false, false, false, nil); err != nil {
		return fmt.Errorf("amqp: declare exchange %q (durable, direct): %w", name, classify(err))
	}
	if _, err := ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
		return fmt.Errorf("amqp: declare queue %q (durable, classic, no arguments): %w", name, classify(err))
	}
	if err := ch.QueueBind(name, name, name, false, nil); err != nil {
		return fmt.Errorf("amqp: bind queue %q: %w", name, classify(err))
	}
	return nil
}

// ensureQueue declares a task queue once per connection before publishing
// to it (a canvas step or errback naming its queue), as Celery's producer
// does: a message published to a queue that does not exist yet would be
// dropped.
func (c *Conn) ensureQueue(ctx context.Context, name string) error {
	c.declaredMu.Lock()
	defer c.declaredMu.Unlock()
	if c.declared[name] {
		return nil
	}
	if err := c.DeclareQueue(ctx, name); err != nil {
		return err
	}
	if c.declared == nil {
		c.declared = map[string]bool{}
	}
	c.declared[name] = true
	return nil
}

// Consume starts consumers on queues, on one channel whose prefetch count
// is shared by all of them (global QoS, as kombu sets on RabbitMQ), and
// merges their deliveries into one channel. prefetch 0 means unlimited.
func (c *Conn) Consume(_ context.Context, queues []string, prefetch int) (<-chan broker.Delivery, error) {
	ch, err := c.channel()
	if err != nil {
		return nil, err
	}
	cons, err := startConsumer(ch, c.name, queues, prefetch, c.done)
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
// raises it while it holds ETA messages).
func (c *Conn) SetPrefetch(n int) error {
	c.consumeMu.Lock()
	cons := c.consumer
	c.consumeMu.Unlock()
	if cons == nil {
		return errors.New("amqp: qos: not consuming")
	}
	if err := cons.call(func() error { return cons.ch.Qos(n, 0, true) }); err != nil {
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
func (c *Conn) PublishTask(ctx context.Context, r broker.Route, env *protocol.Envelope) error {
	if r.Exchange == "" {
		if err := c.ensureQueue(ctx, r.RoutingKey); err != nil {
			return err
		}
	}
	pub, err := PublishingOf(env)
	if err != nil {
		return err
	}
	return c.publishConfirmed(ctx, r.Exchange, r.RoutingKey, pub)
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
