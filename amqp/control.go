package amqp

import (
	"context"
	"fmt"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/celeryworker/gocelery/protocol"
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
func (c *Conn) ConsumeControl(_ context.Context, node string) (<-chan *protocol.Envelope, error) {
	ch, err := c.channel()
	if err != nil {
		return nil, err
	}
	fail := func(what string, err error) (<-chan *protocol.Envelope, error) {
		ch.Close()
		return nil, fmt.Errorf("amqp: %s: %w", what, classify(err))
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
	out := make(chan *protocol.Envelope)
	go func() {
		defer close(out)
		for d := range ds {
			out <- EnvelopeOf(&d)
		}
	}()
	return out, nil
}

// EventExchange is Celery's event exchange (topic, durable).
const EventExchange = "celeryev"

// PublishEvent sends an event to celeryev without waiting for a confirm,
// on a channel of its own: events are transient and best effort, as in
// Celery. The exchange is declared on first use on each connection.
func (c *Conn) PublishEvent(_ context.Context, routingKey string, env *protocol.Envelope) error {
	pub, err := PublishingOf(env)
	if err != nil {
		return err
	}
	c.eventMu.Lock()
	defer c.eventMu.Unlock()
	if c.eventCh == nil || c.eventCh.IsClosed() {
		ch, err := c.channel()
		if err != nil {
			return err
		}
		c.eventCh = ch
		c.eventDeclared = false
	}
	if !c.eventDeclared {
		if err := c.eventCh.ExchangeDeclare(EventExchange, "topic", true, false, false, false, nil); err != nil {
			return fmt.Errorf("amqp: declare exchange %q: %w", EventExchange, err)
		}
		c.eventDeclared = true
	}
	if err := c.eventCh.Publish(EventExchange, routingKey, false, false, pub); err != nil {
		return fmt.Errorf("amqp: publish to %q/%q: %w", EventExchange, routingKey, err)
	}
	return nil
}
