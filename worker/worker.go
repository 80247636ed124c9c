package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
)

// Config configures a Worker. Only Broker and Registry are required; the
// other zero values are Celery's defaults: queue "celery", one runner per
// CPU, prefetch multiplier 4, node name celery@<hostname>, results
// discarded.
type Config struct {
	// Broker is the transport, e.g. amqp.NewTransport(...).
	Broker broker.Transport
	// Queues names the queues to consume (celery worker -Q); empty: every
	// queue Topology defines (task_queues), else the default queue.
	Queues []string
	// Topology defines queues as Celery's task_queues and task_default_* /
	// task_create_missing_* settings do: how each consumed queue, and each
	// queue the worker publishes to, is declared. Its zero value is
	// Celery's defaults (classic queues, direct exchanges named like them).
	Topology broker.Topology
	// DefaultPriority is task_default_priority: the priority of canvas
	// messages the worker sends whose signature sets none (0: none).
	DefaultPriority int
	// DelayedDeliveryQueueType is broker_native_delayed_delivery_queue_type,
	// the type of the delay level queues the worker declares when it
	// serves quorum queues: "quorum" (default) or "classic".
	DelayedDeliveryQueueType string
	// Concurrency bounds the tasks running at once (default
	// runtime.NumCPU()); with autoscaling it is the maximum.
	Concurrency int
	// MinConcurrency, when above 0 and below Concurrency, turns on
	// autoscaling (celery worker --autoscale MAX,MIN): runners are added
	// while tasks wait and removed after AutoscaleKeepalive idle.
	MinConcurrency int
	// AutoscaleKeepalive is how long a runner above MinConcurrency may idle
	// before it is removed (default 30 s, Celery's AUTOSCALE_KEEPALIVE).
	AutoscaleKeepalive time.Duration
	// PrefetchMultiplier: prefetch = runners × it. 0 means Celery's
	// default 4; a negative value means unlimited (Celery's 0).
	PrefetchMultiplier int
	// NodeName, with %h/%n/%d expanded (default celery@%h).
	NodeName string
	// Accept lists accepted serializers (default json and msgpack).
	Accept []string
	// MaxMessageSize bounds a message body in bytes, compressed and
	// decompressed (default DefaultMaxMessageSize; negative: no limit). A
	// larger message is rejected, not requeued, with a FAILURE result
	// naming the limit when its task id is in its headers.
	MaxMessageSize int
	// TimeLimit and SoftTimeLimit apply to tasks that set none themselves.
	TimeLimit, SoftTimeLimit time.Duration
	// TaskAcksLate acknowledges every task after its result is stored
	// unless the task says otherwise (task_acks_late; tasks.AcksLate and
	// tasks.AcksEarly win over it).
	TaskAcksLate bool
	// TaskRejectOnWorkerLost: an acks_late task cut off by the shutdown
	// timeout goes back to the queue; without it the task gets
	// WorkerLostError and its message is acknowledged, as Celery does for a
	// task whose pool process was lost (task_reject_on_worker_lost; the
	// task's own RejectOnWorkerLost wins).
	TaskRejectOnWorkerLost bool
	// TrackStarted stores STARTED before running each task
	// (task_track_started).
	TrackStarted bool
	// ResultExtended stores name, args, kwargs, worker, retries and queue
	// with each result (result_extended).
	ResultExtended bool
	// TaskEvents sends task events for monitors (celery worker -E).
	TaskEvents bool
	// WithoutHeartbeat sends no worker-heartbeat events
	// (--without-heartbeat).
	WithoutHeartbeat bool
	// DefaultQueue routes canvas messages whose signature names no queue
	// (task_default_queue; Topology.DefaultQueue when that is set).
	DefaultQueue string
	// ShutdownTimeout bounds a warm shutdown that the worker starts itself
	// (the shutdown control command, or Run's context ending); 0 waits for
	// running tasks however long they take.
	ShutdownTimeout time.Duration

	Registry *tasks.Registry
	Backend  ResultBackend // nil: results are not stored
	Logger   *zerolog.Logger
	// Observer is told of each task's progress, for metrics (nil: none).
	Observer Observer
}

// ConfigError is a misconfiguration no retry can heal; Run returns it at
// once. Setting names what to fix, as Celery names its settings:
// "broker_url", "result_backend" or "queues".
type ConfigError struct {
	Setting string
	Err     error
}

func (e *ConfigError) Error() string { return fmt.Sprintf("worker: %s: %v", e.Setting, e.Err) }
func (e *ConfigError) Unwrap() error { return e.Err }

