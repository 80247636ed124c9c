package brokertest_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/broker/brokertest"
	"github.com/celeryworker/gocelery/protocol"
)

// Call copies the request to every node's pidbox queue, as the fanout
// exchange does, and collects the replies that carry its ticket.
func TestMailboxCall(t *testing.T) {
	b := brokertest.New()
	answer := func(node string, replies int) {
		c := dial(t, b)
		reqs, err := c.ConsumeControl(ctx, node)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for env := range reqs {
				var req struct {
					Ticket  string `json:"ticket"`
					ReplyTo struct {
						Exchange   string `json:"exchange"`
						RoutingKey string `json:"routing_key"`
					} `json:"reply_to"`
				}
				if json.Unmarshal(env.Body, &req) != nil {
					continue
				}
				for i := 0; i < replies; i++ {
					ticket := req.Ticket
					if i > 0 {
						ticket = "another"
					}
					body, _ := json.Marshal(map[string]any{node: map[string]any{"ok": "pong"}})
					_ = c.PublishReply(ctx, req.ReplyTo.Exchange, req.ReplyTo.RoutingKey,
						&protocol.Envelope{ContentType: "application/json", Headers: map[string]any{"ticket": ticket}, Body: body})
				}
			}
		}()
	}
	answer("a@h", 2)
	answer("b@h", 1)
	caller := dial(t, b)
	mb, ok := caller.(broker.Mailbox)
	if !ok {
		t.Fatal("brokertest connections do not implement broker.Mailbox")
	}
	call := func(limit int, timeout time.Duration) []*protocol.Envelope {
		ticket, key := protocol.NewUUID(), protocol.NewUUID()
		body, _ := json.Marshal(map[string]any{"method": "ping", "ticket": ticket,
			"reply_to": map[string]any{"exchange": "reply.celery.pidbox", "routing_key": key}})
		n := 0
		out, err := mb.Call(ctx, broker.MailboxCall{Exchange: "celery.pidbox", ReplyExchange: "reply.celery.pidbox",
			ReplyKey: key, Ticket: ticket, Timeout: timeout, Limit: limit, OnReply: func(*protocol.Envelope) { n++ },
			Request: &protocol.Envelope{ContentType: "application/json", Body: body}})
		if err != nil {
			t.Fatal(err)
		}
		if n != len(out) {
			t.Errorf("OnReply saw %d of %d", n, len(out))
		}
		return out
	}
	start := time.Now()
	if out := call(0, 200*time.Millisecond); len(out) != 2 {
		t.Errorf("%d replies, want 2 (one per node; another ticket dropped)", len(out))
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("returned after %v, before the timeout", d)
	}
	start = time.Now()
	if out := call(1, wait); len(out) != 1 || time.Since(start) > wait/2 {
		t.Errorf("limit 1: %d replies after %v", len(out), time.Since(start))
	}
}
