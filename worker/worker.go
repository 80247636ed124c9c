package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/celeryworker/gocelery/amqp"
	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
)

// ResultStore is what the worker needs from a result backend.
type ResultStore interface {
	Store(ctx context.Context, r *backends.Result) error
}

// Config configures a Worker. Its zero value works: Celery's default broker,
// queue "celery", one slot per CPU, prefetch multiplier 4, node name
// celery@<hostname>, results discarded.
type Config struct {
	BrokerURL string
	Queues    []string
	// Concurrency bounds the tasks running at once (default runtime.NumCPU()).
	Concurrency int
	// PrefetchMultiplier: prefetch = Concurrency × it. 0 means Celery's
	// default 4; a negative value means unlimited (Celery's 0).
	PrefetchMultiplier int
	// NodeName, with %h/%n/%d expanded (default celery@%h).
	NodeName string
	// Accept lists accepted serializers (default json and msgpack).
	Accept []string
	// TimeLimit and SoftTimeLimit apply to tasks that set none themselves.
	TimeLimit, SoftTimeLimit time.Duration
	// TrackStarted stores STARTED before running each task
	// (task_track_started).
	TrackStarted bool
	// ResultExtended stores name, args, kwargs, worker, retries and queue
	// with each result (result_extended).
	ResultExtended bool
	// TaskEvents is accepted for Celery's -E; events are not sent yet.
	TaskEvents bool
	// DefaultQueue routes canvas messages whose signature names no queue.
	DefaultQueue string

	Registry *tasks.Registry
	Backend  ResultStore // nil: results are not stored
	Logger   *zerolog.Logger
}

// Worker consumes Celery task messages and runs them.
type Worker struct {
	cfg      Config
	log      zerolog.Logger
	reg      *tasks.Registry
	backend  ResultStore
	nodeName string
	origin   string
	prefetch int

	jobs    chan *job // to the runners
	events  *events
	totals  sync.Map // task name -> *atomic.Int64, for the stats command
	known   sync.Map // *job -> struct{}: accepted and not yet settled
	started time.Time
	eta     *etaScheduler
	limiter *rateLimiter

	quit       <-chan struct{} // closed when shutdown starts: take no new work
	quitCtx    context.Context // done when quit is closed
	stopTaking context.CancelFunc
	inflight   sync.WaitGroup // one per delivery being handled
	storing    sync.WaitGroup // final results being written in the background
	done       chan struct{}  // closed when Run returns

	mu   sync.Mutex
	conn *amqp.Conn

	held      atomic.Int64 // ETA messages held in memory
	running   atomic.Int64
	abandoned atomic.Int64 // goroutines left running after a hard time limit
	processed atomic.Int64

	stopped   chan struct{} // closed when Shutdown or Close is done
	stopOnce  sync.Once
	ready     chan struct{} // closed once consuming
	readyOnce sync.Once

	revoked *revokedSet
	active  sync.Map // task id -> *activeTask
	clock   atomic.Int64
}