// Worker consumes Celery task messages and runs them.
type Worker struct {
	cfg       Config
	log       zerolog.Logger
	reg       *tasks.Registry
	be        backend
	transport broker.Transport
	nodeName  string
	origin    string
	// multiplier is PrefetchMultiplier resolved: prefetch = runners × it;
	// 0 means unlimited.
	multiplier int

	waiting *readyQueue // jobs waiting for a runner
	// ahead lists the jobs whose ack was started before their run
	// (ahead.go) and that have not started.
	ahead sync.Map // *job -> struct{}
	// aheadMu is read-held from the start of an ack to its job's entry in
	// ahead; rememberDoubts write-locks it once, so no ack started on the
	// lost connection is missing from ahead when it looks.
	aheadMu sync.RWMutex
	pool    *pool
	events  *events
	eta     *etaScheduler
	limiter *rateLimiter
	// pacers hold the jobs waiting for a rate limit token, per task name.
	pacersMu sync.Mutex
	pacers   map[string]*pacer
	revoked  *revokedSet
	totals   sync.Map // task name -> *atomic.Int64, for the stats command
	// known lists the jobs accepted and not yet settled (job.prev/next),
	// for inspect.
	knownMu   sync.Mutex
	knownHead *job
	active    sync.Map // task id -> *activeTask
	// cutOff is set by the first cold stop (failAcknowledged).
	cutOff atomic.Pointer[cutOff]
	// unlisted counts runners whose job a cold stop cannot list yet
	// (enterUnlisted).
	unlisted atomic.Int64
	// succeeded holds ids of SkipSucceeded tasks whose SUCCESS is being
	// written, for alreadySucceeded.
	succeeded sync.Map
	// directWarned: exchanges warned about (a delayed message to a quorum
	// queue behind a direct exchange cannot use native delayed delivery).
	directWarned sync.Map
	// finishing holds, per task id, the acks_late run whose outcome is not
	// recorded yet (*runFinish), for ranHere.
	finishing sync.Map
	// doubts remembers the runs of tasks whose ack is in doubt (doubt.go).
	doubts  doubts
	started time.Time
	clock   atomic.Int64

	// baseCtx is the parent of every task's context; Close cancels it.
	baseCtx    context.Context
	cancelBase context.CancelCauseFunc
	quit       <-chan struct{} // closed when shutdown starts: take no new work
	quitCtx    context.Context // done when quit is closed
	stopTaking context.CancelFunc
	inflight   sync.WaitGroup // one per delivery accepted by the serve loop
	storing    sync.WaitGroup // results being written in the background

	queuesMu sync.Mutex
	queues   []string // consumed now: Config.Queues, changed by add/cancel_consumer

	ctl controlState // what remote control commands changed (control.go)

	connMu      sync.Mutex
	conn        broker.Conn
	connChanged chan struct{} // closed (and replaced) when conn changes

	lifeMu    sync.Mutex
	runState  int           // notRun, running, ran
	loopDone  chan struct{} // closed when the serve loop has returned
	stopOnce  sync.Once     // the first Shutdown or Close does the stopping
	finalOnce sync.Once
	stopped   chan struct{} // closed when Shutdown or Close is done
	done      chan struct{} // closed when Run returns
	ready     chan struct{} // closed once consuming
	readyOnce sync.Once

	obs         Observer
	mem         memoryReleaser
	backendDown atomic.Bool   // the last result write failed
	beMu        sync.Mutex    // orders backend down/up changes
	beUp        chan struct{} // while down: closed when it is back
	// resultSlots bounds the task results on their way to the backend
	// (one slot from a task's end until its result is stored or given up).
	resultSlots chan struct{}

	held      atomic.Int64 // ETA messages held in memory
	running   atomic.Int64
	abandoned atomic.Int64 // goroutines left running after a hard time limit
	processed atomic.Int64
}

const (
	notRun = iota
	running
	ran
)

