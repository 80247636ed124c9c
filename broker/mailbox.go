package broker

import (
	"context"
	"time"

	"github.com/celeryworker/gocelery/protocol"
)

// Mailbox is an optional interface of a Conn: a remote control request
// whose replies are collected, as kombu's Mailbox does for
// app.control.broadcast(..., reply=True) and app.control.inspect(). The
// worker never needs it; producers (the client package, `gocelery
// inspect`) check for it with a type assertion.
type Mailbox interface {
	// Call listens on the reply queue, publishes the request and returns
	// the replies that carry the call's ticket, in arrival order, once
	// Limit replies have come or Timeout has passed. When ctx ends first it
	// returns the replies so far with ctx's error.
	Call(ctx context.Context, c MailboxCall) ([]*protocol.Envelope, error)
}

// MailboxCall is one request/reply exchange with the workers' pidbox
// queues.
type MailboxCall struct {
	// Exchange receives the request: Celery's "celery.pidbox" fanout, from
	// which every worker's <node>.celery.pidbox queue takes a copy.
	Exchange string
	// ReplyExchange and ReplyKey say where replies go: the request body's
	// reply_to {"exchange": ReplyExchange, "routing_key": ReplyKey}. The
	// transport declares the reply queue "<ReplyKey>.<ReplyExchange>"
	// (non-durable, exclusive, auto-delete) bound by ReplyKey, as kombu
	// does for a client id. Use a fresh ReplyKey per concurrent call.
	ReplyExchange string
	ReplyKey      string
	// Ticket is the request's ticket; a reply whose ticket header differs
	// is dropped (one without a ticket header is kept, as kombu keeps it).
	Ticket string
	// Request is the request message, body already encoded.
	Request *protocol.Envelope
	// Timeout bounds the whole collection (0: return right after
	// publishing).
	Timeout time.Duration
	// Limit stops the collection after this many replies (0: none).
	Limit int
	// OnReply, when not nil, sees each kept reply as it arrives.
	OnReply func(*protocol.Envelope)
}
