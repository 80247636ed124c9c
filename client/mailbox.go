package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
)

// controlReplyExchange is where workers answer remote control requests, as
// kombu's pidbox names it for Celery's default control exchange.
const controlReplyExchange = "reply.celery.pidbox"

// ControlOptions qualify a remote control call.
type ControlOptions struct {
	// Destination limits the command to these worker node names (default:
	// every worker).
	Destination []string
	// Timeout is how long replies are collected (default 1 s, Celery's).
	Timeout time.Duration
	// Limit stops the collection after this many replies (default: the
	// number of destinations, none without Destination), as in Celery.
	Limit int
	// OnReply, when not nil, sees each reply as it arrives (Celery's
	// callback).
	OnReply func(ControlReply)
}

// ControlReply is one worker's answer to a remote control command.
type ControlReply struct {
	// Node is the worker's node name, e.g. "celery@host".
	Node string
	// Value is the reply as the protocol decodes it: {"ok": ...} or
	// {"error": ...} for most commands, a list or dict for inspect views,
	// nil for heartbeat.
	Value any
}

// ErrNoMailbox: the broker transport cannot collect replies (it does not
// implement broker.Mailbox).
var ErrNoMailbox = errors.New("client: the broker transport cannot collect remote control replies")

// Control sends a remote control command and collects the workers'
// replies, as app.control.broadcast(..., reply=True) and
// app.control.inspect() do: the request {"method", "arguments",
// "destination", "pattern", "matcher", "ticket", "reply_to"} with headers
// {"clock", "expires"} goes to the celery.pidbox fanout exchange, and the
// replies come back on a reply queue of this call's own, bound to
// reply.celery.pidbox. Replies are returned in arrival order (a reply
// naming several nodes gives one ControlReply per node, sorted by name).
// No reply within the timeout is not an error: the result is empty.
func (c *Client) Control(ctx context.Context, method string, arguments map[string]any, o ControlOptions) ([]ControlReply, error) {
	if method == "" {
		return nil, errors.New("client: control: no method")
	}
	if arguments == nil {
		arguments = map[string]any{}
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = time.Second
	}
	limit := o.Limit
	if limit <= 0 {
		limit = len(o.Destination)
	}
	var dest any
	if len(o.Destination) > 0 {
		l := make([]any, len(o.Destination))
		for i, d := range o.Destination {
			l[i] = d
		}
		dest = l
	}
	ticket := protocol.NewUUID()
	// A reply queue per call: kombu reuses one per client id and sorts
	// replies by ticket; a fresh one keeps concurrent calls apart and is
	// deleted with the call's channel.
	replyKey := protocol.NewUUID()
	body, err := protocol.MarshalJSON(map[string]any{
		"method": method, "arguments": arguments, "destination": dest,
		"pattern": nil, "matcher": nil, "ticket": ticket,
		"reply_to": map[string]any{"exchange": controlReplyExchange, "routing_key": replyKey},
	})
	if err != nil {
		return nil, fmt.Errorf("client: control %s: %w", method, err)
	}
	now := float64(time.Now().UnixNano()) / 1e9
	req := &protocol.Envelope{
		ContentType:     protocol.ContentTypeJSON,
		ContentEncoding: "utf-8",
		Headers:         map[string]any{"clock": controlClock.Add(1), "expires": now + timeout.Seconds()},
		DeliveryMode:    2,
		Body:            body,
	}
	conn, err := c.liveConn(ctx)
	if err != nil {
		return nil, err
	}
	mb, ok := conn.(broker.Mailbox)
	if !ok {
		return nil, ErrNoMailbox
	}
	var out []ControlReply
	var decodeErr error
	call := broker.MailboxCall{
		Exchange: controlExchange, ReplyExchange: controlReplyExchange, ReplyKey: replyKey,
		Ticket: ticket, Request: req, Timeout: timeout, Limit: limit,
		OnReply: func(env *protocol.Envelope) {
			v, err := protocol.Unmarshal(env.ContentType, env.Body, protocol.DefaultAccept)
			if err != nil {
				decodeErr = fmt.Errorf("client: control %s: reply: %w", method, err)
				return
			}
			m, ok := v.(map[string]any)
			if !ok {
				decodeErr = fmt.Errorf("client: control %s: reply is a %s, not a dict", method, protocol.PyTypeName(v))
				return
			}
			for _, node := range slices.Sorted(maps.Keys(m)) {
				r := ControlReply{Node: node, Value: m[node]}
				out = append(out, r)
				if o.OnReply != nil {
					o.OnReply(r)
				}
			}
		},
	}
	if _, err := mb.Call(ctx, call); err != nil {
		return out, fmt.Errorf("client: control %s: %w", method, err)
	}
	if len(out) == 0 && decodeErr != nil {
		return nil, decodeErr
	}
	return out, nil
}
