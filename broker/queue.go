package broker

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/celeryworker/gocelery/protocol"
)

// Queue is a task queue as Celery's task_queues and kombu's Queue(...)
// define it: what to declare, and what routes to it. The zero value of
// every field is kombu's default, so Queue{Name: "q"} is kombu's
// Queue("q"): durable, not exclusive, not auto-deleted, no exchange (only
// the default exchange reaches it). NewQueue gives the queue Celery
// creates for a name it does not know (task_create_missing_queues).
//
// A transport declares it as kombu's Queue.declare does: the exchange
// (unless it has no name), the queue with its arguments, the binding by
// RoutingKey (when the exchange has a name), then each extra binding with
// its exchange. (kombu's constructor drops the main exchange of a queue
// given bindings; Celery's Queues then puts the default exchange back,
// which Topology does too.)
type Queue struct {
	Name       string
	Exchange   Exchange
	RoutingKey string
	// Bindings bind the queue to more exchanges (kombu's
	// Queue(name, [binding(...), ...])).
	Bindings []Binding
	// Arguments are the queue arguments (x-queue-type, x-max-priority,
	// x-message-ttl, x-dead-letter-exchange, ...). Integers are sent as
	// py-amqp sends Python ints, so the broker sees the same arguments
	// whichever side declares first.
	Arguments map[string]any
	// BindingArguments go with the main binding (headers exchanges).
	BindingArguments map[string]any
	// Transient is kombu's durable=False.
	Transient bool
	// AutoDelete deletes the queue when its last consumer is gone.
	AutoDelete bool
	// Exclusive queues belong to one connection; exclusive implies
	// auto-delete, as in kombu.
	Exclusive bool
	// NoDeclare: never declare the queue, its exchange or bindings (it
	// must exist); kombu's no_declare.
	NoDeclare bool
}

// Exchange is kombu's Exchange(...). The zero Type is "direct"; a queue
// whose exchange has no Name is reached through the default exchange only.
type Exchange struct {
	Name string
	// Type is direct (default), topic, fanout or headers.
	Type       string
	Transient  bool // kombu's durable=False
	AutoDelete bool
	Arguments  map[string]any
	NoDeclare  bool
}

// Binding is one extra binding of a queue (kombu's binding(...)).
type Binding struct {
	Exchange   Exchange
	RoutingKey string
	Arguments  map[string]any
}

// ExchangeTypes are the exchange types a queue definition may name.
var ExchangeTypes = []string{"direct", "topic", "fanout", "headers"}

// ErrUnknownQueue: a queue is named that no definition has, and
// task_create_missing_queues is off.
var ErrUnknownQueue = errors.New("unknown queue (task_create_missing_queues is off)")

// NewQueue is the queue Celery creates for a name it has no definition
// for: a durable queue bound by its name to a durable direct exchange of
// the same name.
func NewQueue(name string) Queue {
	return Queue{Name: name, Exchange: Exchange{Name: name}, RoutingKey: name}
}

// Kind is the exchange type, "direct" when none is set.
func (e Exchange) Kind() string {
	if e.Type == "" {
		return "direct"
	}
	return e.Type
}

// Durable is kombu's durable (true unless Transient).
func (e Exchange) Durable() bool { return !e.Transient }

// Durable is kombu's durable (true unless Transient).
func (q Queue) Durable() bool { return !q.Transient }

// Type is the queue's x-queue-type argument: "classic" when not set.
func (q Queue) Type() string {
	if t, ok := q.Arguments["x-queue-type"].(string); ok && t != "" {
		return t
	}
	return "classic"
}

// Quorum reports whether it is a quorum queue: consumers of it need
// per-consumer QoS, and delayed messages to it go through RabbitMQ's
// native delayed delivery.
func (q Queue) Quorum() bool { return q.Type() == "quorum" }

// MaxPriority is the x-max-priority argument (0: not a priority queue).
func (q Queue) MaxPriority() int {
	n, _ := protocol.Int(q.Arguments["x-max-priority"])
	return int(n)
}

// DelayedDeliveryBindings are the exchanges and routing keys through which
// native delayed delivery reaches the queue, as kombu's
// bind_queue_to_native_delayed_delivery_exchange picks them: the main
// exchange, or else each extra binding's. Direct exchanges cannot take part
// (the delay prefix changes the routing key); they are returned in direct
// so the caller can warn about them.
func (q Queue) DelayedDeliveryBindings() (usable []Binding, direct []string) {
	var bs []Binding
	if q.Exchange.Name != "" {
		bs = []Binding{{Exchange: q.Exchange, RoutingKey: q.RoutingKey, Arguments: q.BindingArguments}}
	} else {
		bs = q.Bindings
	}
	for _, b := range bs {
		if b.Exchange.Kind() == "direct" {
			direct = append(direct, b.Exchange.Name)
			continue
		}
		usable = append(usable, b)
	}
	return usable, direct
}

// Validate checks what a broker would refuse or what kombu could not
// express: a name, known exchange types, an integer x-max-priority of
// 1..255.
func (q Queue) Validate() error {
	if q.Name == "" {
		return errors.New("queue: no name")
	}
	exs := []Exchange{q.Exchange}
	for _, b := range q.Bindings {
		if b.Exchange.Name == "" {
			return fmt.Errorf("queue %q: a binding names no exchange", q.Name)
		}
		exs = append(exs, b.Exchange)
	}
	for _, e := range exs {
		if !slices.Contains(ExchangeTypes, e.Kind()) {
			return fmt.Errorf("queue %q: exchange %q: type %q is not one of %s", q.Name, e.Name, e.Type, strings.Join(ExchangeTypes, ", "))
		}
	}
	if v, ok := q.Arguments["x-max-priority"]; ok {
		n, isInt := protocol.Int(v)
		if !isInt || n < 1 || n > 255 {
			return fmt.Errorf("queue %q: x-max-priority %v: want an integer from 1 to 255", q.Name, v)
		}
	}
	switch t := q.Type(); t {
	case "classic", "quorum", "stream":
	default:
		return fmt.Errorf("queue %q: x-queue-type %q: want classic, quorum or stream", q.Name, t)
	}
	if _, ok := q.Arguments["x-max-priority"]; ok && q.Type() != "classic" {
		// RabbitMQ answers PRECONDITION_FAILED ("invalid arg").
		return fmt.Errorf("queue %q: x-max-priority: a %s queue cannot be a priority queue (priority queues are classic; drop --task-queue-max-priority or give the queue its own definition)", q.Name, q.Type())
	}
	return nil
}
