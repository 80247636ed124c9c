package amqp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// Delivery is one consumed message; Ack/Reject go back on the channel it
// came from.
type Delivery = amqp091.Delivery

// Conn is one connection to RabbitMQ with a consuming channel and a
// publishing channel in confirm mode.
type Conn struct {
	conn *amqp091.Connection
	done chan struct{} // closed when the connection ends

	consumeMu sync.Mutex
	consumeCh *amqp091.Channel
	acker     *acker
	global    bool

	pubMu sync.Mutex
	pubCh *amqp091.Channel

	eventMu sync.Mutex
	eventCh *amqp091.Channel

	declaredMu sync.Mutex
	declared   map[string]bool
}

// Dial connects to a Celery-style broker URL.
func Dial(ctx context.Context, rawURL string, connectionName string) (*Conn, error) {
	uri, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	cfg := amqp091.Config{
		Heartbeat: 60 * time.Second,
		Locale:    "en_US",
		Properties: amqp091.Table{
			"connection_name": connectionName,
			"product":         "gocelery",
		},
		Dial: amqp091.DefaultDial(10 * time.Second),
	}
	type result struct {
		c   *amqp091.Connection
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := amqp091.DialConfig(uri.String(), cfg)
		done <- result{c, err}
	}()
	var c *amqp091.Connection
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("amqp: dial %s: %w", Redacted(rawURL), r.err)
		}
		c = r.c
	case <-ctx.Done():
		go func() {
			if r := <-done; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, fmt.Errorf("amqp: dial %s: %w", Redacted(rawURL), ctx.Err())
	}
	conn := &Conn{conn: c, global: true, done: make(chan struct{})}
	closed := c.NotifyClose(make(chan *amqp091.Error, 1))
	go func() {
		<-closed
		close(conn.done)
	}()
	return conn, nil
}

// Done is closed when the connection ends, cleanly or not. Deliveries
// received on it can no longer be acknowledged: the broker requeues them.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Close sends the acknowledgements still batched, then closes the
// connection; unacknowledged deliveries go back to their queues.
func (c *Conn) Close() error {
	c.consumeMu.Lock()
	a := c.acker
	c.consumeMu.Unlock()
	if a != nil {
		a.close()
	}
	return c.conn.Close()
}

// IsClosed reports whether the connection is gone.
func (c *Conn) IsClosed() bool { return c.conn.IsClosed() }

// DeclareTaskQueue declares a queue the way kombu does for a queue named on
// the worker's command line (task_create_missing_queues): a durable direct
// exchange of the same name, a durable queue, bound by the queue's name.
// Matching attributes exactly keeps RabbitMQ from answering
// PRECONDITION_FAILED when Python declares the same queue.
func (c *Conn) DeclareTaskQueue(name string) error {
	ch, err := c.conn.Channel()
	if err != nil {
		return fmt.Errorf("amqp: open channel: %w", err)
	}
	defer ch.Close()
	if err := ch.ExchangeDeclare(name, "direct", true, false, false, false, nil); err != nil {
		return fmt.Errorf("amqp: declare exchange %q: %w", name, err)
	}
	if _, err := ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
		return fmt.Errorf("amqp: declare queue %q: %w", name, err)
	}
	if err := ch.QueueBind(name, name, name, false, nil); err != nil {
		return fmt.Errorf("amqp: bind queue %q: %w", name, err)
	}
	return nil
}

// EnsureTaskQueue declares a task queue once per connection before the
// worker publishes to it (a canvas step or errback naming its queue), as
// Celery's producer does: a message published to a queue that does not
// exist yet would be dropped.
func (c *Conn) EnsureTaskQueue(name string) error {
	c.declaredMu.Lock()
	defer c.declaredMu.Unlock()
	if c.declared[name] {
		return nil
	}
	if err := c.DeclareTaskQueue(name); err != nil {
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
// merges their deliveries into one channel that closes when the AMQP
// channel does. prefetch 0 means unlimited.
func (c *Conn) Consume(queues []string, prefetch int, tagPrefix string) (<-chan Delivery, error) {
	ch, err := c.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("amqp: open channel: %w", err)
	}
	if err := ch.Qos(prefetch, 0, c.global); err != nil {
		return nil, fmt.Errorf("amqp: qos %d: %w", prefetch, err)
	}
	out := make(chan Delivery)
	ack := newAcker(ch)
	go func() {
		<-c.done // a lost connection: stop the acker's loop
		ack.close()
	}()
	var wg sync.WaitGroup
	for i, q := range queues {
		tag := fmt.Sprintf("%s-%d-%s", tagPrefix, i, q)
		ds, err := ch.Consume(q, tag, false, false, false, false, nil)
		if err != nil {
			ch.Close()
			return nil, fmt.Errorf("amqp: consume queue %q: %w", q, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range ds {
				d.Acknowledger = ack
				out <- d
			}
		}()
	}
	go func() {
		wg.Wait()
		close(out)
	}()
	c.consumeMu.Lock()
	c.consumeCh = ch
	c.acker = ack
	c.consumeMu.Unlock()
	return out, nil
}

// Qos changes the consuming channel's prefetch count (Celery raises it
// while it holds ETA messages).
func (c *Conn) Qos(prefetch int) error {
	c.consumeMu.Lock()
	defer c.consumeMu.Unlock()
	if c.consumeCh == nil {
		return errors.New("amqp: qos: not consuming")
	}
	if err := c.consumeCh.Qos(prefetch, 0, c.global); err != nil {
		return fmt.Errorf("amqp: qos %d: %w", prefetch, err)
	}
	return nil
}

// Cancel stops the consumers; deliveries already received stay valid for
// Ack/Reject until the channel closes.
func (c *Conn) Cancel(tagPrefix string, queues []string) error {
	c.consumeMu.Lock()
	ch := c.consumeCh
	c.consumeMu.Unlock()
	if ch == nil {
		return nil
	}
	var errs []error
	for i, q := range queues {
		if err := ch.Cancel(fmt.Sprintf("%s-%d-%s", tagPrefix, i, q), false); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Publish sends a message and waits for the broker's confirm.
func (c *Conn) Publish(ctx context.Context, exchange, routingKey string, msg amqp091.Publishing) error {
	c.pubMu.Lock()
	if c.pubCh == nil || c.pubCh.IsClosed() {
		ch, err := c.conn.Channel()
		if err != nil {
			c.pubMu.Unlock()
			return fmt.Errorf("amqp: open publish channel: %w", err)
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
