package worker

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/celeryworker/gocelery/broker"
)

// queueDef is how the worker declares the queue name: its definition in
// Config.Topology, or the one Celery creates for a missing queue.
func (w *Worker) queueDef(name string) (broker.Queue, error) {
	return w.cfg.Topology.Lookup(name)
}

// declareQueues declares the queues to consume, then, when one of the
// queues the worker knows is a quorum queue, sets up native delayed
// delivery as Celery's DelayedDelivery bootstep does: the delay levels,
// and the consumed queues bound to the delivery exchange, so countdown and
// ETA messages that Python producers (and this worker) route through the
// delay levels reach them with no Python worker running.
func (w *Worker) declareQueues(ctx context.Context, conn broker.Conn, names []string) error {
	defs := make([]broker.Queue, 0, len(names))
	for _, name := range names {
		q, err := w.queueDef(name)
		if err != nil {
			return broker.Misconfigured(err)
		}
		if err := conn.DeclareQueue(ctx, q); err != nil {
			return err
		}
		w.log.Debug().Str("queue", name).Str("queue_type", q.Type()).Str("exchange", q.Exchange.Name).
			Str("exchange_type", q.Exchange.Kind()).Str("routing_key", q.RoutingKey).Msg("queue declared")
		defs = append(defs, q)
	}
	if !w.usesQuorum(defs) {
		return nil
	}
	dd, ok := conn.(broker.DelayedDelivery)
	if !ok {
		return nil
	}
	if err := dd.DeclareDelayedDelivery(ctx, w.cfg.DelayedDeliveryQueueType); err != nil {
		return fmt.Errorf("native delayed delivery: %w", err)
	}
	for _, q := range defs {
		if err := w.bindDelayed(ctx, dd, q); err != nil {
			return err
		}
	}
	return nil
}

// usesQuorum: Celery's detect_quorum_queues looks at every queue the app
// defines; the consumed ones count here too.
func (w *Worker) usesQuorum(consumed []broker.Queue) bool {
	for _, q := range append(w.cfg.Topology.Defined(), consumed...) {
		if q.Quorum() {
			return true
		}
	}
	return false
}

// bindDelayed binds q for delayed delivery, warning as Celery does about
// direct exchanges, which it cannot reach.
func (w *Worker) bindDelayed(ctx context.Context, dd broker.DelayedDelivery, q broker.Queue) error {
	skipped, err := dd.BindDelayedDelivery(ctx, q)
	for _, ex := range skipped {
		w.log.Warn().Str("queue", q.Name).Str("exchange", ex).Msgf(
			"Exchange %s is a direct exchange and native delayed delivery do not support direct exchanges.\n"+
				"ETA tasks published to this exchange will block the worker until the ETA arrives.", ex)
	}
	if err != nil {
		return fmt.Errorf("native delayed delivery: bind queue %q: %w", q.Name, err)
	}
	return nil
}

// addQueue declares and consumes one more queue on conn (add_consumer).
func (w *Worker) addQueue(ctx context.Context, conn broker.Conn, name string) error {
	q, err := w.queueDef(name)
	if err != nil {
		return err
	}
	if err := conn.DeclareQueue(ctx, q); err != nil {
		return err
	}
	if dd, ok := conn.(broker.DelayedDelivery); ok && w.usesQuorum([]broker.Queue{q}) {
		if err := dd.DeclareDelayedDelivery(ctx, w.cfg.DelayedDeliveryQueueType); err != nil {
			return fmt.Errorf("native delayed delivery: %w", err)
		}
		if err := w.bindDelayed(ctx, dd, q); err != nil {
			return err
		}
	}
	return conn.AddQueue(ctx, name)
}

// route is where a canvas message for queue goes (see broker.RouteTo).
func (w *Worker) route(queue, exchange, routingKey string, eta *time.Time) (broker.Route, error) {
	q, err := w.queueDef(queue)
	if err != nil {
		return broker.Route{}, err
	}
	return broker.RouteTo(q, exchange, routingKey, eta), nil
}

// retryRoute is where a retry goes: where the message came from, as
// Celery's retry does (delivery_info's exchange and routing key), except
// that a message that came through the delay levels goes back to its
// queue's own exchange (the delay exchanges would route it by a stale
// prefix).
func (w *Worker) retryRoute(info broker.DeliveryInfo, eta *time.Time) broker.Route {
	r := broker.Route{Exchange: info.Exchange, RoutingKey: info.RoutingKey}
	if eta != nil {
		r.ETA = *eta
	}
	queue := info.Queue
	if queue == "" && info.Exchange == "" {
		queue = info.RoutingKey // the default exchange routes by queue name
	}
	if queue == "" {
		return r
	}
	q, err := w.queueDef(queue)
	if err != nil {
		return r
	}
	r.Queue = &q
	if strings.HasPrefix(info.Exchange, "celery_delayed_") {
		if q.Exchange.Kind() == "direct" {
			r.Exchange, r.RoutingKey = "", q.Name
		} else {
			r.Exchange, r.RoutingKey = q.Exchange.Name, q.RoutingKey
		}
	}
	return r
}
