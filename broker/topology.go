package broker

import (
	"fmt"
	"maps"
	"time"
)

// Topology is what Celery's task_queues and task_default_* settings say
// about queues, resolved as Celery's app.amqp.Queues resolves them: which
// definition a queue name has, and what a queue it has no definition for
// looks like. The worker and the client share it so both declare a queue
// the way a Python app configured the same way does. The zero value is
// Celery's defaults: one queue "celery", classic, behind a direct exchange
// "celery", missing queues created as NewQueue does.
type Topology struct {
	// Queues are task_queues. Empty: the default queue alone is defined.
	// A queue with no exchange name gets the default exchange, one with no
	// routing key the default routing key (as Celery does).
	Queues []Queue
	// DefaultQueue is task_default_queue ("celery").
	DefaultQueue string
	// DefaultQueueType is task_default_queue_type: "classic" (default) or
	// "quorum"; it applies to the default queue when Queues is empty.
	DefaultQueueType string
	// DefaultExchange and DefaultExchangeType are task_default_exchange
	// (default: DefaultQueue) and task_default_exchange_type ("direct").
	DefaultExchange     string
	DefaultExchangeType string
	// DefaultRoutingKey is task_default_routing_key (default: DefaultQueue).
	DefaultRoutingKey string
	// NoCreateMissingQueues is task_create_missing_queues=False: a queue
	// name with no definition is an error (ErrUnknownQueue).
	NoCreateMissingQueues bool
	// MissingQueueType and MissingQueueExchangeType are
	// task_create_missing_queue_type ("classic" or "quorum") and
	// task_create_missing_queue_exchange_type (default "direct").
	MissingQueueType         string
	MissingQueueExchangeType string
	// MaxPriority is task_queue_max_priority: x-max-priority for every
	// queue that sets none (0: none).
	MaxPriority int
}

// Validate checks the settings and every definition.
func (t Topology) Validate() error {
	for _, c := range []struct{ setting, v string }{
		{"task_default_queue_type", t.DefaultQueueType}, {"task_create_missing_queue_type", t.MissingQueueType}} {
		if c.v != "" && c.v != "classic" && c.v != "quorum" {
			return fmt.Errorf("%s %q: want classic or quorum", c.setting, c.v)
		}
	}
	for _, c := range []struct{ setting, v string }{
		{"task_default_exchange_type", t.DefaultExchangeType}, {"task_create_missing_queue_exchange_type", t.MissingQueueExchangeType}} {
		if c.v != "" && (Exchange{Type: c.v}).Validate() != nil {
			return fmt.Errorf("%s %q: want direct, topic, fanout or headers", c.setting, c.v)
		}
	}
	if t.MaxPriority < 0 || t.MaxPriority > 255 {
		return fmt.Errorf("task_queue_max_priority %d: want 0 (none) to 255", t.MaxPriority)
	}
	seen := map[string]bool{}
	for _, q := range t.Defined() {
		if err := q.Validate(); err != nil {
			return err
		}
		if seen[q.Name] {
			return fmt.Errorf("queue %q is defined twice", q.Name)
		}
		seen[q.Name] = true
	}
	return nil
}

// Validate checks the exchange type.
func (e Exchange) Validate() error {
	return Queue{Name: "-", Exchange: e}.Validate()
}

func (t Topology) defaultQueue() string {
	if t.DefaultQueue == "" {
		return "celery"
	}
	return t.DefaultQueue
}

// Default is the name of the default queue (task_default_queue).
func (t Topology) Default() string { return t.defaultQueue() }

// Defined returns the defined queues, Celery's defaults applied: Queues,
// or the default queue alone.
func (t Topology) Defined() []Queue {
	qs := t.Queues
	if len(qs) == 0 {
		q := Queue{Name: t.defaultQueue()}
		if t.DefaultQueueType == "quorum" {
			q.Arguments = map[string]any{"x-queue-type": "quorum"}
		}
		qs = []Queue{q}
	}
	out := make([]Queue, len(qs))
	for i, q := range qs {
		out[i] = t.resolve(q)
	}
	return out
}

// Lookup returns the definition of the queue name: a defined one, or the
// one Celery creates for a missing queue (ErrUnknownQueue when
// NoCreateMissingQueues).
func (t Topology) Lookup(name string) (Queue, error) {
	for _, q := range t.Defined() {
		if q.Name == name {
			return q, nil
		}
	}
	if t.NoCreateMissingQueues {
		return Queue{}, fmt.Errorf("queue %q: %w", name, ErrUnknownQueue)
	}
	q := NewQueue(name)
	if t.MissingQueueType == "quorum" {
		q.Arguments = map[string]any{"x-queue-type": "quorum"}
	}
	q.Exchange.Type = t.MissingQueueExchangeType
	return t.resolve(q), nil
}

// resolve applies what Celery's Queues applies to every queue it holds:
// the default exchange and routing key where none is set, and
// task_queue_max_priority.
func (t Topology) resolve(q Queue) Queue {
	if q.Exchange.Name == "" {
		ex := t.DefaultExchange
		if ex == "" {
			ex = t.defaultQueue()
		}
		q.Exchange = Exchange{Name: ex, Type: t.DefaultExchangeType}
	}
	if q.RoutingKey == "" {
		q.RoutingKey = t.DefaultRoutingKey
		if q.RoutingKey == "" {
			q.RoutingKey = t.defaultQueue()
		}
	}
	if t.MaxPriority > 0 {
		if _, ok := q.Arguments["x-max-priority"]; !ok {
			q.Arguments = maps.Clone(q.Arguments)
			if q.Arguments == nil {
				q.Arguments = map[string]any{}
			}
			q.Arguments["x-max-priority"] = t.MaxPriority
		}
	}
	return q
}

// RouteTo is where Celery's producer (send_task_message) sends a message
// for queue q: to the exchange and routing key given, when both are; else,
// for a direct exchange, through the default exchange by the queue's name
// (Celery's anon-exchange shortcut); else through the queue's exchange by
// its routing key. The route carries q (declared before publishing) and
// the message's ETA (for native delayed delivery; nil: none).
func RouteTo(q Queue, exchange, routingKey string, eta *time.Time) Route {
	r := Route{Queue: &q}
	if eta != nil {
		r.ETA = *eta
	}
	switch {
	case exchange != "" && routingKey != "":
		r.Exchange, r.RoutingKey = exchange, routingKey
	case q.Exchange.Kind() == "direct":
		r.RoutingKey = q.Name
	default:
		r.Exchange, r.RoutingKey = q.Exchange.Name, q.RoutingKey
	}
	return r
}
