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
	ch *amqp091.Channel
	// rpc serializes the synchronous methods on ch (qos, consume, cancel)
	// against each other and against the acker's confirm.select barriers:
	// amqp091 hands each answer to whichever call waits, and a qos call
	// that takes a barrier's confirm.select-ok fails with 503 "unexpected
	// command received" and closes the channel, as happened when an ETA
	// task changed the prefetch while an early ack's barrier was out.
	// Barriers share the read side: their answers are all alike, and the
	// acker counts them rather than matching them to calls.
	rpc       *sync.RWMutex
	global    bool // global QoS; false: per consumer (quorum queues)
	ack       *acker
	tagPrefix string
	out       chan broker.Delivery
	// lost is closed when the channel ends: its unsettled deliveries are
	// back in their queues and must not be started.
	lost chan struct{}

	mu         sync.Mutex
	tags       map[string]string // queue -> consumer tag
	n          int               // consumers started, for unique tags
	forwarders sync.WaitGroup
	cancelOnce sync.Once
	cancelled  chan struct{}
}

func startConsumer(ch *amqp091.Channel, tagPrefix string, queues []string, prefetch int, global bool, connDone <-chan struct{}) (*consumer, error) {
	if err := ch.Qos(prefetch, 0, global); err != nil {
		return nil, fmt.Errorf("amqp: qos %d: %w", prefetch, err)
	}
	window := prefetch
	if !global {
		window *= len(queues) // each consumer has its own window
	}
	// confirm.select is the cheapest synchronous method RabbitMQ has: on a
	// channel that never publishes it changes nothing, and its answer comes
	// only after the acks before it are processed.
	rpc := &sync.RWMutex{}
	confirm := func() error {
		rpc.RLock()
		defer rpc.RUnlock()
		return ch.Confirm(false)
	}
	c := &consumer{ch: ch, rpc: rpc, global: global, ack: newAcker(ch, confirm), tagPrefix: tagPrefix, out: make(chan broker.Delivery),
		lost: make(chan struct{}), cancelled: make(chan struct{}), tags: map[string]string{}}
	c.ack.setWindow(window)
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
	c.rpc.Lock()
	ds, err := c.ch.Consume(queue, tag, false, false, false, false, nil)
	c.rpc.Unlock()
	if err != nil {
		return fmt.Errorf("amqp: consume queue %q: %w", queue, classify(err))
	}
	c.n++
	c.tags[queue] = tag
	c.forwarders.Add(1)
	go func() {
		defer c.forwarders.Done()
		for d := range ds {
			c.forward(&d, queue)
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
func (c *consumer) forward(d *amqp091.Delivery, queue string) {
	del := &delivery{env: EnvelopeOf(d), tag: d.DeliveryTag, c: c, info: broker.DeliveryInfo{
		Exchange: d.Exchange, RoutingKey: d.RoutingKey, Redelivered: d.Redelivered, Priority: d.Priority, Queue: queue}}
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

// call runs one synchronous method on the channel (see rpc).
func (c *consumer) call(f func() error) error {
	c.rpc.Lock()
	defer c.rpc.Unlock()
	return f()
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

// StartAck is AckNow without the wait (broker.AckStarter).
func (d *delivery) StartAck() func() error {
	if err := d.isLost(); err != nil {
		return func() error { return err }
	}
	return d.c.ack.StartAck(d.tag)
}
