package worker

import (
	"context"
	"fmt"
	"slices"
)

// The queues the worker consumes: those of Config.Queues, changed at run
// time by the add_consumer and cancel_consumer control commands. A
// reconnect consumes the current list.

func (w *Worker) queueList() []string {
	w.queuesMu.Lock()
	defer w.queuesMu.Unlock()
	return slices.Clone(w.queues)
}

// AddQueue starts consuming queue (declared as for -Q), as Celery's
// add_consumer does; consuming it already is not an error.
func (w *Worker) AddQueue(ctx context.Context, queue string) error {
	if queue == "" {
		return fmt.Errorf("worker: add queue: empty name")
	}
	// Listed first (a reconnect meanwhile then consumes it too); the lock
	// is not held while waiting for the broker, which connect also needs.
	w.queuesMu.Lock()
	if slices.Contains(w.queues, queue) {
		w.queuesMu.Unlock()
		return nil
	}
	w.queues = append(w.queues, queue)
	w.queuesMu.Unlock()
	err := func() error {
		conn, err := w.liveConn(ctx)
		if err != nil {
			return err
		}
		return w.addQueue(ctx, conn, queue)
	}()
	if err != nil {
		w.queuesMu.Lock()
		if i := slices.Index(w.queues, queue); i >= 0 {
			w.queues = slices.Delete(w.queues, i, i+1)
		}
		w.queuesMu.Unlock()
		return fmt.Errorf("worker: add queue %q: %w", queue, err)
	}
	w.log.Info().Str("queue", queue).Msgf("Started consuming from %s", queue)
	return nil
}

// CancelQueue stops consuming queue (cancel_consumer); messages already
// taken from it are still run.
func (w *Worker) CancelQueue(ctx context.Context, queue string) error {
	w.queuesMu.Lock()
	i := slices.Index(w.queues, queue)
	if i >= 0 {
		w.queues = slices.Delete(w.queues, i, i+1)
	}
	w.queuesMu.Unlock()
	if i < 0 {
		return nil
	}
	w.log.Info().Str("queue", queue).Msgf("Canceling queue %s", queue)
	if conn := w.currentConn(); conn != nil {
		if err := conn.CancelQueue(ctx, queue); err != nil {
			return fmt.Errorf("worker: cancel queue %q: %w", queue, err)
		}
	}
	return nil
}
