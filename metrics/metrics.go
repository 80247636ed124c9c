// Package metrics exposes a worker to Prometheus and to health checks.
//
// A Metrics is the worker's Observer (counters and histograms, fed as
// tasks move) and a Prometheus collector (gauges, read from
// Worker.Snapshot at scrape time). Handler serves /metrics, /healthz and
// /readyz; Listen starts an HTTP server for it:
//
//	m := metrics.New()
//	cfg.Observer = m
//	w, err := worker.New(cfg)
//	...
//	m.Attach(w)
//	srv, err := metrics.Listen("127.0.0.1:9808", m.Handler())
//	defer srv.Shutdown(ctx)
//
// Names and labels follow celery-exporter (danihodovic/celery-exporter)
// where the two overlap, so its dashboards and alerts read a gocelery
// worker too; what it has no counterpart for is prefixed gocelery_. See
// docs/metrics.md.
package metrics

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/worker"
)

// Source is what the gauges and /readyz read: a *worker.Worker.
type Source interface {
	Snapshot() worker.Snapshot
}

// RuntimeBuckets are the upper bounds (seconds) of celery_task_runtime:
// Python prometheus_client's default buckets, which celery-exporter uses,
// so quantiles compare across Go and Python workers.
var RuntimeBuckets = []float64{.005, .01, .025, .05, .075, .1, .25, .5, .75, 1, 2.5, 5, 7.5, 10}

// WaitBuckets are the upper bounds (seconds) of
// gocelery_task_queue_wait_seconds: from a millisecond (a free runner takes
// a task at once) to half an hour (a long backlog in the prefetch window).
var WaitBuckets = []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800}

// Label names, celery-exporter's.
var (
	taskLabels   = []string{"name", "hostname", "queue_name"}
	failedLabels = []string{"name", "hostname", "exception", "queue_name"}
	hostLabels   = []string{"hostname"}
)

// Metrics implements worker.Observer and prometheus.Collector. The zero
// value is not usable; call New.
type Metrics struct {
	reg *prometheus.Registry

	src  atomic.Pointer[Source]
	host atomic.Pointer[string] // the hostname label

	received, started, succeeded, retried, revoked, rejected *prometheus.CounterVec
	failed                                                   *prometheus.CounterVec
	runtime, wait                                            *prometheus.HistogramVec

	connected                                         atomic.Bool // BrokerConnection(true) was seen once
	reconnects                                        *prometheus.CounterVec
	storeWrites, storeErrors, storeRetries, storeLost *prometheus.CounterVec

	// Gauges, built at scrape time from the Source's Snapshot.
	up, active, reserved, scheduled, abandoned, runners, prefetch, brokerUp, backendUp *prometheus.Desc

	seen sync.Map // name\x00host\x00queue -> struct{}: label sets whose counters exist
}

var _ worker.Observer = (*Metrics)(nil)