// New validates cfg and builds a Worker; Run starts it.
func New(cfg Config) (*Worker, error) {
	if cfg.Registry == nil {
		return nil, errors.New("worker: no task registry")
	}
	if len(cfg.Queues) == 0 {
		cfg.Queues = []string{"celery"}
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = runtime.NumCPU()
	}
	if cfg.PrefetchMultiplier == 0 {
		cfg.PrefetchMultiplier = 4
	}
	if cfg.DefaultQueue == "" {
		cfg.DefaultQueue = "celery"
	}
	host, _ := os.Hostname()
	w := &Worker{
		cfg:      cfg,
		reg:      cfg.Registry,
		backend:  cfg.Backend,
		nodeName: ExpandNodeName(cfg.NodeName, host),
		origin:   fmt.Sprintf("gen%d@%s", os.Getpid(), host),
		// Buffered so the serve loop hands prefetched jobs over without a
		// goroutine each; sized in New once the prefetch is known.
		limiter: newRateLimiter(),
		done:    make(chan struct{}),
		revoked: newRevokedSet(50000, 3*time.Hour),
		ready:   make(chan struct{}),
		stopped: make(chan struct{}),
	}
	w.eta = newETAScheduler(w)
	w.events = newEvents(w, cfg.TaskEvents)
	w.started = time.Now()
	w.quitCtx, w.stopTaking = context.WithCancel(context.Background())
	w.quit = w.quitCtx.Done()
	if cfg.PrefetchMultiplier > 0 {
		w.prefetch = cfg.Concurrency * cfg.PrefetchMultiplier
	}
	queued := w.prefetch
	if queued <= 0 || queued > 4096 {
		queued = 4096
	}
	w.jobs = make(chan *job, queued)
	if cfg.Logger != nil {
		w.log = *cfg.Logger
	} else {
		w.log = zerolog.Nop()
	}
	for _, name := range w.reg.Names() {
		t, _ := w.reg.Lookup(name)
		if t.Options.RateLimit == "" {
			continue
		}
		rate, err := tasks.ParseRateLimit(t.Options.RateLimit)
		if err != nil {
			return nil, fmt.Errorf("worker: task %s: %w", name, err)
		}
		w.limiter.Set(name, rate)
	}
	return w, nil
}

// Ready is closed once the worker consumes its queues.
func (w *Worker) Ready() <-chan struct{} { return w.ready }

// NodeName is the worker's expanded node name (e.g. go@host).
func (w *Worker) NodeName() string { return w.nodeName }

// Abandoned counts task goroutines still running after their hard time
// limit: Go cannot kill a goroutine, so the worker stops waiting for it.
func (w *Worker) Abandoned() int64 { return w.abandoned.Load() }

// SetRateLimit changes a task's rate limit at run time (Celery syntax).
func (w *Worker) SetRateLimit(task, limit string) error {
	rate, err := tasks.ParseRateLimit(limit)
	if err != nil {
		return err
	}
	w.limiter.Set(task, rate)
	return nil
}

