package metrics_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/broker/brokertest"
	"github.com/celeryworker/gocelery/metrics"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
	"github.com/celeryworker/gocelery/worker"
)

const patience = 5 * time.Second

// ---------------------------------------------------------------------
// A worker on the in-memory broker, observed by a Metrics, served by
// httptest.

// memBackend keeps the last status per task id; FailAll makes writes fail.
type memBackend struct {
	mu      sync.Mutex
	status  map[string]string
	failAll error
}

func (m *memBackend) Store(ctx context.Context, r *backends.Result) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failAll != nil {
		return m.failAll
	}
	if m.status[r.TaskID] != backends.StatusSuccess {
		m.status[r.TaskID] = r.Status
	}
	return nil
}

func (m *memBackend) FailAll(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failAll = err
}

func (m *memBackend) Status(id string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.status[id]
}

type harness struct {
	t   *testing.T
	b   *brokertest.Broker
	be  *memBackend
	w   *worker.Worker
	m   *metrics.Metrics
	srv *httptest.Server
}

// start runs a worker on queue "q" as node w@test (hostname label "test").
func start(t *testing.T, reg *tasks.Registry, cfg worker.Config) *harness {
	t.Helper()
	h := &harness{t: t, b: brokertest.New(), be: &memBackend{status: map[string]string{}}, m: metrics.New()}
	cfg.Broker, cfg.Backend, cfg.Registry, cfg.Observer = h.b, h.be, reg, h.m
	cfg.Queues, cfg.NodeName, cfg.DefaultQueue = []string{"q"}, "w@test", "q"
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 2
	}
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.w = w
	h.m.Attach(w)
	h.srv = httptest.NewServer(h.m.Handler())
	runErr := make(chan error, 1)
	go func() { runErr <- w.Run(context.Background()) }()
	t.Cleanup(func() {
		w.Close()
		select {
		case <-runErr:
		case <-time.After(patience):
			t.Errorf("Run did not return after Close")
		}
		h.srv.Close()
	})
	select {
	case <-w.Ready():
	case err := <-runErr:
		t.Fatalf("Run returned early: %v", err)
	case <-time.After(patience):
		t.Fatal("worker not ready")
	}
	return h
}

func (h *harness) send(id, task string, args ...any) {
	h.b.PublishMessage("q", &protocol.Message{ID: id, Task: task, Args: args})
}

// result waits until id's stored status is want.
func (h *harness) result(id, want string) {
	h.t.Helper()
	brokertest.WaitFor(h.t, patience, func() bool { return h.be.Status(id) == want }, id+" "+want)
}

