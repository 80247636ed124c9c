// Package broker is the seam between the worker and a message broker: the
// few things the worker needs from a transport (dial, declare and consume
// queues under a prefetch window, settle deliveries, publish task messages,
// events and control replies, learn that the connection is gone). Transports
// (amqp/ for RabbitMQ) implement it; the worker knows no broker library.
// brokertest/ is an in-memory implementation for tests.
package broker

import (
	"context"
	"errors"
	"time"

	"github.com/celeryworker/gocelery/protocol"
)

// ErrMisconfigured marks faults that no retry can heal: an unsupported or
// unparsable URL, refused credentials, a missing virtual host, a queue or
// exchange that exists with other arguments. The worker stops on them
// instead of retrying.
var ErrMisconfigured = errors.New("misconfigured")

// ErrClosed is returned by operations on a connection that has ended.
var ErrClosed = errors.New("broker: connection closed")

// ErrAckInDoubt marks an acknowledgement that left the process but whose
// confirmation never came back: the connection ended in between, and the
// broker may have processed it (the message is gone) or not (it is
// requeued). The worker runs such a task rather than risk losing it, and
// recognises the redelivery if it comes back to it.
var ErrAckInDoubt = errors.New("broker: ack sent, not confirmed")

// Transport opens connections to one broker.
type Transport interface {
	// Dial connects. Errors that wrap ErrMisconfigured are final; any other
	// error (refused TCP connect, timeout) may heal and is retried.
	Dial(ctx context.Context, p DialParams) (Conn, error)
	// Info describes the broker for logs, the banner and inspect stats, with
	// credentials redacted.
	Info() Info
}

// DialParams are what the worker tells a transport about itself.
type DialParams struct {
	// Name identifies the connection on the broker (the node name).
	Name string
}

// Info describes a broker connection target, passwords never included.
type Info struct {
	Transport   string // "amqp", "memory", ...
	URL         string // redacted
	Hostname    string
	Port        int
	UserID      string
	VirtualHost string
	SSL         bool
	Heartbeat   float64 // seconds, 0 when off
}

// Conn is one live connection.
type Conn interface {
	// DeclareQueue declares a task queue and what routes to it (its
	// exchange, bindings) exactly as kombu declares the same definition,
	// so Python and Go can declare it in either order. A queue that exists
	// otherwise gives an error wrapping ErrMisconfigured. The connection
	// remembers the definition (even with NoDeclare): Consume and
	// AddQueue use it (a quorum queue needs per-consumer QoS).
	DeclareQueue(ctx context.Context, q Queue) error
	// Consume starts consuming queues (declared first with DeclareQueue),
	// at most prefetch unsettled deliveries at once (0: unlimited); where
	// the broker counts the window per consumer (RabbitMQ with quorum
	// queues) it is per queue. The channel closes when the
	// connection ends or after CancelConsume; deliveries that arrive after
	// CancelConsume are requeued by the transport.
	Consume(ctx context.Context, queues []string, prefetch int) (<-chan Delivery, error)
	// SetPrefetch changes the prefetch window of the running consumers.
	SetPrefetch(n int) error
	// AddQueue starts consuming one more (declared) queue on the running
	// consumer, under the same prefetch window; consuming a queue twice is
	// a no-op.
	AddQueue(ctx context.Context, queue string) error
	// CancelQueue stops consuming one queue; deliveries already received
	// from it stay valid, and the delivery channel stays open.
	CancelQueue(ctx context.Context, queue string) error
	// CancelConsume stops the consumers. Deliveries already received stay
	// valid for Ack/Reject.
	CancelConsume(ctx context.Context) error
	// PublishTask publishes a task message and waits until the broker has
	// taken it (publisher confirms on AMQP).
	PublishTask(ctx context.Context, r Route, env *protocol.Envelope) error
	// PublishEvent sends a monitoring event (celeryev) with routing key
	// such as "task.succeeded"; best effort, no confirm.
	PublishEvent(ctx context.Context, routingKey string, env *protocol.Envelope) error
	// ConsumeControl starts receiving remote control (pidbox) messages for
	// node; the channel closes with the connection.
	ConsumeControl(ctx context.Context, node string) (<-chan *protocol.Envelope, error)
	// PublishReply answers a control message at its reply_to address.
	PublishReply(ctx context.Context, exchange, routingKey string, env *protocol.Envelope) error
	// Done is closed when the connection has ended; Err then says why.
	Done() <-chan struct{}
	Err() error
	// Close flushes pending acknowledgements and closes the connection;
	// unsettled deliveries go back to their queues.
	Close() error
}

