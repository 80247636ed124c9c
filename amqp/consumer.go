package amqp

import (
	"errors"
	"fmt"
	"sync"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
)

// consumer is the consuming channel: one basic.consume per queue, merged
// into one Go channel of broker.Delivery, acknowledgements batched by the
// acker.
type consumer struct {
	ch        *amqp091.Channel
	ack       *acker
	tagPrefix string
	out       chan broker.Delivery
	// lost is closed when the channel ends: its unsettled deliveries are
	// back in their queues and must not be started.
	lost chan struct{}

	// callMu serialises synchronous methods on ch (consume, cancel, qos,
	// the acker's confirm): amqp091 hands a reply to whichever caller
	// waits, so two calls at once could each get the other's answer.
	callMu sync.Mutex

	mu         sync.Mutex
	tags       map[string]string // queue -> consumer tag
	n          int               // consumers started, for unique tags
	forwarders sync.WaitGroup
	cancelOnce sync.Once
	cancelled  chan struct{}
}

func startConsumer(ch *amqp091.Channel, tagPrefix string, queues []string, prefetch int, connDone <-chan struct{}) (*consumer, error) {
	if err := ch.Qos(prefetch, 0, true); err != nil {
		return nil, fmt.Errorf("amqp: qos %d: %w", prefetch, err)
	}
	// confirm.select is the cheapest synchronous method RabbitMQ has: on a
	// channel that never publishes it changes nothing, and its answer comes
	// only after the acks before it are processed.
	c := &consumer{ch: ch, tagPrefix: tagPrefix, out: make(chan broker.Delivery),
		lost: make(chan struct{}), cancelled: make(chan struct{}), tags: map[string]string{}}
	c.ack = newAcker(ch, func() error { return c.call(func() error { return ch.Confirm(false) }) })
	c.ack.setWindow(prefetch)
	chClosed := ch.NotifyClose(make(chan *amqp091.Error, 1))
	go func() {
		select {
		case <-chClosed:
		case <-connDone:
		}
		close(c.lost)
		c.ack.close() // a lost channel: stop the acker's loop
	}()
	for _, q := range queues {
		if err := c.add(q); err != nil {
			c.ack.close()
			return nil, err
		}
	}
	// out closes once consuming has ended (channel lost or all consumers
	// cancelled) and every forwarder has returned; cancelling one queue
	// leaves it open.
	go func() {
		select {
		case <-c.lost:
		case <-c.cancelled:
		}
		c.forwarders.Wait()
		close(c.out)
	}()
	return c, nil
}

// call runs one synchronous method on the channel (see callMu).
func (c *consumer) call(f func() error) error {
	c.callMu.Lock()
	defer c.callMu.Unlock()
	return f()
}

// add starts consuming queue on the channel.
func (c *consumer) add(queue string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.cancelled:
		return broker.ErrClosed
	case <-c.lost:
		return broker.ErrClosed
	default:
	}
	if _, ok := c.tags[queue]; ok {
		return nil
	}
	tag := fmt.Sprintf("%s-%d-%s", c.tagPrefix, c.n, queue)
	var ds <-chan amqp091.Delivery
	err := c.call(func() (err error) {
		ds, err = c.ch.Consume(queue, tag, false, false, false, false, nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("amqp: consume queue %q: %w", queue, classify(err))
	}
	c.n++
	c.tags[queue] = tag
	c.forwarders.Add(1)
	go func() {
		defer c.forwarders.Done()
		for d := range ds {
			c.forward(&d)
		}
	}()
	return nil
}

// remove stops consuming queue; deliveries already received stay valid.
func (c *consumer) remove(queue string) error {
	c.mu.Lock()
	tag, ok := c.tags[queue]
	delete(c.tags, queue)
	c.mu.Unlock()
	if !ok {
		return nil
	}
	if err := c.call(func() error { return c.ch.Cancel(tag, false) }); err != nil && !errors.Is(err, amqp091.ErrClosed) {
		return fmt.Errorf("amqp: cancel consumer of %q: %w", queue, err)
	}
	return nil
}

// forward hands a delivery to the worker, or, once consuming is
// cancelled, puts it straight back: the worker no longer reads, and an
// unread delivery would block the connection.
func (c *consumer) forward(d *amqp091.Delivery) {
	del := &delivery{env: EnvelopeOf(d), tag: d.DeliveryTag, c: c, info: broker.DeliveryInfo{
		Exchange: d.Exchange, RoutingKey: d.RoutingKey, Redelivered: d.Redelivered, Priority: d.Priority}}
	select {
	case <-c.cancelled:
		_ = c.ack.Reject(d.DeliveryTag, true)
		return
	default:
	}
	select {
	case c.out <- del:
	case <-c.cancelled:
		_ = c.ack.Reject(d.DeliveryTag, true)
	}
}

func (c *consumer) cancel() error {
	var errs []error
	c.cancelOnce.Do(func() {
		c.mu.Lock()
		close(c.cancelled)
		tags := c.tags
		c.tags = map[string]string{}
		c.mu.Unlock()
		for _, tag := range tags {
			if err := c.call(func() error { return c.ch.Cancel(tag, false) }); err != nil && !errors.Is(err, amqp091.ErrClosed) {
				errs = append(errs, err)
			}
		}
	})
	return errors.Join(errs...)
}

// delivery implements broker.Delivery. It is small on purpose: the worker
// keeps it for as long as it holds an ETA task.
type delivery struct {
	env  *protocol.Envelope
	tag  uint64
	c    *consumer
	info broker.DeliveryInfo
}

func (d *delivery) Envelope() *protocol.Envelope {
	e := d.env
	d.env = nil
	return e
}
func (d *delivery) Info() broker.DeliveryInfo { return d.info }
func (d *delivery) Lost() <-chan struct{}     { return d.c.lost }

// Ack is batched by the acker; on a lost channel it fails at once, since
// the broker has already requeued the message.
func (d *delivery) Ack() error {
	if err := d.isLost(); err != nil {
		return err
	}
	return d.c.ack.Ack(d.tag, false)
}

func (d *delivery) Reject(requeue bool) error {
	if err := d.isLost(); err != nil {
		return err
	}
	return d.c.ack.Reject(d.tag, requeue)
}

func (d *delivery) isLost() error {
	select {
	case <-d.c.lost:
		return broker.ErrClosed
	default:
		return nil
	}
}

// AckNow acknowledges and returns once the ack is written to the connection
// (broker.NowAcker): an early-ack task starts only after it.
func (d *delivery) AckNow() error {
	if err := d.isLost(); err != nil {
		return err
	}
	return d.c.ack.AckNow(d.tag)
}
