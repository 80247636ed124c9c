package amqp

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
)

var _ broker.Mailbox = (*Conn)(nil)

// Call makes one remote control request and collects its replies, as
// kombu's Mailbox does with reply=True: on a channel of its own it
// declares the request exchange (fanout) and the reply exchange (direct),
// both non-durable as kombu declares them, then the reply queue
// "<ReplyKey>.<ReplyExchange>" (non-durable, exclusive, auto-delete,
// x-expires 10 s, x-message-ttl 300 s) bound by ReplyKey, starts consuming
// it without acknowledgements, publishes the request (with a publisher
// confirm) and keeps the replies that carry the call's ticket until Limit
// replies have come or Timeout has passed. Closing the channel at the end
// deletes the reply queue. See broker.Mailbox.
func (c *Conn) Call(ctx context.Context, mc broker.MailboxCall) ([]*protocol.Envelope, error) {
	if mc.Exchange == "" || mc.ReplyExchange == "" || mc.ReplyKey == "" || mc.Request == nil {
		return nil, errors.New("amqp: mailbox call: exchange, reply exchange, reply key and request are required")
	}
	ch, err := c.channel()
	if err != nil {
		return nil, err
	}
	defer ch.Close()
	if err := ch.ExchangeDeclare(mc.Exchange, "fanout", false, false, false, false, nil); err != nil {
		return nil, fmt.Errorf("amqp: declare exchange %q (fanout): %w", mc.Exchange, classify(err))
	}
	if err := ch.ExchangeDeclare(mc.ReplyExchange, "direct", false, false, false, false, nil); err != nil {
		return nil, fmt.Errorf("amqp: declare exchange %q (direct): %w", mc.ReplyExchange, classify(err))
	}
	q := mc.ReplyKey + "." + mc.ReplyExchange
	args := amqp091.Table{"x-expires": int32(10000), "x-message-ttl": int32(300000)}
	if _, err := ch.QueueDeclare(q, false, true, true, false, args); err != nil {
		return nil, fmt.Errorf("amqp: declare reply queue %q: %w", q, classify(err))
	}
	if err := ch.QueueBind(q, mc.ReplyKey, mc.ReplyExchange, false, nil); err != nil {
		return nil, fmt.Errorf("amqp: bind reply queue %q: %w", q, classify(err))
	}
	ds, err := ch.Consume(q, "", true, true, false, false, nil)
	if err != nil {
		return nil, fmt.Errorf("amqp: consume reply queue %q: %w", q, classify(err))
	}
	// The timer starts before the publish, so Timeout bounds the whole
	// call once the reply queue is listening.
	timer := time.NewTimer(mc.Timeout)
	defer timer.Stop()
	pub, err := PublishingOf(mc.Request)
	if err != nil {
		return nil, err
	}
	if err := c.publishConfirmed(ctx, mc.Exchange, "", pub); err != nil {
		return nil, err
	}
	var out []*protocol.Envelope
	for {
		if mc.Limit > 0 && len(out) >= mc.Limit {
			return out, nil
		}
		select {
		case d, ok := <-ds:
			if !ok {
				if err := c.Err(); err != nil {
					return out, err
				}
				return out, fmt.Errorf("amqp: reply queue %q: consumer closed", q)
			}
			env := EnvelopeOf(&d)
			if t, ok := env.Headers["ticket"]; ok && t != mc.Ticket {
				continue // another call's reply (a reused reply key)
			}
			out = append(out, env)
			if mc.OnReply != nil {
				mc.OnReply(env)
			}
		case <-timer.C:
			return out, nil
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
}
