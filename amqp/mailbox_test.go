package amqp

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
)

// fakeNode consumes node's pidbox queue on its own connection and answers
// every request with the given replies (ticket "" = the request's own).
func fakeNode(t *testing.T, ctx context.Context, node string, replies func(req map[string]any) []map[string]any) {
	t.Helper()
	c := liveConn(t)
	reqs, err := c.ConsumeControl(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for env := range reqs {
			var req map[string]any
			if json.Unmarshal(env.Body, &req) != nil {
				continue
			}
			rt, _ := req["reply_to"].(map[string]any)
			ex, _ := rt["exchange"].(string)
			key, _ := rt["routing_key"].(string)
			for _, r := range replies(req) {
				ticket, _ := r["ticket"].(string)
				if ticket == "" {
					ticket, _ = req["ticket"].(string)
				}
				body, _ := json.Marshal(map[string]any{node: r["value"]})
				_ = c.PublishReply(ctx, ex, key, &protocol.Envelope{ContentType: "application/json", ContentEncoding: "utf-8",
					DeliveryMode: 1, Headers: map[string]any{"ticket": ticket, "clock": int64(1)}, Body: body})
			}
		}
	}()
}

// mailboxRequest is a request for node alone (other workers on the test
// broker ignore it).
func mailboxRequest(method, ticket, replyKey, node string) *protocol.Envelope {
	body, _ := json.Marshal(map[string]any{"method": method, "arguments": map[string]any{}, "destination": []string{node},
		"pattern": nil, "matcher": nil, "ticket": ticket,
		"reply_to": map[string]any{"exchange": ControlReplyExchange, "routing_key": replyKey}})
	return &protocol.Envelope{ContentType: "application/json", ContentEncoding: "utf-8", DeliveryMode: 2,
		Headers: map[string]any{"clock": int64(1), "expires": float64(time.Now().Unix() + 5)}, Body: body}
}

func TestMailboxCall(t *testing.T) {
	c := liveConn(t).(*Conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	node := "mailbox-test-" + protocol.NewUUID()[:8] + "@localhost"
	fakeNode(t, ctx, node, func(req map[string]any) []map[string]any {
		return []map[string]any{
			{"ticket": "someone-else", "value": "not mine"},
			{"value": map[string]any{"ok": req["method"]}},
		}
	})
	call := func(limit int, timeout time.Duration) ([]*protocol.Envelope, time.Duration) {
		t.Helper()
		ticket, key := protocol.NewUUID(), protocol.NewUUID()
		var seen int
		start := time.Now()
		out, err := c.Call(ctx, broker.MailboxCall{Exchange: ControlExchange, ReplyExchange: ControlReplyExchange,
			ReplyKey: key, Ticket: ticket, Request: mailboxRequest("ping", ticket, key, node), Timeout: timeout, Limit: limit,
			OnReply: func(*protocol.Envelope) { seen++ }})
		if err != nil {
			t.Fatal(err)
		}
		if seen != len(out) {
			t.Errorf("OnReply saw %d of %d replies", seen, len(out))
		}
		return out, time.Since(start)
	}
	// Limit 1: back as soon as the node answered, the other ticket dropped.
	out, d := call(1, 10*time.Second)
	if len(out) != 1 || d > 5*time.Second {
		t.Fatalf("%d replies in %v", len(out), d)
	}
	var body map[string]map[string]string
	if err := json.Unmarshal(out[0].Body, &body); err != nil || body[node]["ok"] != "ping" || out[0].Headers["ticket"] == nil {
		t.Errorf("reply %s %v (%v)", out[0].Body, out[0].Headers, err)
	}
	// No limit: every reply with the ticket until the timeout.
	out, d = call(0, 500*time.Millisecond)
	if d < 500*time.Millisecond || d > 5*time.Second {
		t.Errorf("no limit: returned after %v", d)
	}
	mine := 0
	for _, env := range out {
		var b map[string]any
		if json.Unmarshal(env.Body, &b) == nil && b[node] != nil {
			mine++
			if b[node] == "not mine" {
				t.Errorf("a reply with another ticket was kept")
			}
		}
	}
	if mine != 1 {
		t.Errorf("%d replies from %s, want 1", mine, node)
	}
}

// The reply queue is kombu's: <key>.reply.celery.pidbox, gone after the
// call.
func TestMailboxReplyQueueDeleted(t *testing.T) {
	c := liveConn(t).(*Conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ticket, key := protocol.NewUUID(), protocol.NewUUID()
	if _, err := c.Call(ctx, broker.MailboxCall{Exchange: ControlExchange, ReplyExchange: ControlReplyExchange,
		ReplyKey: key, Ticket: ticket, Request: mailboxRequest("ping", ticket, key, "nobody@nowhere"), Timeout: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		// On the call's own connection: the queue is exclusive to it.
		ch, err := c.channel()
		if err != nil {
			t.Fatal(err)
		}
		_, err = ch.QueueDeclarePassive(key+"."+ControlReplyExchange, false, true, true, false, nil)
		ch.Close()
		var ae *amqp091.Error
		if errors.As(err, &ae) && ae.Code == amqp091.NotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reply queue still there after the call (%v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := c.Call(ctx, broker.MailboxCall{}); err == nil {
		t.Error("a call without exchange, key and request should fail")
	}
}
