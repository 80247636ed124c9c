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
	ch   *amqp091.Channel
	ack  *acker
	tags []string
	out  chan broker.Delivery
	// lost is closed when the channel ends: its unsettled deliveries are
	// back in their queues and must not be started.
	lost chan struct{}

	cancelOnce sync.Once
	cancelled  chan struct{}
}

func startConsumer(ch *amqp091.Channel, tagPrefix string, queues []string, prefetch int, connDone <-chan struct{}) (*consumer, error) {
	if err := ch.Qos(prefetch, 0, true); err != nil {
		return nil, fmt.Errorf("amqp: qos %d: %w", prefetch, err)
	}
	c := &consumer{ch: ch, ack: newAcker(ch), out: make(chan broker.Delivery),
		lost: make(chan struct{}), cancelled: make(chan struct{})}
	chClosed := ch.NotifyClose(make(chan *amqp091.Error, 1))
	go func() {
		select {
		case <-chClosed:
		case <-connDone:
		}
		close(c.lost)
		c.ack.close() // a lost channel: stop the acker's loop
	}()
	var wg sync.WaitGroup
	for i, q := range queues {
		tag := fmt.Sprintf("%s-%d-%s", tagPrefix, i, q)
		ds, err := ch.Consume(q, tag, false, false, false, false, nil)
		if err != nil {
			c.ack.close()
			return nil, fmt.Errorf("amqp: consume queue %q: %w", q, classify(err))
		}
		c.tags = append(c.tags, tag)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range ds {
				c.forward(&d)
			}
		}()
	}
	go func() {
		wg.Wait()
		close(c.out)
	}()
	return c, nil
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
		close(c.cancelled)
		for _, tag := range c.tags {
			if err := c.ch.Cancel(tag, false); err != nil && !errors.Is(err, amqp091.ErrClosed) {
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
