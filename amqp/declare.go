package amqp

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
)

// DeclareQueue declares q exactly as kombu's Queue.declare does for the
// same definition: the exchange (unless unnamed or NoDeclare), the queue
// with its arguments, the binding by routing key, then each extra binding
// and its exchange. Matching kombu's flags and argument types keeps
// RabbitMQ from answering PRECONDITION_FAILED whichever of a Python and a
// Go worker declares first; when it does answer so (the queue or exchange
// exists otherwise), the error wraps broker.ErrMisconfigured.
//
// The definition is remembered even with NoDeclare: Consume picks
// per-consumer QoS for quorum queues from it.
func (c *Conn) DeclareQueue(_ context.Context, q broker.Queue) error {
	if err := q.Validate(); err != nil {
		return broker.Misconfigured(fmt.Errorf("amqp: %w", err))
	}
	c.declaredMu.Lock()
	if c.defs == nil {
		c.defs = map[string]broker.Queue{}
	}
	c.defs[q.Name] = q
	c.declaredMu.Unlock()
	if q.NoDeclare {
		return nil
	}
	ch, err := c.channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	if err := declareExchange(ch, q.Exchange); err != nil {
		return err
	}
	args := queueArgs(q.Arguments)
	if _, err := ch.QueueDeclare(q.Name, q.Durable(), q.AutoDelete || q.Exclusive, q.Exclusive, false, args); err != nil {
		return fmt.Errorf("amqp: declare queue %q (%s): %w", q.Name, describeQueue(q), classify(err))
	}
	if q.Exchange.Name != "" {
		if err := ch.QueueBind(q.Name, q.RoutingKey, q.Exchange.Name, false, queueArgs(q.BindingArguments)); err != nil {
			return fmt.Errorf("amqp: bind queue %q to %q by %q: %w", q.Name, q.Exchange.Name, q.RoutingKey, classify(err))
		}
	}
	for _, b := range q.Bindings {
		if err := declareExchange(ch, b.Exchange); err != nil {
			return err
		}
		if err := ch.QueueBind(q.Name, b.RoutingKey, b.Exchange.Name, false, queueArgs(b.Arguments)); err != nil {
			return fmt.Errorf("amqp: bind queue %q to %q by %q: %w", q.Name, b.Exchange.Name, b.RoutingKey, classify(err))
		}
	}
	return nil
}

// declareExchange declares e as kombu's Exchange.declare: nothing for the
// default (unnamed) exchange, amq.* ones or NoDeclare.
func declareExchange(ch *amqp091.Channel, e broker.Exchange) error {
	if e.Name == "" || e.NoDeclare || strings.HasPrefix(e.Name, "amq.") {
		return nil
	}
	if err := ch.ExchangeDeclare(e.Name, e.Kind(), e.Durable(), e.AutoDelete, false, false, queueArgs(e.Arguments)); err != nil {
		return fmt.Errorf("amqp: declare exchange %q (%s, durable %v, auto_delete %v): %w", e.Name, e.Kind(), e.Durable(), e.AutoDelete, classify(err))
	}
	return nil
}

// describeQueue says how the queue was declared, for the error that names
// the difference.
func describeQueue(q broker.Queue) string {
	s := fmt.Sprintf("%s, durable %v, auto_delete %v, exclusive %v", q.Type(), q.Durable(), q.AutoDelete || q.Exclusive, q.Exclusive)
	if len(q.Arguments) > 0 {
		s += fmt.Sprintf(", arguments %v", q.Arguments)
	}
	return s
}

// queueArgs converts declaration arguments to the field types py-amqp
// writes for the same Python values: ints as 32-bit signed ('I') unless
// they do not fit, then 64-bit; floats as doubles; nested tables and
// lists likewise. RabbitMQ compares an existing queue's arguments with a
// redeclaration's, so both sides must agree.
func queueArgs(m map[string]any) amqp091.Table {
	if m == nil {
		return nil
	}
	t := make(amqp091.Table, len(m))
	for k, v := range m {
		t[k] = argField(v)
	}
	return t
}

func argField(v any) any {
	if n, ok := protocol.Int(v); ok {
		if n >= -math.MaxInt32 && n <= math.MaxInt32 {
			return int32(n)
		}
		return n
	}
	switch x := v.(type) {
	case map[string]any:
		return queueArgs(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = argField(e)
		}
		return out
	case float32:
		return float64(x)
	}
	return v
}

// Native delayed delivery, as kombu's transport/native_delayed_delivery.py
// lays it out: 28 levels, celery_delayed_27 ... celery_delayed_0, each a
// topic exchange and a queue whose messages expire after 2^level seconds
// into the next level down. A message's routing key starts with its delay
// in seconds as 28 binary digits ("0.1.1.0. ... .<key>"): a level's queue
// takes the keys whose digit for it is 1, the next level's exchange the
// ones whose digit is 0. Out of level 0 everything goes to the
// celery_delayed_delivery exchange, which hands it to each bound exchange
// whose queues are bound by "#.<key>".
const (
	delayLevels           = 28
	delayedDeliveryExch   = "celery_delayed_delivery"
	delayedDeliveryPrefix = "celery_delayed_"
)

// delayPrefix matches a routing key's delay prefix, which a retry must
// drop before adding its own (as kombu does).
var delayPrefix = regexp.MustCompile(fmt.Sprintf(`^(?:[01]\.){%d}`, delayLevels))

