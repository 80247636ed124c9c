package brokertest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
)

var _ broker.Mailbox = (*conn)(nil)

// Call implements broker.Mailbox in memory: the request is queued on the
// pidbox queue of every node a live connection consumes with
// ConsumeControl (and of every node SendControl has addressed), as the
// celery.pidbox fanout exchange copies it to each bound queue; the replies
// a worker publishes with PublishReply to mc.ReplyExchange/mc.ReplyKey
// with the call's ticket are collected until mc.Limit have come or
// mc.Timeout has passed. Replies are recorded in Replies as well.
func (c *conn) Call(ctx context.Context, mc broker.MailboxCall) ([]*protocol.Envelope, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if mc.Request == nil {
		return nil, fmt.Errorf("brokertest: mailbox call without a request")
	}
	deadline := time.Now().Add(mc.Timeout)
	b := c.b
	b.mu.Lock()
	if c.ended {
		b.mu.Unlock()
		return nil, broker.ErrClosed
	}
	nodes := map[string]bool{}
	for node := range b.control {
		nodes[node] = true
	}
	for _, other := range b.conns {
		for node := range other.control {
			nodes[node] = true
		}
	}
	for node := range nodes {
		b.control[node] = append(b.control[node], cloneEnv(mc.Request))
	}
	seen := len(b.replies)
	b.changed()
	b.mu.Unlock()

	var out []*protocol.Envelope
	for wait := 100 * time.Microsecond; ; wait = min(2*wait, 5*time.Millisecond) {
		b.mu.Lock()
		fresh := slices.Clone(b.replies[seen:])
		seen = len(b.replies)
		ended := c.ended
		b.mu.Unlock()
		for _, r := range fresh {
			if r.Exchange != mc.ReplyExchange || r.RoutingKey != mc.ReplyKey {
				continue
			}
			if t, ok := r.Headers["ticket"]; ok && t != mc.Ticket {
				continue
			}
			body, err := json.Marshal(r.Body)
			if err != nil {
				return out, fmt.Errorf("brokertest: reply body: %w", err)
			}
			env := &protocol.Envelope{ContentType: protocol.ContentTypeJSON, ContentEncoding: "utf-8",
				DeliveryMode: 1, Headers: r.Headers, Body: body}
			out = append(out, env)
			if mc.OnReply != nil {
				mc.OnReply(env)
			}
			if mc.Limit > 0 && len(out) >= mc.Limit {
				return out, nil
			}
		}
		if ended {
			return out, broker.ErrClosed
		}
		if !time.Now().Before(deadline) {
			return out, nil
		}
		t := time.NewTimer(min(wait, time.Until(deadline)))
		select {
		case <-ctx.Done():
			t.Stop()
			return out, ctx.Err()
		case <-t.C:
		}
	}
}