// New validates cfg and builds a Worker; Run starts it.
func New(cfg Config) (*Worker, error) {
	if cfg.Registry == nil {
		return nil, errors.New("worker: no task registry")
	}
	if cfg.Broker == nil {
		return nil, errors.New("worker: no broker transport")
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = runtime.NumCPU()
	}
	if cfg.MinConcurrency < 0 || cfg.MinConcurrency > cfg.Concurrency {
		return nil, fmt.Errorf("worker: autoscale minimum %d is not within 0..%d", cfg.MinConcurrency, cfg.Concurrency)
	}
	if cfg.AutoscaleKeepalive <= 0 {
		cfg.AutoscaleKeepalive = 30 * time.Second
	}
	if cfg.PrefetchMultiplier == 0 {
		cfg.PrefetchMultiplier = 4
	}
	if cfg.Topology.DefaultQueue == "" {
		cfg.Topology.DefaultQueue = cfg.DefaultQueue
	}
	cfg.DefaultQueue = cfg.Topology.Default()
	if err := cfg.Topology.Validate(); err != nil {
		return nil, fmt.Errorf("worker: queues: %w", err)
	}
	if len(cfg.Queues) == 0 {
		for _, q := range cfg.Topology.Defined() {
			cfg.Queues = append(cfg.Queues, q.Name)
		}
	}
	for _, name := range cfg.Queues {
		if _, err := cfg.Topology.Lookup(name); err != nil {
			return nil, fmt.Errorf("worker: queues: %w", err)
		}
	}
	if cfg.DefaultPriority < 0 || cfg.DefaultPriority > 255 {
		return nil, fmt.Errorf("worker: default priority %d: want 0 to 255", cfg.DefaultPriority)
	}
	switch cfg.DelayedDeliveryQueueType {
	case "":
		cfg.DelayedDeliveryQueueType = "quorum"
	case "quorum", "classic":
	default:
		return nil, fmt.Errorf("worker: delayed delivery queue type %q: want quorum or classic", cfg.DelayedDeliveryQueueType)
	}
	host, _ := os.Hostname()
	w := &Worker{
		cfg:         cfg,
		reg:         cfg.Registry,
		be:          newBackend(cfg.Backend),
		transport:   cfg.Broker,
		nodeName:    ExpandNodeName(cfg.NodeName, host),
		origin:      fmt.Sprintf("gen%d@%s", os.Getpid(), host),
		limiter:     newRateLimiter(),
		pacers:      map[string]*pacer{},
		revoked:     newRevokedSet(50000, 3*time.Hour),
		connChanged: make(chan struct{}),
		loopDone:    make(chan struct{}),
		stopped:     make(chan struct{}),
		done:        make(chan struct{}),
		ready:       make(chan struct{}),
		started:     time.Now(),
	}
	w.queues = slices.Clone(cfg.Queues)
	w.obs = cfg.Observer
	if w.obs == nil {
		w.obs = nopObserver{}
	}
	if cfg.PrefetchMultiplier > 0 {
		w.multiplier = cfg.PrefetchMultiplier
	}
	w.waiting = newReadyQueue()
	w.resultSlots = make(chan struct{}, max(256, 4*cfg.Concurrency))
	if cfg.Logger != nil {
		w.log = *cfg.Logger
	} else {
		w.log = zerolog.Nop()
	}
	w.baseCtx, w.cancelBase = context.WithCancelCause(context.Background())
	w.quitCtx, w.stopTaking = context.WithCancel(context.Background())
	w.quit = w.quitCtx.Done()
	w.eta = newETAScheduler(w)
	w.events = newEvents(w, cfg.TaskEvents)
	w.pool = newPool(w)
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

// Concurrency is the number of runners now (it changes with autoscaling).
func (w *Worker) Concurrency() int { return w.pool.Size() }

// SetRateLimit changes a task's rate limit at run time (Celery syntax).
func (w *Worker) SetRateLimit(task, limit string) error {
	rate, err := tasks.ParseRateLimit(limit)
	if err != nil {
		return err
	}
	w.limiter.Set(task, rate)
	return nil
}

func (w *Worker) quitting() bool {
	select {
	case <-w.quit:
		return true
	default:
		return false
	}
}

// prefetchWindow is the prefetch count to ask the broker for: runners ×
// multiplier, plus one per held ETA message so held messages do not starve
// ready work (as Celery does). 0 means unlimited.
func (w *Worker) prefetchWindow() int {
	if w.multiplier == 0 {
		return 0
	}
	return w.pool.Size()*w.multiplier + int(w.held.Load())
}

// updatePrefetch sends the current window to the live connection.
func (w *Worker) updatePrefetch() {
	if w.multiplier == 0 {
		return
	}
	c := w.currentConn()
	if c == nil {
		return
	}
	n := w.prefetchWindow()
	if err := c.SetPrefetch(n); err != nil && c.Err() == nil {
		w.log.Warn().Err(err).Int("prefetch", n).Msg("cannot change prefetch count")
		return
	}
	w.log.Debug().Int("prefetch", n).Msg("prefetch count changed")
}

// acksLate says whether t is acknowledged after it runs: its own option,
// else the worker's TaskAcksLate.
func (w *Worker) acksLate(t *tasks.Task) bool {
	return t.Options.AcksLate || (w.cfg.TaskAcksLate && !t.Options.AcksEarly)
}

// rejectOnWorkerLost says whether an acks_late task cut off by the
// shutdown timeout is requeued (else it fails with WorkerLostError).
func (w *Worker) rejectOnWorkerLost(t *tasks.Task) bool {
	if r := t.Options.RejectOnWorkerLost; r != nil {
		return *r
	}
	return w.cfg.TaskRejectOnWorkerLost
}

func decodeOptions(cfg *Config) protocol.DecodeOptions {
	limit := cfg.MaxMessageSize
	if limit == 0 {
		limit = DefaultMaxMessageSize
	}
	return protocol.DecodeOptions{Accept: cfg.Accept, MaxBodySize: max(limit, 0)}
}

// DefaultMaxMessageSize is Config.MaxMessageSize's default: 64 MiB,
// generous for task arguments (RabbitMQ 3.x itself allows 128 MiB, 4.x
// 16 MiB).
const DefaultMaxMessageSize = 64 << 20
