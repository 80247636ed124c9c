package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/celeryworker/gocelery/broker"
)

// Run connects, declares the queues, consumes and serves until Shutdown or
// Close, or until ctx ends (which starts a warm shutdown bounded by
// Config.ShutdownTimeout). A lost connection or a refused TCP connect is
// retried with backoff and jitter; a misconfiguration (see ConfigError)
// ends Run at once with that error. Run returns only once running tasks
// have finished (or Close cut them off), so a caller that exits after it
// loses nothing.
func (w *Worker) Run(ctx context.Context) error {
	w.lifeMu.Lock()
	if w.runState != notRun {
		w.lifeMu.Unlock()
		return errors.New("worker: Run called twice, or after Shutdown/Close")
	}
	w.runState = running
	w.lifeMu.Unlock()
	defer close(w.done)

	if err := w.checkBackend(ctx); err != nil {
		close(w.loopDone)
		w.Close()
		return err
	}
	w.pool.start()
	go w.eta.run()
	go w.events.run()
	go func() {
		select {
		case <-ctx.Done():
			sctx, cancel := w.shutdownContext()
			defer cancel()
			if err := w.Shutdown(sctx); err != nil {
				w.log.Error().Err(err).Msg("shutdown")
			}
		case <-w.stopped:
		}
	}()
	err := w.loop()
	close(w.loopDone)
	if err != nil {
		// The caller reports it (the CLI names the flag to fix).
		w.Close()
		return err
	}
	<-w.stopped
	return nil
}

// shutdownContext bounds a shutdown the worker starts itself.
func (w *Worker) shutdownContext() (context.Context, context.CancelFunc) {
	if w.cfg.ShutdownTimeout > 0 {
		return context.WithTimeout(context.Background(), w.cfg.ShutdownTimeout)
	}
	return context.WithCancel(context.Background())
}

// loop connects and serves, reconnecting until the worker stops taking
// work; it returns a *ConfigError for faults that cannot heal.
func (w *Worker) loop() error {
	backoff := 100 * time.Millisecond
	for {
		if w.quitting() {
			return nil
		}
		conn, deliveries, err := w.connect()
		if err != nil {
			var ce *ConfigError
			if errors.As(err, &ce) {
				return err
			}
			// Full jitter keeps a fleet of workers from reconnecting in step.
			wait := backoff/2 + rand.N(backoff/2+1)
			w.log.Error().Err(err).Dur("retry_in", wait).Msg("cannot connect to broker")
			select {
			case <-w.quit:
				return nil
			case <-time.After(wait):
			}
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		w.doubts.connected(time.Now())
		w.readyOnce.Do(func() {
			w.log.Info().Str("node", w.nodeName).Strs("queues", w.queueList()).
				Int("concurrency", w.pool.Size()).Msgf("%s ready.", w.nodeName)
			close(w.ready)
		})
		w.obs.BrokerConnection(true)
		w.events.online()
		w.serve(conn, deliveries)
		w.obs.BrokerConnection(false)
		if w.quitting() {
			return nil
		}
		w.log.Warn().Err(conn.Err()).Msg("broker connection lost; reconnecting")
		_ = conn.Close()
		w.eta.connLost()
		// The broker has requeued what waited for a runner too.
		for _, j := range w.waiting.removeLost() {
			w.finish(j)
		}
		w.rememberDoubts()
	}
}

// connect dials, declares the queues, starts remote control and consumes.
func (w *Worker) connect() (broker.Conn, <-chan broker.Delivery, error) {
	ctx, cancel := context.WithTimeout(w.quitCtx, 15*time.Second)
	defer cancel()
	conn, err := w.transport.Dial(ctx, broker.DialParams{Name: w.nodeName})
	if err != nil {
		if errors.Is(err, broker.ErrMisconfigured) {
			return nil, nil, &ConfigError{Setting: "broker_url", Err: err}
		}
		return nil, nil, err
	}
	fail := func(setting string, err error) (broker.Conn, <-chan broker.Delivery, error) {
		conn.Close()
		if errors.Is(err, broker.ErrMisconfigured) {
			return nil, nil, &ConfigError{Setting: setting, Err: err}
		}
		return nil, nil, err
	}
	if err := w.declareQueues(ctx, conn, w.queueList()); err != nil {
		return fail("queues", err)
	}
	w.setConn(conn)
	// Remote control consumes before the task consumers: a command sent
	// as soon as the worker has answered a task is then not lost (the
	// fanout drops messages for queues not yet bound).
	w.control(ctx, conn)
	ds, err := conn.Consume(ctx, w.queueList(), w.prefetchWindow())
	if err != nil {
		return fail("queues", fmt.Errorf("consume: %w", err))
	}
	return conn, ds, nil
}

// serve accepts deliveries until the connection is lost or shutdown
// starts; then it cancels the consumers (the transport requeues what
// arrives later) and returns, so no delivery is accepted after it.
func (w *Worker) serve(conn broker.Conn, deliveries <-chan broker.Delivery) {
	for {
		select {
		case d, ok := <-deliveries:
			if !ok {
				return
			}
			w.inflight.Add(1)
			w.accept(d)
		case <-w.quit:
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := conn.CancelConsume(ctx); err != nil && !errors.Is(err, broker.ErrClosed) && conn.Err() == nil {
				w.log.Warn().Err(err).Msg("cancel consumers")
			}
			cancel()
			return
		}
	}
}

func (w *Worker) setConn(c broker.Conn) {
	w.connMu.Lock()
	w.conn = c
	close(w.connChanged)
	w.connChanged = make(chan struct{})
	w.connMu.Unlock()
}

// currentConn is the live broker connection, or nil.
func (w *Worker) currentConn() broker.Conn {
	w.connMu.Lock()
	c := w.conn
	w.connMu.Unlock()
	if c == nil {
		return nil
	}
	select {
	case <-c.Done():
		return nil
	default:
		return c
	}
}

// liveConn waits for a live connection: after a reconnect, retries, chain
// steps and callbacks publish on the new connection, not the dead one.
func (w *Worker) liveConn(ctx context.Context) (broker.Conn, error) {
	for {
		w.connMu.Lock()
		c, changed := w.conn, w.connChanged
		w.connMu.Unlock()
		if c != nil {
			select {
			case <-c.Done():
			default:
				return c, nil
			}
		}
		select {
		case <-changed:
		case <-w.stopped:
			return nil, broker.ErrClosed
		case <-ctx.Done():
			return nil, fmt.Errorf("worker: no broker connection: %w", ctx.Err())
		}
	}
}
