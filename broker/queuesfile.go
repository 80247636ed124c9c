package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
)

// ParseQueues reads queue definitions written as JSON: a list of objects
// whose keys are kombu's Queue(...) keyword arguments (as
// Queue.from_dict reads them, the form Celery's task_queues takes as a
// dict), e.g.
//
//	[{"name": "orders", "exchange": "orders", "exchange_type": "topic",
//	  "routing_key": "orders.#", "queue_arguments": {"x-queue-type": "quorum"}},
//	 {"name": "reports", "max_priority": 10, "message_ttl": 3600},
//	 {"name": "audit", "bindings": [{"exchange": "events", "exchange_type": "fanout"}]}]
//
// Keys: name (required); exchange, exchange_type (default direct),
// routing_key (binding_key is an alias); durable and auto_delete (queue
// and exchange, as from_dict), exchange_durable, exchange_auto_delete,
// exchange_arguments; exclusive; no_declare; queue_arguments;
// binding_arguments; expires and message_ttl in seconds, max_length,
// max_length_bytes, max_priority (kombu turns them into x-expires,
// x-message-ttl in milliseconds, x-max-length, x-max-length-bytes,
// x-max-priority); bindings, a list of {exchange, exchange_type,
// routing_key, arguments}. An unknown key is an error (a typo would
// otherwise declare another queue than meant). Integers in arguments are
// sent as Python sends ints, other numbers as doubles.
func ParseQueues(data []byte) ([]Queue, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	var raw []queueJSON
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("not a JSON list of queue objects: %w", err)
	}
	if dec.More() {
		return nil, errors.New("text after the JSON list")
	}
	out := make([]Queue, 0, len(raw))
	for i, r := range raw {
		q, err := r.queue()
		if err == nil {
			err = q.Validate()
		}
		if err != nil {
			return nil, fmt.Errorf("queue #%d (%q): %w", i+1, r.Name, err)
		}
		out = append(out, q)
	}
	return out, nil
}

type queueJSON struct {
	Name               string         `json:"name"`
	Exchange           *string        `json:"exchange"`
	ExchangeType       string         `json:"exchange_type"`
	RoutingKey         string         `json:"routing_key"`
	BindingKey         string         `json:"binding_key"`
	Durable            *bool          `json:"durable"`
	AutoDelete         *bool          `json:"auto_delete"`
	ExchangeDurable    *bool          `json:"exchange_durable"`
	ExchangeAutoDelete *bool          `json:"exchange_auto_delete"`
	ExchangeArguments  map[string]any `json:"exchange_arguments"`
	Exclusive          bool           `json:"exclusive"`
	NoDeclare          bool           `json:"no_declare"`
	QueueArguments     map[string]any `json:"queue_arguments"`
	BindingArguments   map[string]any `json:"binding_arguments"`
	Expires            *json.Number   `json:"expires"`
	MessageTTL         *json.Number   `json:"message_ttl"`
	MaxLength          *json.Number   `json:"max_length"`
	MaxLengthBytes     *json.Number   `json:"max_length_bytes"`
	MaxPriority        *json.Number   `json:"max_priority"`
	Bindings           []bindingJSON  `json:"bindings"`
}

type bindingJSON struct {
	Exchange     string         `json:"exchange"`
	ExchangeType string         `json:"exchange_type"`
	RoutingKey   string         `json:"routing_key"`
	Arguments    map[string]any `json:"arguments"`
}

func (r queueJSON) queue() (Queue, error) {
	if r.Name == "" {
		return Queue{}, errors.New(`no "name"`)
	}
	q := Queue{
		Name:             r.Name,
		RoutingKey:       r.RoutingKey,
		Arguments:        jsonArgs(r.QueueArguments),
		BindingArguments: jsonArgs(r.BindingArguments),
		Exclusive:        r.Exclusive,
		NoDeclare:        r.NoDeclare,
	}
	if q.RoutingKey == "" {
		q.RoutingKey = r.BindingKey
	}
	q.Transient = r.Durable != nil && !*r.Durable
	q.AutoDelete = r.AutoDelete != nil && *r.AutoDelete
	// Without "exchange" kombu's from_dict gives an unnamed exchange, which
	// Celery (and Topology) replace with the default exchange.
	if r.Exchange != nil {
		q.Exchange = Exchange{Name: *r.Exchange, Type: r.ExchangeType, Arguments: jsonArgs(r.ExchangeArguments)}
		q.Exchange.Transient = q.Transient
		if r.ExchangeDurable != nil {
			q.Exchange.Transient = !*r.ExchangeDurable
		}
		q.Exchange.AutoDelete = q.AutoDelete
		if r.ExchangeAutoDelete != nil {
			q.Exchange.AutoDelete = *r.ExchangeAutoDelete
		}
	}
	for _, b := range r.Bindings {
		q.Bindings = append(q.Bindings, Binding{
			Exchange:   Exchange{Name: b.Exchange, Type: b.ExchangeType},
			RoutingKey: b.RoutingKey,
			Arguments:  jsonArgs(b.Arguments),
		})
	}
	if len(q.Bindings) > 0 {
		// kombu drops the main exchange of a queue given bindings.
		q.Exchange = Exchange{}
	}
	conv := []struct {
		key  string
		v    *json.Number
		msec bool
	}{
		{"x-expires", r.Expires, true}, {"x-message-ttl", r.MessageTTL, true},
		{"x-max-length", r.MaxLength, false}, {"x-max-length-bytes", r.MaxLengthBytes, false},
		{"x-max-priority", r.MaxPriority, false},
	}
	for _, c := range conv {
		if c.v == nil {
			continue
		}
		f, err := c.v.Float64()
		if err != nil || f < 0 || math.IsInf(f, 0) {
			return Queue{}, fmt.Errorf("%s %s: want a non-negative number", c.key, c.v)
		}
		if c.msec {
			f *= 1000 // kombu: seconds to int milliseconds
		}
		if q.Arguments == nil {
			q.Arguments = map[string]any{}
		}
		q.Arguments[c.key] = int64(f)
	}
	return q, nil
}

// jsonArgs turns decoded JSON numbers into int64 (integers) or float64,
// as Python's json gives int and float.
func jsonArgs(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = jsonValue(v)
	}
	return out
}

func jsonValue(v any) any {
	switch x := v.(type) {
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		return jsonArgs(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonValue(e)
		}
		return out
	}
	return v
}
