package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
)

// replyPoll bounds one blocking pop of the reply queue, so the call's
// timeout is kept to within this.
const replyPoll = 100 * time.Millisecond

// Call makes one remote control request and collects its replies, as
// kombu's Mailbox does on Redis: the reply queue "<ReplyKey>.<ReplyExchange>"
// is bound to the reply exchange by ReplyKey (with a deadline, as a queue
// with an expiry), the request is PUBLISHed on the control fanout, and the
// replies the workers push onto the reply queue's list are popped until
// Limit have come or Timeout has passed. The reply queue's binding and
// list are removed at the end. See broker.Mailbox.
func (c *Conn) Call(ctx context.Context, mc broker.MailboxCall) ([]*protocol.Envelope, error) {
	if mc.Exchange == "" || mc.ReplyExchange == "" || mc.ReplyKey == "" || mc.Request == nil {
		return nil, errors.New("redisbroker: mailbox call: exchange, reply exchange, reply key and request are required")
	}
	queue := mc.ReplyKey + "." + mc.ReplyExchange
	if err := c.DeclareExchange(ctx, mc.ReplyExchange, "direct", false); err != nil {
		return nil, err
	}
	if err := c.DeclareExchange(ctx, mc.Exchange, "fanout", false); err != nil {
		return nil, err
	}
	if err := c.bindExpiring(ctx, mc.ReplyExchange, mc.ReplyKey, queue); err != nil {
		return nil, err
	}
	lists := c.k.allLists(queue)
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_, _ = c.c.Pipelined(cctx, func(p redis.Pipeliner) error {
			p.SRem(cctx, c.k.binding(mc.ReplyExchange), c.k.member(mc.ReplyKey, "", queue))
			p.Del(cctx, lists...)
			return nil
		})
	}()
	deadline := time.Now().Add(mc.Timeout)
	if err := c.publish(ctx, mc.Exchange, "", mc.Request); err != nil {
		return nil, err
	}
	var out []*protocol.Envelope
	for {
		if mc.Limit > 0 && len(out) >= mc.Limit {
			return out, nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return out, nil
		}
		if err := ctx.Err(); err != nil {
			return out, err
		}
		wait := min(left, replyPoll)
		args := make([]any, 0, len(lists)+2)
		args = append(args, "brpop")
		for _, l := range lists {
			args = append(args, l)
		}
		args = append(args, strconv.FormatFloat(wait.Seconds(), 'f', 3, 64))
		res, err := c.c.Do(ctx, args...).StringSlice()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return out, ctx.Err()
			}
			return out, fmt.Errorf("redisbroker: reply queue %q: %w", queue, classify(err))
		}
		if len(res) != 2 {
			continue
		}
		d, err := decodeMessage([]byte(res[1]))
		if err != nil {
			continue
		}
		if t, ok := d.env.Headers["ticket"]; ok && t != mc.Ticket {
			continue // another call's reply (a reused reply key)
		}
		out = append(out, d.env)
		if mc.OnReply != nil {
			mc.OnReply(d.env)
		}
	}
}
