package amqp

import (
	"fmt"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// Mailbox entity names, as kombu's pidbox declares them for Celery's
// default control exchange.
const (
	ControlExchange      = "celery.pidbox"
	ControlReplyExchange = "reply.celery.pidbox"
)

// ConsumeControl declares the worker's remote control queue
// (<node>.celery.pidbox: non-durable, exclusive, auto-delete, x-expires 10 s,
// x-message-ttl 300 s, bound to the celery.pidbox fanout exchange) and the
// reply exchange, and consumes the queue without acknowledgements, as
// kombu's Mailbox does.
func (c *Conn) ConsumeControl(node string) (<-chan Delivery, error) {
	ch, err := c.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("amqp: open control channel: %w", err)
	}
	fail := func(what string, err error) (<-chan Delivery, error) {
		ch.Close()
		return nil, fmt.Errorf("amqp: %s: %w", what, err)
	}
	if err := ch.ExchangeDeclare(ControlExchange, "fanout", false, false, false, false, nil); err != nil {
		return fail("declare exchange "+ControlExchange, err)
	}
	if err := ch.ExchangeDeclare(ControlReplyExchange, "direct", false, false, false, false, nil); err != nil {
		return fail("declare exchange "+ControlReplyExchange, err)
	}
	q := node + "." + ControlExchange
	args := amqp091.Table{"x-expires": int32(10000), "x-message-ttl": int32(300000)}
	if _, err := ch.QueueDeclare(q, false, true, true, false, args); err != nil {
		return fail(fmt.Sprintf("declare queue %q", q), err)
	}
	if err := ch.QueueBind(q, "", ControlExchange, false, nil); err != nil {
		return fail(fmt.Sprintf("bind queue %q", q), err)
	}
	ds, err := ch.Consume(q, node+"-control", true, true, false, false, nil)
	if err != nil {
		return fail(fmt.Sprintf("consume queue %q", q), err)
	}
	return ds, nil
}

// EventExchange is Celery's event exchange (topic, durable).
const EventExchange = "celeryev"

// DeclareEventExchange declares celeryev as kombu does.
func (c *Conn) DeclareEventExchange() error {
	ch, err := c.conn.Channel()
	if err != nil {
		return fmt.Errorf("amqp: open channel: %w", err)
	}
	defer ch.Close()
	if err := ch.ExchangeDeclare(EventExchange, "topic", true, false, false, false, nil); err != nil {
		return fmt.Errorf("amqp: declare exchange %q: %w", EventExchange, err)
	}
	return nil
}

// PublishTransient sends a message without waiting for a confirm, on a
// channel of its own: events are transient and best effort, as in Celery.
func (c *Conn) PublishTransient(exchange, key string, msg amqp091.Publishing) error {
	c.eventMu.Lock()
	defer c.eventMu.Unlock()
	if c.eventCh == nil || c.eventCh.IsClosed() {
		ch, err := c.conn.Channel()
		if err != nil {
			return fmt.Errorf("amqp: open event channel: %w", err)
		}
		c.eventCh = ch
	}
	if err := c.eventCh.Publish(exchange, key, false, false, msg); err != nil {
		return fmt.Errorf("amqp: publish to %q/%q: %w", exchange, key, err)
	}
	return nil
}