func (h *harness) get(path string) (int, string) {
	h.t.Helper()
	resp, err := http.Get(h.srv.URL + path)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func (h *harness) scrape() samples {
	h.t.Helper()
	code, body := h.get("/metrics")
	if code != http.StatusOK {
		h.t.Fatalf("/metrics: %d %s", code, body)
	}
	return parse(h.t, body)
}

// waitValue polls /metrics until the series has value want.
func (h *harness) waitValue(want float64, name string, labels ...string) {
	h.t.Helper()
	var got float64
	var ok bool
	deadline := time.Now().Add(patience)
	for {
		got, ok = h.scrape().get(name, labels...)
		if ok && got == want {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s%v = %v (present %v), want %v", name, labels, got, ok, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------
// The text exposition, parsed just enough.

type sample struct {
	name   string
	labels map[string]string
	value  float64
}

type samples []sample

func parse(t *testing.T, text string) samples {
	t.Helper()
	var out samples
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			t.Fatalf("bad sample line %q", line)
		}
		s := sample{labels: map[string]string{}, value: v}
		series := line[:sp]
		if i := strings.IndexByte(series, '{'); i >= 0 {
			s.name = series[:i]
			for _, pair := range splitLabels(series[i+1 : len(series)-1]) {
				k, val, _ := strings.Cut(pair, "=")
				uq, err := strconv.Unquote(val)
				if err != nil {
					t.Fatalf("bad label %q in %q", pair, line)
				}
				s.labels[k] = uq
			}
		} else {
			s.name = series
		}
		out = append(out, s)
	}
	return out
}

// splitLabels splits a="x",b="y" at the commas outside quotes.
func splitLabels(s string) []string {
	var out []string
	inQuote, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			inQuote = !inQuote
		case ',':
			if !inQuote {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// get is the value of the one series of name whose labels include the
// given name=value pairs.
func (ss samples) get(name string, labels ...string) (float64, bool) {
	var found []sample
	for _, s := range ss {
		if s.name != name {
			continue
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			if s.labels[labels[i]] != labels[i+1] {
				match = false
			}
		}
		if match {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		return 0, false
	}
	return found[0].value, true
}

func (ss samples) must(t *testing.T, want float64, name string, labels ...string) {
	t.Helper()
	got, ok := ss.get(name, labels...)
	if !ok {
		t.Errorf("%s%v: no single series; have %s", name, labels, ss.names(name))
		return
	}
	if got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

func (ss samples) names(prefix string) string {
	var out []string
	for _, s := range ss {
		if strings.HasPrefix(s.name, prefix) {
			out = append(out, fmt.Sprintf("%s%v=%v", s.name, s.labels, s.value))
		}
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

// ---------------------------------------------------------------------

// TestTaskCounters runs tasks that succeed, fail, retry, are revoked
// (expired) and rejected (unregistered), and checks every counter and
// histogram count against what was sent.
func TestTaskCounters(t *testing.T) {
	t.Parallel()
	reg := tasks.NewRegistry()
	reg.MustRegister("t.ok", func(x int64) int64 { return x })
	reg.MustRegister("t.fail", func() error { return tasks.ValueError("no") })
	reg.MustRegister("t.flaky", func(ctx context.Context) (int64, error) {
		req, _ := tasks.RequestFromContext(ctx)
		if req.Retries < 2 {
			return 0, tasks.Retry(tasks.Countdown(0))
		}
		return int64(req.Retries), nil
	}, tasks.MaxRetries(5))
	h := start(t, reg, worker.Config{})

	for i := range 3 {
		h.send(fmt.Sprint("ok", i), "t.ok", int64(i))
	}
	h.send("fail0", "t.fail")
	h.send("fail1", "t.fail")
	h.send("flaky", "t.flaky")
	h.send("missing", "t.missing")
	past := time.Now().Add(-time.Minute)
	h.b.PublishMessage("q", &protocol.Message{ID: "expired", Task: "t.ok", Args: []any{int64(9)}, Expires: &past})

	for i := range 3 {
		h.result(fmt.Sprint("ok", i), backends.StatusSuccess)
	}
	h.result("fail0", backends.StatusFailure)
	h.result("fail1", backends.StatusFailure)
	h.result("flaky", backends.StatusSuccess)
	h.result("missing", backends.StatusFailure)
	h.result("expired", backends.StatusRevoked)
	brokertest.WaitFor(t, patience, func() bool { return h.b.Unacked() == 0 && h.b.Len("q") == 0 }, "every message settled")

	ok := []string{"name", "t.ok", "hostname", "test", "queue_name", "q"}
	fail := []string{"name", "t.fail", "hostname", "test", "queue_name", "q"}
	flaky := []string{"name", "t.flaky", "hostname", "test", "queue_name", "q"}
	missing := []string{"name", "t.missing", "hostname", "test", "queue_name", "q"}
	// A result may be readable just before its outcome is counted.
	h.waitValue(3, "celery_task_succeeded_total", ok...)
	failed := append([]string{"exception", "ValueError"}, fail...)
	h.waitValue(2, "celery_task_failed_total", failed...)
	h.waitValue(2, "celery_task_retried_total", flaky...)
	h.waitValue(1, "celery_task_succeeded_total", flaky...)
	h.waitValue(0, "celery_worker_tasks_active", "hostname", "test")

	m := h.scrape()
	m.must(t, 4, "celery_task_received_total", ok...)
	m.must(t, 3, "celery_task_started_total", ok...)
	m.must(t, 3, "celery_task_succeeded_total", ok...)
	m.must(t, 1, "celery_task_revoked_total", ok...)
	m.must(t, 0, "celery_task_failed_total", ok...) // created at 0, as celery-exporter does
	m.must(t, 0, "celery_task_retried_total", ok...)
	m.must(t, 3, "celery_task_runtime_count", ok...)
	m.must(t, 3, "celery_task_runtime_bucket", append(ok, "le", "+Inf")...)
	m.must(t, 3, "gocelery_task_queue_wait_seconds_count", ok...)

	m.must(t, 2, "celery_task_received_total", fail...)
	m.must(t, 2, "celery_task_started_total", fail...)
	m.must(t, 2, "celery_task_failed_total", failed...)
	m.must(t, 0, "celery_task_succeeded_total", fail...)
	// As in celery-exporter, the runtime histogram holds successes only.
	if _, ok := m.get("celery_task_runtime_count", fail...); ok {
		t.Errorf("runtime observed for failures: %s", m.names("celery_task_runtime_count"))
	}

	m.must(t, 3, "celery_task_received_total", flaky...) // the first try and two retries
	m.must(t, 3, "celery_task_started_total", flaky...)
	m.must(t, 2, "celery_task_retried_total", flaky...)
	m.must(t, 1, "celery_task_succeeded_total", flaky...)
	m.must(t, 0, "celery_task_failed_total", flaky...)

	m.must(t, 1, "celery_task_rejected_total", missing...)
	m.must(t, 0, "celery_task_received_total", missing...)

	// Nothing else was rejected, revoked or failed.
	for name, want := range map[string]float64{
		"celery_task_rejected_total": 1, "celery_task_revoked_total": 1, "celery_task_failed_total": 2,
		"celery_task_retried_total": 2, "celery_task_succeeded_total": 4, "celery_task_received_total": 9,
	} {
		var sum float64
		for _, s := range m {
			if s.name == name {
				sum += s.value
			}
		}
		if sum != want {
			t.Errorf("sum of %s = %v, want %v (%s)", name, sum, want, m.names(name))
		}
	}

	host := []string{"hostname", "test"}
	m.must(t, 1, "celery_worker_up", host...)
	m.must(t, 0, "celery_worker_tasks_active", host...)
	m.must(t, 0, "gocelery_worker_tasks_reserved", host...)
	m.must(t, 0, "gocelery_worker_tasks_scheduled", host...)
	m.must(t, 0, "gocelery_worker_abandoned_goroutines", host...)
	m.must(t, 2, "gocelery_worker_concurrency", host...)
	m.must(t, 8, "gocelery_worker_prefetch_limit", host...)
	m.must(t, 1, "gocelery_broker_up", host...)
	m.must(t, 1, "gocelery_result_backend_up", host...)
	m.must(t, 0, "gocelery_broker_reconnects_total", host...)
	m.must(t, 0, "gocelery_result_store_errors_total", host...)
	if v, _ := m.get("gocelery_result_store_writes_total", host...); v < 9 {
		t.Errorf("gocelery_result_store_writes_total = %v, want at least one per task", v)
	}
	if _, ok := m.get("go_goroutines"); !ok {
		t.Error("no Go runtime metrics")
	}
}

// TestGauges: running, prefetched (reserved) and held (scheduled) tasks are
// read from the worker at scrape time.
func TestGauges(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	reg := tasks.NewRegistry()
	reg.MustRegister("t.block", func(ctx context.Context) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})
	h := start(t, reg, worker.Config{Concurrency: 1})
	h.send("b0", "t.block")
	h.send("b1", "t.block")
	eta := time.Now().Add(time.Hour)
	h.b.PublishMessage("q", &protocol.Message{ID: "later", Task: "t.block", ETA: &eta})

	host := []string{"hostname", "test"}
	h.waitValue(1, "celery_worker_tasks_active", host...)
	h.waitValue(1, "gocelery_worker_tasks_reserved", host...)
	h.waitValue(1, "gocelery_worker_tasks_scheduled", host...)
	close(release)
	h.result("b1", backends.StatusSuccess)
	h.waitValue(0, "celery_worker_tasks_active", host...)
	h.waitValue(0, "gocelery_worker_tasks_reserved", host...)
	h.waitValue(1, "gocelery_worker_tasks_scheduled", host...)
}

type readiness struct {
	Ready         bool     `json:"ready"`
	Broker        string   `json:"broker"`
	ResultBackend string   `json:"result_backend"`
	Down          []string `json:"down"`
}

func (h *harness) ready() (int, readiness) {
	h.t.Helper()
	code, body := h.get("/readyz")
	var r readiness
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		h.t.Fatalf("/readyz body %q: %v", body, err)
	}
	return code, r
}

func (h *harness) waitReady(want int) readiness {
	h.t.Helper()
	var r readiness
	var code int
	deadline := time.Now().Add(patience)
	for {
		if code, r = h.ready(); code == want {
			return r
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("/readyz %d %+v, want %d", code, r, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReadiness: /readyz is 503 while the broker connection is down and
// while result writes fail, 200 again once each is back; /healthz stays
// 200; reconnects and result-store errors are counted.
func TestReadiness(t *testing.T) {
	t.Parallel()
	reg := tasks.NewRegistry()
	reg.MustRegister("t.ok", func() string { return "ok" })
	h := start(t, reg, worker.Config{})
	host := []string{"hostname", "test"}

	if r := h.waitReady(http.StatusOK); !r.Ready || r.Broker != "up" || r.ResultBackend != "up" || len(r.Down) != 0 {
		t.Fatalf("ready: %+v", r)
	}
	if code, body := h.get("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d %s", code, body)
	}

	// The broker goes away and refuses reconnects.
	h.b.FailDial(errors.New("connection refused (on purpose)"))
	h.b.Drop(errors.New("connection reset (on purpose)"))
	r := h.waitReady(http.StatusServiceUnavailable)
	if r.Ready || r.Broker != "down" || r.ResultBackend != "up" || strings.Join(r.Down, ",") != "broker" {
		t.Fatalf("broker down: %+v", r)
	}
	m := h.scrape()
	m.must(t, 0, "celery_worker_up", host...)
	m.must(t, 0, "gocelery_broker_up", host...)
	if code, _ := h.get("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz %d while the broker is down: the process is alive", code)
	}

	// It comes back: the worker reconnects.
	h.b.FailDial(nil)
	h.waitReady(http.StatusOK)
	h.waitValue(1, "gocelery_broker_reconnects_total", host...)
	h.waitValue(1, "celery_worker_up", host...)

	// The result backend fails: the first failed write makes the worker
	// unready, the retry that lands makes it ready again.
	h.be.FailAll(errors.New("redis down (on purpose)"))
	h.send("r1", "t.ok")
	r = h.waitReady(http.StatusServiceUnavailable)
	if r.Broker != "up" || r.ResultBackend != "down" || strings.Join(r.Down, ",") != "result_backend" {
		t.Fatalf("backend down: %+v", r)
	}
	m = h.scrape()
	m.must(t, 0, "gocelery_result_backend_up", host...)
	if v, _ := m.get("gocelery_result_store_errors_total", host...); v < 1 {
		t.Errorf("gocelery_result_store_errors_total = %v, want >= 1", v)
	}
	if v, _ := m.get("gocelery_result_store_retries_total", host...); v < 1 {
		t.Errorf("gocelery_result_store_retries_total = %v, want >= 1", v)
	}
	h.be.FailAll(nil)
	h.result("r1", backends.StatusSuccess)
	h.waitReady(http.StatusOK)
	h.scrape().must(t, 0, "gocelery_result_store_lost_total", host...)
}

// TestAbandonedGoroutines: a task past its hard time limit that ignores
// its context is counted until its goroutine returns.
func TestAbandonedGoroutines(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	reg := tasks.NewRegistry()
	reg.MustRegister("t.stuck", func(ctx context.Context) string {
		<-release // ignores ctx
		return "late"
	}, tasks.TimeLimit(30*time.Millisecond))
	h := start(t, reg, worker.Config{})
	h.send("s1", "t.stuck")
	h.result("s1", backends.StatusFailure)
	host := []string{"hostname", "test"}
	h.waitValue(1, "gocelery_worker_abandoned_goroutines", host...)
	h.scrape().must(t, 1, "celery_task_failed_total", "name", "t.stuck", "exception", "TimeLimitExceeded")
	close(release)
	h.waitValue(0, "gocelery_worker_abandoned_goroutines", host...)
}

// TestObserverUnit checks the classification of result writes and broker
// connections without a worker.
func TestObserverUnit(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	m.Attach(fixedSource{worker.Snapshot{Node: "go@box", Queues: []string{"a", "b"}, BrokerUp: true}})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	h := &harness{t: t, m: m, srv: srv}

	boom := errors.New("boom")
	m.ResultStore(nil, false)
	m.ResultStore(boom, false)                 // will be retried
	m.ResultStore(boom, true)                  // the last try
	m.ResultStore(backends.ErrTooLarge, false) // never stored
	for _, up := range []bool{true, false, true, false, true} {
		m.BrokerConnection(up)
	}
	m.TaskReceived("x", "q2")
	m.TaskRejected("", "q2", "invalid")

	s := h.scrape()
	host := []string{"hostname", "box"}
	s.must(t, 4, "gocelery_result_store_writes_total", host...)
	s.must(t, 3, "gocelery_result_store_errors_total", host...)
	s.must(t, 1, "gocelery_result_store_retries_total", host...)
	s.must(t, 2, "gocelery_result_store_lost_total", host...)
	s.must(t, 2, "gocelery_broker_reconnects_total", host...)
	// The queue label is the routing key the message came with.
	s.must(t, 1, "celery_task_received_total", "name", "x", "hostname", "box", "queue_name", "q2")
	s.must(t, 1, "celery_task_rejected_total", "name", "", "hostname", "box")
	// The result backend is down here: readiness says which.
	code, body := h.get("/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"result_backend":"down"`) || !strings.Contains(body, `"broker":"up"`) {
		t.Fatalf("/readyz: %d %s", code, body)
	}
}

type fixedSource struct{ s worker.Snapshot }

func (f fixedSource) Snapshot() worker.Snapshot { return f.s }

// TestBeforeAttach: served before the worker exists, /readyz says so.
func TestBeforeAttach(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	srv, err := metrics.Listen("127.0.0.1:0", m.Handler())
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, m: m, srv: &httptest.Server{URL: "http://" + srv.Addr().String()}}
	if code, body := h.get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, `"down":["worker"]`) {
		t.Fatalf("/readyz: %d %s", code, body)
	}
	if code, _ := h.get("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}
	if _, ok := h.scrape().get("celery_worker_up"); ok {
		t.Fatal("celery_worker_up before a worker is attached")
	}
	if code, _ := h.get("/nothing"); code != http.StatusNotFound {
		t.Fatalf("/nothing: %d", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + srv.Addr().String() + "/healthz"); err == nil {
		t.Fatal("served after Shutdown")
	}
}

// TestListenPortInUse: a bound port is an error from Listen, not later.
func TestListenPortInUse(t *testing.T) {
	t.Parallel()
	a, err := metrics.Listen("127.0.0.1:0", http.NotFoundHandler())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	if b, err := metrics.Listen(a.Addr().String(), http.NotFoundHandler()); err == nil {
		b.Shutdown(context.Background())
		t.Fatalf("Listen on %s, in use, succeeded", a.Addr())
	}
}
