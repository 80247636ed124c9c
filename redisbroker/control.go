package redisbroker

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/celeryworker/gocelery/protocol"
)

// bindingTTL is how long kombu keeps the binding of a queue with an
// expiry (pidbox and reply queues): twice x-expires, at least an hour.
func bindingTTL(expires time.Duration) time.Duration { return max(2*expires, time.Hour) }

// bindScript adds a binding and pushes its exchange's deadline (server
// clock, milliseconds) out to ARGV[3] from now, never earlier: kombu's
// binding of a queue declared with an expiry, swept once no consumer has
// refreshed it in time.
var bindScript = redis.NewScript(`
redis.call('SADD', KEYS[1], ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], 'GT', now + tonumber(ARGV[3]), ARGV[2])
return 1
`)

func (c *Conn) bindExpiring(ctx context.Context, exchange, routingKey, queue string) error {
	err := bindScript.Run(ctx, c.c, []string{c.k.binding(exchange), c.k.deadlines},
		c.k.member(routingKey, "", queue), exchange, bindingTTL(controlQueueExpires).Milliseconds()).Err()
	if err != nil {
		return fmt.Errorf("redisbroker: bind %q to %q: %w", queue, exchange, classify(err))
	}
	return nil
}

// ConsumeControl receives the remote control messages broadcast to node:
// the node's pidbox queue is bound to the celery.pidbox fanout exchange
// and its messages arrive over PSUBSCRIBE on "/<db>.celery.pidbox", as
// kombu's Mailbox consumes on Redis (no acknowledgements; a message sent
// while nobody listens is gone, as on kombu).
func (c *Conn) ConsumeControl(ctx context.Context, node string) (<-chan *protocol.Envelope, error) {
	queue := node + "." + ControlExchange
	if err := c.bindExpiring(ctx, ControlExchange, "", queue); err != nil {
		return nil, err
	}
	ps := c.c.PSubscribe(ctx, c.k.fanout(ControlExchange, ""))
	if _, err := ps.Receive(ctx); err != nil {
		ps.Close()
		return nil, fmt.Errorf("redisbroker: subscribe to %s: %w", ControlExchange, classify(err))
	}
	c.ctrlMu.Lock()
	c.ctrl = append(c.ctrl, ps)
	c.ctrlMu.Unlock()
	select {
	case <-c.done:
		ps.Close()
	default:
	}
	out := make(chan *protocol.Envelope)
	msgs := ps.Channel(redis.WithChannelSize(1000))
	go func() {
		defer close(out)
		refresh := time.NewTicker(bindingTTL(controlQueueExpires) / 3)
		defer refresh.Stop()
		for {
			select {
			case m, ok := <-msgs:
				if !ok {
					return
				}
				d, err := decodeMessage([]byte(m.Payload))
				if err != nil {
					continue
				}
				select {
				case out <- d.env:
				case <-c.done:
					return
				}
			case <-refresh.C:
				_ = c.bindExpiring(context.Background(), ControlExchange, "", queue)
			case <-c.done:
				return
			}
		}
	}()
	return out, nil
}
