package amqp

import (
	"fmt"
	"math"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/celeryworker/gocelery/protocol"
)

// fromTable turns AMQP header values into the protocol's plain values:
// tables become map[string]any, arrays []any, integers int64.
func fromTable(t amqp091.Table) map[string]any {
	if t == nil {
		return nil
	}
	// Converted in place: the delivery's own table is not used afterwards,
	// and most values (strings, int64, nil) need no change, so this saves a
	// map per message on the hot path.
	for k, v := range t {
		switch v.(type) {
		case string, int64, nil, bool, float64:
			continue
		}
		t[k] = fromField(v)
	}
	return map[string]any(t)
}

func fromField(v any) any {
	switch x := v.(type) {
	case amqp091.Table:
		return fromTable(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = fromField(e)
		}
		return out
	case int8:
		return int64(x)
	case int16:
		return int64(x)
	case int32:
		return int64(x)
	case int:
		return int64(x)
	case uint8:
		return int64(x)
	case uint16:
		return int64(x)
	case uint32:
		return int64(x)
	case float32:
		return float64(x)
	case amqp091.Decimal:
		return float64(x.Value) / math.Pow10(int(x.Scale))
	}
	return v
}

// toTable converts protocol header values for publishing. Integers are sent
// as 64-bit ('l'): amqp091 writes a Go int as a 32-bit field and would
// truncate it.
func toTable(h map[string]any) (amqp091.Table, error) {
	if h == nil {
		return nil, nil
	}
	out := make(amqp091.Table, len(h))
	for k, v := range h {
		f, err := toField(v)
		if err != nil {
			return nil, fmt.Errorf("header %q: %w", k, err)
		}
		out[k] = f
	}
	return out, nil
}

func toField(v any) (any, error) {
	switch x := v.(type) {
	case nil, bool, string, []byte, float64, int64:
		return v, nil
	case int:
		return int64(x), nil
	case int32:
		return int64(x), nil
	case int16:
		return int64(x), nil
	case int8:
		return int64(x), nil
	case uint8:
		return int64(x), nil
	case uint16:
		return int64(x), nil
	case uint32:
		return int64(x), nil
	case uint64:
		if x > math.MaxInt64 {
			return nil, fmt.Errorf("integer %d does not fit an AMQP header", x)
		}
		return int64(x), nil
	case float32:
		return float64(x), nil
	case map[string]any:
		return toTable(x)
	case amqp091.Table:
		return toTable(map[string]any(x))
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			f, err := toField(e)
			if err != nil {
				return nil, err
			}
			out[i] = f
		}
		return out, nil
	}
	// Anything else (json.Number, tagged values) goes as its JSON text.
	b, err := protocol.MarshalJSON(v)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

// EnvelopeOf reads a delivery's parts into a protocol.Envelope.
func EnvelopeOf(d *amqp091.Delivery) *protocol.Envelope {
	return &protocol.Envelope{
		ContentType:     d.ContentType,
		ContentEncoding: d.ContentEncoding,
		Headers:         fromTable(d.Headers),
		CorrelationID:   d.CorrelationId,
		ReplyTo:         d.ReplyTo,
		DeliveryMode:    d.DeliveryMode,
		Priority:        d.Priority,
		Expiration:      d.Expiration,
		Body:            d.Body,
	}
}

// PublishingOf builds an AMQP publishing from an envelope.
func PublishingOf(env *protocol.Envelope) (amqp091.Publishing, error) {
	h, err := toTable(env.Headers)
	if err != nil {
		return amqp091.Publishing{}, fmt.Errorf("amqp: %w", err)
	}
	return amqp091.Publishing{
		Headers:         h,
		ContentType:     env.ContentType,
		ContentEncoding: env.ContentEncoding,
		DeliveryMode:    env.DeliveryMode,
		Priority:        env.Priority,
		CorrelationId:   env.CorrelationID,
		ReplyTo:         env.ReplyTo,
		Expiration:      env.Expiration,
		Body:            env.Body,
	}, nil
}