// New builds a Metrics with its own registry, which also holds the Go
// runtime and process collectors (go_*, process_*).
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	empty := ""
	m.host.Store(&empty)

	counter := func(name, help string, labels []string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	// celery-exporter's task counters (its help texts).
	m.received = counter("celery_task_received_total", "Sent when the worker receives a task.", taskLabels)
	m.started = counter("celery_task_started_total", "Sent just before the worker executes the task.", taskLabels)
	m.succeeded = counter("celery_task_succeeded_total", "Sent if the task executed successfully.", taskLabels)
	m.failed = counter("celery_task_failed_total", "Sent if the execution of the task failed.", failedLabels)
	m.retried = counter("celery_task_retried_total", "Sent if the task failed, but will be retried in the future.", taskLabels)
	m.revoked = counter("celery_task_revoked_total", "Sent if the task has been revoked.", taskLabels)
	m.rejected = counter("celery_task_rejected_total",
		"The task was rejected by the worker, possibly to be re-queued or moved to a dead letter queue.", taskLabels)
	m.runtime = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "celery_task_runtime", Help: "Histogram of task runtime measurements.", Buckets: RuntimeBuckets,
	}, taskLabels)
	m.wait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "gocelery_task_queue_wait_seconds",
		Help: "Time from the worker receiving a task (or its ETA, if later) until a runner starts it; " +
			"time in the broker's queue is not included.",
		Buckets: WaitBuckets,
	}, taskLabels)

	m.reconnects = counter("gocelery_broker_reconnects_total", "Broker connections established after the first one.", hostLabels)
	m.storeWrites = counter("gocelery_result_store_writes_total", "Writes to the result backend, each try counted.", hostLabels)
	m.storeErrors = counter("gocelery_result_store_errors_total", "Writes to the result backend that failed, each try counted.", hostLabels)
	m.storeRetries = counter("gocelery_result_store_retries_total", "Failed writes to the result backend that are tried again.", hostLabels)
	m.storeLost = counter("gocelery_result_store_lost_total", "Results not stored: the last try failed, or the result cannot be stored.", hostLabels)

	desc := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, hostLabels, nil) }
	m.up = desc("celery_worker_up", "Indicates if a worker has recently sent a heartbeat (here: its broker connection is up).")
	m.active = desc("celery_worker_tasks_active", "The number of tasks the worker is currently processing")
	m.reserved = desc("gocelery_worker_tasks_reserved", "Tasks prefetched, waiting for a runner or a rate-limit token.")
	m.scheduled = desc("gocelery_worker_tasks_scheduled", "Tasks held in memory until their ETA (countdown, eta, retry delay).")
	m.abandoned = desc("gocelery_worker_abandoned_goroutines", "Task goroutines still running after their hard time limit (Go cannot kill them).")
	m.runners = desc("gocelery_worker_concurrency", "Tasks the worker may run at once now (changes with --autoscale).")
	m.prefetch = desc("gocelery_worker_prefetch_limit", "The prefetch window asked of the broker (0: unlimited).")
	m.brokerUp = desc("gocelery_broker_up", "1 while a broker connection is live.")
	m.backendUp = desc("gocelery_result_backend_up", "1 unless the last write to the result backend failed.")

	m.reg.MustRegister(m.received, m.started, m.succeeded, m.failed, m.retried, m.revoked, m.rejected,
		m.runtime, m.wait, m.reconnects, m.storeWrites, m.storeErrors, m.storeRetries, m.storeLost, m,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is where the metrics are registered; an embedding program may
// add its own collectors to it.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Attach names the worker the gauges and /readyz read, and takes the
// hostname label from its node name. Call it before the worker runs.
func (m *Metrics) Attach(src Source) {
	m.src.Store(&src)
	s := src.Snapshot()
	host := hostLabel(s.Node)
	m.host.Store(&host)
	m.reconnects.WithLabelValues(host)
	for _, c := range []*prometheus.CounterVec{m.storeWrites, m.storeErrors, m.storeRetries, m.storeLost} {
		c.WithLabelValues(host)
	}
}

func (m *Metrics) source() Source {
	if p := m.src.Load(); p != nil {
		return *p
	}
	return nil
}

// hostLabel is celery-exporter's hostname label: the part of the node name
// after the '@' (Celery's nodesplit), "go@web-1" -> "web-1".
func hostLabel(node string) string {
	if i := strings.IndexByte(node, '@'); i >= 0 {
		return node[i+1:]
	}
	return node
}

// touch creates every state counter of a task at 0 the first time it is
// seen, as celery-exporter does, so rate() and ratios work from the first
// event on.
func (m *Metrics) touch(task, host, queue string) {
	if _, loaded := m.seen.LoadOrStore(task+"\x00"+host+"\x00"+queue, struct{}{}); loaded {
		return
	}
	for _, c := range []*prometheus.CounterVec{m.received, m.started, m.succeeded, m.retried, m.revoked, m.rejected} {
		c.WithLabelValues(task, host, queue)
	}
	m.failed.WithLabelValues(task, host, "", queue)
}

// TaskReceived implements worker.Observer.
func (m *Metrics) TaskReceived(task, queue string) {
	host := *m.host.Load()
	m.touch(task, host, queue)
	m.received.WithLabelValues(task, host, queue).Inc()
}

// TaskStarted implements worker.Observer.
func (m *Metrics) TaskStarted(task, queue string, wait time.Duration) {
	host := *m.host.Load()
	m.started.WithLabelValues(task, host, queue).Inc()
	m.wait.WithLabelValues(task, host, queue).Observe(max(wait, 0).Seconds())
}

// TaskDone implements worker.Observer. As in celery-exporter, the runtime
// histogram holds successful runs only.
func (m *Metrics) TaskDone(task, queue, state, exception string, runtime time.Duration) {
	host := *m.host.Load()
	switch state {
	case backends.StatusSuccess:
		m.succeeded.WithLabelValues(task, host, queue).Inc()
		m.runtime.WithLabelValues(task, host, queue).Observe(runtime.Seconds())
	case backends.StatusFailure:
		m.failed.WithLabelValues(task, host, exception, queue).Inc()
	case backends.StatusRetry:
		m.retried.WithLabelValues(task, host, queue).Inc()
	case backends.StatusRevoked:
		m.revoked.WithLabelValues(task, host, queue).Inc()
	}
}

// TaskRejected implements worker.Observer: a message of an unregistered
// task, or one that is no valid task (name "" when unreadable).
func (m *Metrics) TaskRejected(task, queue, reason string) {
	host := *m.host.Load()
	m.touch(task, host, queue)
	m.rejected.WithLabelValues(task, host, queue).Inc()
}

// BrokerConnection implements worker.Observer.
func (m *Metrics) BrokerConnection(up bool) {
	if up && m.connected.Swap(true) {
		m.reconnects.WithLabelValues(*m.host.Load()).Inc()
	}
}

// ResultStore implements worker.Observer.
func (m *Metrics) ResultStore(err error, final bool) {
	host := *m.host.Load()
	m.storeWrites.WithLabelValues(host).Inc()
	if err == nil {
		return
	}
	m.storeErrors.WithLabelValues(host).Inc()
	if final || errors.Is(err, backends.ErrTooLarge) {
		m.storeLost.WithLabelValues(host).Inc()
		return
	}
	m.storeRetries.WithLabelValues(host).Inc()
}

// Describe implements prometheus.Collector for the gauges.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.up, m.active, m.reserved, m.scheduled, m.abandoned, m.runners, m.prefetch, m.brokerUp, m.backendUp} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: the gauges, from one Snapshot.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	src := m.source()
	if src == nil {
		return
	}
	s := src.Snapshot()
	host := hostLabel(s.Node)
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, host)
	}
	gauge(m.up, b2f(s.BrokerUp))
	gauge(m.active, float64(s.Running))
	gauge(m.reserved, float64(s.Reserved))
	gauge(m.scheduled, float64(s.Scheduled))
	gauge(m.abandoned, float64(s.Abandoned))
	gauge(m.runners, float64(s.Runners))
	gauge(m.prefetch, float64(s.Prefetch))
	gauge(m.brokerUp, b2f(s.BrokerUp))
	gauge(m.backendUp, b2f(s.BackendUp))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