func delayLevel(n int) string { return fmt.Sprintf("%s%d", delayedDeliveryPrefix, n) }

// DeclareDelayedDelivery declares the delay levels and the delivery
// exchange as kombu does (queueType is Celery's
// broker_native_delayed_delivery_queue_type, "quorum" by default).
func (c *Conn) DeclareDelayedDelivery(_ context.Context, queueType string) error {
	if queueType == "" {
		queueType = "quorum"
	}
	if queueType != "quorum" && queueType != "classic" {
		return broker.Misconfigured(fmt.Errorf("amqp: delayed delivery queue type %q: want quorum or classic", queueType))
	}
	ch, err := c.channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	key := "1.#"
	for level := delayLevels - 1; level >= 0; level-- {
		name := delayLevel(level)
		if err := declareExchange(ch, broker.Exchange{Name: name, Type: "topic"}); err != nil {
			return err
		}
		dlx := delayedDeliveryExch
		if level > 0 {
			dlx = delayLevel(level - 1)
		}
		args := map[string]any{
			"x-queue-type":           queueType,
			"x-overflow":             "reject-publish",
			"x-message-ttl":          int64(1000) << level,
			"x-dead-letter-exchange": dlx,
		}
		if queueType == "quorum" {
			args["x-dead-letter-strategy"] = "at-least-once"
		}
		if _, err := ch.QueueDeclare(name, true, false, false, false, queueArgs(args)); err != nil {
			return fmt.Errorf("amqp: declare delay queue %q: %w", name, classify(err))
		}
		if err := ch.QueueBind(name, key, name, false, nil); err != nil {
			return fmt.Errorf("amqp: bind delay queue %q: %w", name, classify(err))
		}
		key = "*." + key
	}
	key = "0.#"
	for level := delayLevels - 1; level > 0; level-- {
		if err := ch.ExchangeBind(delayLevel(level-1), key, delayLevel(level), false, nil); err != nil {
			return fmt.Errorf("amqp: bind delay exchange %q to %q: %w", delayLevel(level-1), delayLevel(level), classify(err))
		}
		key = "*." + key
	}
	if err := declareExchange(ch, broker.Exchange{Name: delayedDeliveryExch, Type: "topic"}); err != nil {
		return err
	}
	if err := ch.ExchangeBind(delayedDeliveryExch, key, delayLevel(0), false, nil); err != nil {
		return fmt.Errorf("amqp: bind %q: %w", delayedDeliveryExch, classify(err))
	}
	return nil
}

// BindDelayedDelivery binds q's exchange (or, without one, its bindings'
// exchanges) to the delivery exchange, and q to that exchange, by
// "#.<routing key>", as kombu's bind_queue_to_native_delayed_delivery_exchange
// does. Direct exchanges are skipped and returned.
func (c *Conn) BindDelayedDelivery(_ context.Context, q broker.Queue) ([]string, error) {
	usable, direct := q.DelayedDeliveryBindings()
	if len(usable) == 0 {
		return direct, nil
	}
	ch, err := c.channel()
	if err != nil {
		return direct, err
	}
	defer ch.Close()
	for _, b := range usable {
		key := b.RoutingKey
		if !strings.HasPrefix(key, "#") {
			key = "#." + key
		}
		if err := ch.ExchangeBind(b.Exchange.Name, key, delayedDeliveryExch, false, nil); err != nil {
			return direct, fmt.Errorf("amqp: bind exchange %q to %q by %q: %w", b.Exchange.Name, delayedDeliveryExch, key, classify(err))
		}
		if err := ch.QueueBind(q.Name, key, b.Exchange.Name, false, nil); err != nil {
			return direct, fmt.Errorf("amqp: bind queue %q to %q by %q: %w", q.Name, b.Exchange.Name, key, classify(err))
		}
	}
	return direct, nil
}

// delayedRoute is where a message due at eta goes through native delayed
// delivery: the top delay level, its routing key prefixed with the delay
// in whole seconds (as Celery truncates it; the worker holds the
// remainder). ok is false when the delay does not apply: no ETA, under a
// second, not a quorum queue, or a direct exchange.
func delayedRoute(r broker.Route, now time.Time) (exchange, key string, ok bool) {
	q := r.Queue
	if r.ETA.IsZero() || q == nil || !q.Quorum() || q.Exchange.Name == "" || q.Exchange.Kind() == "direct" {
		return "", "", false
	}
	secs := int64(r.ETA.Sub(now) / time.Second)
	if secs < 1 {
		return "", "", false
	}
	if secs >= 1<<delayLevels {
		secs = 1<<delayLevels - 1
	}
	key = r.RoutingKey
	if r.Exchange == "" || r.Exchange != q.Exchange.Name {
		key = q.RoutingKey
	}
	return delayLevel(delayLevels - 1), delayRoutingKey(secs, key), true
}

// delayRoutingKey is kombu's calculate_routing_key: the delay as 28 binary
// digits joined by dots, then the key without any earlier delay prefix.
func delayRoutingKey(secs int64, key string) string {
	bits := fmt.Sprintf("%0*b", delayLevels, secs)
	var b strings.Builder
	for _, d := range bits {
		b.WriteRune(d)
		b.WriteByte('.')
	}
	b.WriteString(StripDelay(key))
	return b.String()
}

// StripDelay removes a native delayed delivery prefix from a routing key
// (a message that came through the delay levels carries it).
func StripDelay(key string) string { return delayPrefix.ReplaceAllString(key, "") }