// Run connects, declares the queues, consumes and serves until Shutdown or
// Close; a lost connection is re-established with backoff.
func (w *Worker) Run() error {
	defer close(w.done)
	for i := 0; i < w.cfg.Concurrency; i++ {
		go w.runner()
	}
	go w.eta.run()
	go w.events.run()
	backoff := 100 * time.Millisecond
	ready := false
	for {
		if w.quitting() {
			<-w.stopped
			return nil
		}
		conn, deliveries, err := w.connect()
		if err != nil {
			w.log.Error().Err(err).Dur("retry_in", backoff).Msg("cannot connect to broker")
			select {
			case <-w.quit:
				<-w.stopped
				return nil
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		if !ready {
			w.log.Info().Str("node", w.nodeName).Strs("queues", w.cfg.Queues).
				Int("concurrency", w.cfg.Concurrency).Msgf("%s ready.", w.nodeName)
			ready = true
			w.readyOnce.Do(func() { close(w.ready) })
		} else {
			w.log.Info().Msg("reconnected to broker")
		}
		w.events.online(conn)
		w.serve(conn, deliveries)
		if w.quitting() {
			// Run returns once Shutdown has let running tasks finish (or
			// Close cut them off), so a caller exiting after Run loses
			// nothing.
			<-w.stopped
			return nil
		}
		w.log.Warn().Msg("broker connection lost; reconnecting")
	}
}

func (w *Worker) connect() (*amqp.Conn, <-chan amqp.Delivery, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := amqp.Dial(ctx, w.cfg.BrokerURL, w.nodeName)
	if err != nil {
		return nil, nil, err
	}
	for _, q := range w.cfg.Queues {
		if err := conn.DeclareTaskQueue(q); err != nil {
			conn.Close()
			return nil, nil, err
		}
	}
	w.control(conn) // before the task consumers: see control
	ds, err := conn.Consume(w.cfg.Queues, w.prefetch+int(w.held.Load()), w.nodeName)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	w.mu.Lock()
	w.conn = conn
	w.mu.Unlock()
	return conn, ds, nil
}

// serve hands each delivery to its own goroutine until the delivery
// channel closes (connection lost, or consumers cancelled at shutdown).
func (w *Worker) serve(conn *amqp.Conn, deliveries <-chan amqp.Delivery) {
	cancelled := false
	for {
		select {
		case d, ok := <-deliveries:
			if !ok {
				return
			}
			w.inflight.Add(1)
			w.accept(conn, d)
		case <-w.quit:
			if !cancelled {
				cancelled = true
				if err := conn.Cancel(w.nodeName, w.cfg.Queues); err != nil && !conn.IsClosed() {
					w.log.Warn().Err(err).Msg("cancel consumers")
				}
			}
			// Keep draining: what arrives now is requeued by handle.
			select {
			case d, ok := <-deliveries:
				if !ok {
					return
				}
				w.inflight.Add(1)
				w.accept(conn, d)
			case <-time.After(2 * time.Second):
				return
			}
		}
	}
}

func (w *Worker) quitting() bool {
	select {
	case <-w.quit:
		return true
	default:
		return false
	}
}

// Shutdown stops taking work (lame duck: consumers cancelled, held and
// waiting messages requeued), waits for running tasks to finish and their
// results to be stored, then closes the connection. If ctx ends first the
// connection is closed anyway; the broker then requeues unacknowledged
// (acks_late) messages.
func (w *Worker) Shutdown(ctx context.Context) error {
	w.stopTaking()
	w.requeueQueued()
	finished := make(chan struct{})
	go func() {
		w.inflight.Wait()
		w.storing.Wait()
		close(finished)
	}()
	var err error
	select {
	case <-finished:
	case <-ctx.Done():
		err = fmt.Errorf("worker: shutdown: %d tasks still running: %w", w.running.Load(), ctx.Err())
		w.failAcknowledged("shutdown timeout")
	}
	w.events.offline()
	w.closeConn()
	w.stopOnce.Do(func() { close(w.stopped) })
	select {
	case <-w.done:
	case <-ctx.Done():
	}
	return err
}

// requeueQueued sends jobs waiting for a runner back to the broker now,
// rather than when a busy runner gets to them.
func (w *Worker) requeueQueued() {
	for {
		select {
		case j := <-w.jobs:
			w.nack(&j.log, j.d, true)
			w.finish(j)
		default:
			return
		}
	}
}

// Close stops at once: the connection is closed and the broker requeues
// every unacknowledged message.
func (w *Worker) Close() error {
	w.stopTaking()
	w.failAcknowledged("cold shutdown")
	w.events.offline()
	w.closeConn()
	w.stopOnce.Do(func() { close(w.stopped) })
	return nil
}

// failAcknowledged stores FAILURE (WorkerLostError, as Python stores for a
// pool process that died) for running tasks whose message was already
// acknowledged, so no acknowledged task is left without a result when the
// worker stops before they finish. acks_late tasks are left to the broker,
// which redelivers them.
func (w *Worker) failAcknowledged(reason string) {
	w.active.Range(func(_, v any) bool {
		a := v.(*activeTask)
		if a.acksLate {
			return true
		}
		exc := backends.ExceptionInfo{Type: "WorkerLostError", Module: "billiard.exceptions",
			Args: []any{"Worker exited prematurely: " + reason + " while the task was running."}}
		w.log.Error().Str("task", a.msg.Name()).Str("id", a.msg.ID).
			Msgf("Task %s[%s] lost: %s while it was running", a.msg.Name(), a.msg.ID, reason)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if w.backend != nil {
			_ = w.backend.Store(ctx, &backends.Result{TaskID: a.msg.ID, Status: backends.StatusFailure,
				Result: exc.Value(), Children: []any{}, DateDone: time.Now().UTC(),
				GroupID: a.msg.Group, ParentID: a.msg.ParentID})
		}
		return true
	})
}

func (w *Worker) closeConn() {
	w.mu.Lock()
	c := w.conn
	w.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

func decodeOptions(cfg *Config) protocol.DecodeOptions {
	return protocol.DecodeOptions{Accept: cfg.Accept}
}