// Route says where a task message goes: to Exchange with RoutingKey, or,
// with Exchange empty, to the queue named RoutingKey through the default
// exchange. The destination queue is declared first if needed, as
// Celery's producer declares the queue it routes to: as Queue says, or
// (Queue nil, Exchange empty) as NewQueue(RoutingKey).
type Route struct {
	Exchange   string
	RoutingKey string
	// Queue is the destination queue's definition, when known.
	Queue *Queue
	// ETA, when set, is when the message is due (its eta header says the
	// same). A transport that can hold messages broker-side for such a
	// queue does so: RabbitMQ's native delayed delivery, for a quorum
	// Queue behind a topic, fanout or headers exchange, as Celery's
	// producer does. Otherwise the message is delivered at once and the
	// worker holds it until its eta.
	ETA time.Time
}

// DeliveryInfo is where a delivery came from (Python's
// request.delivery_info).
type DeliveryInfo struct {
	Exchange    string
	RoutingKey  string
	Redelivered bool
	Priority    uint8
	// Queue is the queue it was consumed from ("" if the transport does
	// not know).
	Queue string
}

// DelayedDelivery is an optional interface of a Conn: RabbitMQ's native
// delayed delivery (kombu's transport/native_delayed_delivery.py), which
// Celery sets up at worker start when it serves quorum queues.
type DelayedDelivery interface {
	// DeclareDelayedDelivery declares the delay levels (queues of
	// queueType, "quorum" or "classic", and their exchanges) and the
	// delivery exchange.
	DeclareDelayedDelivery(ctx context.Context, queueType string) error
	// BindDelayedDelivery binds q (and the exchanges it is reached
	// through) so messages leaving the delay levels reach it. Direct
	// exchanges cannot be reached (the delay changes the routing key):
	// their names come back in skipped, for the caller's warning.
	BindDelayedDelivery(ctx context.Context, q Queue) (skipped []string, err error)
}

// Delivery is one consumed task message.
type Delivery interface {
	// Envelope returns the message. It is handed over: the transport keeps
	// no reference to it, so the worker can drop it once decoded.
	Envelope() *protocol.Envelope
	Info() DeliveryInfo
	// Ack and Reject settle the delivery; requeue puts it back in its queue.
	Ack() error
	Reject(requeue bool) error
	// Lost is closed once the delivery can no longer be settled (its
	// connection is gone and the broker has requeued it). A lost delivery
	// must never be started: another worker will run it.
	Lost() <-chan struct{}
}

// NowAcker is implemented by deliveries whose Ack may return before the
// acknowledgement has left the process (batched, as the AMQP transport
// does). AckNow returns only once it is written to the connection (and,
// where the transport can, processed by the broker); an error means it was
// not, and the broker will redeliver the message, unless it wraps
// ErrAckInDoubt. The worker acks an early-ack task with it before starting
// the task, so a lost connection does not run an acknowledged task twice.
// A transport whose Ack already writes before returning need not implement
// it.
type NowAcker interface {
	AckNow() error
}

// AckNow acknowledges d with its AckNow when it has one, else with Ack.
func AckNow(d Delivery) error {
	if n, ok := d.(NowAcker); ok {
		return n.AckNow()
	}
	return d.Ack()
}

// AckStarter is implemented by deliveries whose AckNow can be started
// without waiting for it: StartAck sends the acknowledgement on its way
// (sharing a write with the others started meanwhile) and returns a wait
// that reports what AckNow would have. The worker starts the ack of the
// next few early-ack tasks while the current ones run, so the broker's
// round trip overlaps their work instead of preceding each start.
// StartAck must not block (the worker calls it under its own locks); an
// ack started on a connection already known lost fails plainly, not in
// doubt (broker.ErrAckInDoubt).
type AckStarter interface {
	StartAck() (wait func() error)
}

// Misconfigured marks err as a fault no retry can heal: the result wraps
// ErrMisconfigured for errors.Is and keeps err's text and chain.
func Misconfigured(err error) error {
	if err == nil {
		return nil
	}
	return misconfigured{err}
}

type misconfigured struct{ err error }

func (m misconfigured) Error() string   { return m.err.Error() }
func (m misconfigured) Unwrap() []error { return []error{m.err, ErrMisconfigured} }
