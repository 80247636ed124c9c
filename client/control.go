package client

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
)

// controlExchange is the remote control mailbox exchange, as kombu's
// pidbox names it for Celery's default control exchange.
const controlExchange = "celery.pidbox"

// RevokeOptions qualify a revoke.
type RevokeOptions struct {
	// Terminate also stops a running task (Celery signals its process;
	// a Go worker cancels its context) and records REVOKED "terminated".
	Terminate bool
	// Signal names the signal for Terminate (default "SIGTERM").
	Signal string
	// Destination limits the command to these worker node names (default:
	// every worker).
	Destination []string
}

// Revoke tells the workers not to run the tasks ids, as
// app.control.revoke does: a "revoke" command broadcast on the
// celery.pidbox fanout exchange, which every worker (Go or Python) reads
// from its own pidbox queue. A worker that gets it stores REVOKED for each
// id (Celery 5.6.2+) and skips the task when it arrives; with Terminate a
// running task is stopped too. No reply is awaited, as in Celery.
func (c *Client) Revoke(ctx context.Context, ids []string, o RevokeOptions) error {
	if len(ids) == 0 {
		return nil
	}
	sig := o.Signal
	if sig == "" {
		sig = "SIGTERM"
	}
	var taskID any = ids[0]
	if len(ids) > 1 {
		l := make([]any, len(ids))
		for i, id := range ids {
			l[i] = id
		}
		taskID = l
	}
	return c.Broadcast(ctx, "revoke", map[string]any{"task_id": taskID, "terminate": o.Terminate, "signal": sig}, o.Destination)
}

var controlClock atomic.Int64

// Broadcast sends a remote control command without waiting for replies
// (kombu's Mailbox._broadcast with reply=False): body {"method",
// "arguments", "destination", "pattern", "matcher"} with headers {"clock",
// "expires"}, JSON, to the celery.pidbox fanout exchange, declared first
// as kombu does.
func (c *Client) Broadcast(ctx context.Context, method string, arguments map[string]any, destination []string) error {
	if arguments == nil {
		arguments = map[string]any{}
	}
	var dest any
	if len(destination) > 0 {
		l := make([]any, len(destination))
		for i, d := range destination {
			l[i] = d
		}
		dest = l
	}
	body, err := protocol.MarshalJSON(map[string]any{
		"method": method, "arguments": arguments, "destination": dest,
		"pattern": nil, "matcher": nil,
	})
	if err != nil {
		return fmt.Errorf("client: control %s: %w", method, err)
	}
	now := float64(time.Now().UnixNano()) / 1e9
	env := &protocol.Envelope{
		ContentType:     protocol.ContentTypeJSON,
		ContentEncoding: "utf-8",
		Headers:         map[string]any{"clock": controlClock.Add(1), "expires": now + 1.0},
		DeliveryMode:    2,
		Body:            body,
	}
	declare := func(ctx context.Context, d exchangeDeclarer) error {
		return d.DeclareExchange(ctx, controlExchange, "fanout", false)
	}
	return c.publish(ctx, broker.Route{Exchange: controlExchange}, env, declare)
}
