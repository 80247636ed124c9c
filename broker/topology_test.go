package broker

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// Names resolve as celery.app.amqp.Queues resolves them.
func TestTopologyLookup(t *testing.T) {
	defined := Queue{Name: "orders", Exchange: Exchange{Name: "orders", Type: "topic"}, RoutingKey: "orders.#"}
	bare := Queue{Name: "bare"}
	tests := []struct {
		name string
		topo Topology
		q    string
		want Queue
	}{
		{"default queue", Topology{}, "celery", Queue{Name: "celery", Exchange: Exchange{Name: "celery"}, RoutingKey: "celery"}},
		{"default quorum topic", Topology{DefaultQueue: "jobs", DefaultQueueType: "quorum", DefaultExchangeType: "topic"}, "jobs",
			Queue{Name: "jobs", Exchange: Exchange{Name: "jobs", Type: "topic"}, RoutingKey: "jobs", Arguments: map[string]any{"x-queue-type": "quorum"}}},
		{"missing", Topology{DefaultQueueType: "quorum"}, "other", NewQueue("other")},
		{"missing quorum", Topology{MissingQueueType: "quorum", MissingQueueExchangeType: "topic"}, "other",
			Queue{Name: "other", Exchange: Exchange{Name: "other", Type: "topic"}, RoutingKey: "other", Arguments: map[string]any{"x-queue-type": "quorum"}}},
		{"defined", Topology{Queues: []Queue{defined}}, "orders", defined},
		// Celery gives a queue without exchange or key the defaults.
		{"bare defined", Topology{Queues: []Queue{bare}}, "bare", Queue{Name: "bare", Exchange: Exchange{Name: "celery"}, RoutingKey: "celery"}},
		{"max priority", Topology{MaxPriority: 9}, "p", Queue{Name: "p", Exchange: Exchange{Name: "p"}, RoutingKey: "p", Arguments: map[string]any{"x-max-priority": 9}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.topo.Lookup(tt.q)
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Lookup(%q) = %+v, %v; want %+v", tt.q, got, err, tt.want)
			}
		})
	}
	if _, err := (Topology{NoCreateMissingQueues: true}).Lookup("x"); !errors.Is(err, ErrUnknownQueue) {
		t.Errorf("missing with create off: %v", err)
	}
}

func TestTopologyValidate(t *testing.T) {
	quorum := Queue{Name: "q", Arguments: map[string]any{"x-queue-type": "quorum"}}
	for _, tt := range []struct {
		topo Topology
		want string
	}{
		{Topology{DefaultQueueType: "stream"}, "task_default_queue_type"},
		{Topology{DefaultExchangeType: "fan"}, "task_default_exchange_type"},
		{Topology{MaxPriority: 256}, "task_queue_max_priority"},
		{Topology{Queues: []Queue{{Name: "a"}, {Name: "a"}}}, "twice"},
		{Topology{Queues: []Queue{quorum}, MaxPriority: 5}, "cannot be a priority queue"},
		{Topology{Queues: []Queue{{Name: "a", Arguments: map[string]any{"x-max-priority": "ten"}}}}, "x-max-priority"},
	} {
		if err := tt.topo.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v, want an error naming %s", tt.topo, err, tt.want)
		}
	}
	if err := (Topology{Queues: []Queue{quorum}}).Validate(); err != nil {
		t.Error(err)
	}
}

// The queues file reads kombu's Queue(...) keyword arguments.
func TestParseQueues(t *testing.T) {
	qs, err := ParseQueues([]byte(`[
	 {"name": "orders", "exchange": "orders", "exchange_type": "topic", "routing_key": "orders.#",
	  "queue_arguments": {"x-queue-type": "quorum", "x-delivery-limit": 5}},
	 {"name": "reports", "max_priority": 10, "message_ttl": 1.5, "durable": false},
	 {"name": "audit", "exchange": "x", "bindings": [{"exchange": "events", "exchange_type": "fanout"}]}]`))
	if err != nil {
		t.Fatal(err)
	}
	want := []Queue{
		{Name: "orders", Exchange: Exchange{Name: "orders", Type: "topic"}, RoutingKey: "orders.#",
			Arguments: map[string]any{"x-queue-type": "quorum", "x-delivery-limit": int64(5)}},
		{Name: "reports", Transient: true, Arguments: map[string]any{"x-max-priority": int64(10), "x-message-ttl": int64(1500)}},
		{Name: "audit", Bindings: []Binding{{Exchange: Exchange{Name: "events", Type: "fanout"}}}},
	}
	if !reflect.DeepEqual(qs, want) {
		t.Errorf("got  %+v\nwant %+v", qs, want)
	}
}
