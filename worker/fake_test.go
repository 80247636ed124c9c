package worker_test

// Helpers for the fast unit tests that drive the worker through the
// in-memory broker (brokertest) and an in-memory result backend: no
// RabbitMQ, no Redis.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/broker/brokertest"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
	"github.com/celeryworker/gocelery/worker"
)

// patience bounds every WaitFor: conditions normally hold within
// milliseconds; the bound only matters when a test fails.
const patience = 5 * time.Second

const (
	testQueue = "q"
	testNode  = "w@test"
)

// ---------------------------------------------------------------------
// In-memory result backend

// memBackend is a result backend in memory with the semantics of the
// Redis one that matter to the worker: a stored SUCCESS is never
// overwritten, a cancelled context fails the write (as go-redis does), and
// chord counters as backends/chord.go keeps them. Documents are encoded
// with backends.Result.Encode and decoded again, so the test reads what a
// client would read (numbers as float64) and nothing aliases the worker's
// values.
type memBackend struct {
	mu       sync.Mutex
	docs     map[string]map[string]any // the stored document per task id
	history  map[string][]string       // every status written per task id, in order
	failNext int                       // fail this many writes
	failAll  error                     // fail every write while set
	failed   int                       // writes failed on purpose
	chords   map[string]*memChord
	cleaned  []string                                      // chord ids cleaned up
	delay    time.Duration                                 // each Store takes this long (a slow Redis)
	gate     func(ctx context.Context, r *backends.Result) // called as each Store begins
}

type memChord struct {
	size  int
	parts []memPart
}

type memPart struct {
	index  float64
	seq    int
	member string // as Redis's ZADD dedups identical members
	part   backends.ChordPart
}

var errBackendDown = errors.New("memBackend: backend down (on purpose)")

func newMemBackend() *memBackend {
	return &memBackend{docs: map[string]map[string]any{}, history: map[string][]string{}, chords: map[string]*memChord{}}
}

func (m *memBackend) mem() *memBackend { return m }

// FailNext makes the next n writes fail.
func (m *memBackend) FailNext(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failNext = n
}

// FailAll makes every write fail with err until FailAll(nil).
func (m *memBackend) FailAll(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failAll = err
}

// Failed counts the writes failed on purpose.
func (m *memBackend) Failed() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.failed
}

// SetDelay makes each Store take d, as a slow backend would.
func (m *memBackend) SetDelay(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.delay = d
}

// SetGate makes each Store call g first (g may block until ctx ends).
func (m *memBackend) SetGate(g func(ctx context.Context, r *backends.Result)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gate = g
}

func (m *memBackend) Store(ctx context.Context, r *backends.Result) error {
	m.mu.Lock()
	delay, gate := m.delay, m.gate
	m.mu.Unlock()
	if gate != nil {
		gate(ctx, r)
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	doc, err := encodeResult(r)
	if err != nil {
		return err
	}
	return m.put(r.TaskID, doc)
}

func encodeResult(r *backends.Result) (map[string]any, error) {
	raw, err := r.Encode(false)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("memBackend: result of %s is not JSON: %w", r.TaskID, err)
	}
	return doc, nil
}

func (m *memBackend) put(id string, doc map[string]any) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failAll != nil {
		m.failed++
		return m.failAll
	}
	if m.failNext > 0 {
		m.failNext--
		m.failed++
		return errBackendDown
	}
	if cur := m.docs[id]; cur != nil && cur["status"] == backends.StatusSuccess {
		return nil // as the Redis script: SUCCESS stays
	}
	m.docs[id] = doc
	m.history[id] = append(m.history[id], doc["status"].(string))
	return nil
}

func (m *memBackend) Status(ctx context.Context, id string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if d := m.docs[id]; d != nil {
		return d["status"].(string), nil
	}
	return backends.StatusPending, nil
}

// Doc returns the stored document of id, or nil.
func (m *memBackend) Doc(id string) map[string]any {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.docs[id]
}

// History lists the statuses written for id, in order.
func (m *memBackend) History(id string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.history[id])
}

// IDs lists the task ids with a stored document.
func (m *memBackend) IDs() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for id := range m.docs {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

func (m *memBackend) SetChordSize(ctx context.Context, gid string, size int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.chords[gid]
	if c == nil {
		c = &memChord{}
		m.chords[gid] = c
	}
	c.size = size
	return nil
}

func (m *memBackend) ChordPartReturn(ctx context.Context, gid string, groupIndex *int, taskID, state string, result any) ([]backends.ChordPart, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	raw, err := protocol.MarshalJSON([]any{int64(1), taskID, state, result})
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.chords[gid]
	if c == nil {
		c = &memChord{}
		m.chords[gid] = c
	}
	index := float64(1 << 62) // +inf in Redis: after every indexed part
	if groupIndex != nil {
		index = float64(*groupIndex)
	}
	if !slices.ContainsFunc(c.parts, func(p memPart) bool { return p.member == string(raw) }) {
		// The part goes through JSON as it does through Redis.
		v, err := protocol.DecodeJSON(raw)
		if err != nil {
			return nil, err
		}
		c.parts = append(c.parts, memPart{index: index, seq: len(c.parts), member: string(raw),
			part: backends.ChordPart{TaskID: taskID, State: state, Result: v.([]any)[3]}})
	}
	if c.size == 0 || len(c.parts) != c.size {
		return nil, backends.ErrChordNotReady
	}
	parts := slices.Clone(c.parts)
	sort.SliceStable(parts, func(i, j int) bool {
		if parts[i].index != parts[j].index {
			return parts[i].index < parts[j].index
		}
		return parts[i].member < parts[j].member
	})
	out := make([]backends.ChordPart, len(parts))
	for i, p := range parts {
		out[i] = p.part
	}
	return out, nil
}

func (m *memBackend) ChordCleanup(ctx context.Context, gid string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.chords, gid)
	m.cleaned = append(m.cleaned, gid)
	return nil
}

// Cleaned lists the chords whose counters were deleted.
func (m *memBackend) Cleaned() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.cleaned)
}

// asyncBackend adds StoreAsync to memBackend, as the Redis backend
// pipelines writes. With a gate, each write waits until the gate is
// closed, so a test can hold results back.
type asyncBackend struct {
	*memBackend
	gate chan struct{} // nil: no waiting

	mu      sync.Mutex
	waiting []string // ids whose write is held at the gate
	asyncN  int
}

func (a *asyncBackend) StoreAsync(r *backends.Result, done func(error)) {
	doc, err := encodeResult(r) // encoded at once, as Redis's StoreAsync does
	if err != nil {
		done(err)
		return
	}
	a.mu.Lock()
	a.asyncN++
	a.waiting = append(a.waiting, r.TaskID)
	a.mu.Unlock()
	go func() {
		if a.gate != nil {
			<-a.gate
		}
		err := a.put(r.TaskID, doc)
		a.mu.Lock()
		if i := slices.Index(a.waiting, r.TaskID); i >= 0 {
			a.waiting = slices.Delete(a.waiting, i, i+1)
		}
		a.mu.Unlock()
		done(err)
	}()
}

// Waiting lists the ids whose asynchronous write has not happened yet.
func (a *asyncBackend) Waiting() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.waiting)
}

// AsyncWrites counts StoreAsync calls.
func (a *asyncBackend) AsyncWrites() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.asyncN
}

// ---------------------------------------------------------------------
// A worker on the fake broker

// syncBuffer collects the worker's log lines; they are printed only when
// the test fails (t.Log after the test has ended would panic, and task
// goroutines may log late).
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// fixture is one worker consuming queue "q" of its own in-memory broker.
type fixture struct {
	t      testing.TB
	b      *brokertest.Broker
	be     *memBackend
	w      *worker.Worker
	runErr chan error // receives Run's result
	ran    bool
	logs   *syncBuffer
}

// newFixture builds a worker (not started) with cfg's zero fields filled:
// queue "q", node w@test, one runner, the memBackend, DefaultQueue "q" so
// canvas steps come back to it, and a test logger.
func newFixture(t testing.TB, reg *tasks.Registry, cfg worker.Config) *fixture {
	t.Helper()
	f := &fixture{t: t, b: brokertest.New(), runErr: make(chan error, 1), logs: &syncBuffer{}}
	switch tr := cfg.Broker.(type) {
	case nil:
		cfg.Broker = f.b
	case *brokertest.Broker:
		f.b = tr
	case interface{ fake() *brokertest.Broker }:
		f.b = tr.fake()
	default:
		t.Fatalf("fixture: transport %T is not a brokertest.Broker", tr)
	}
	if cfg.Backend == nil {
		f.be = newMemBackend()
		cfg.Backend = f.be
	} else if x, ok := cfg.Backend.(interface{ mem() *memBackend }); ok {
		f.be = x.mem() // a memBackend, or a type embedding one
	} else {
		t.Fatalf("fixture: backend %T has no memBackend", cfg.Backend)
	}
	if cfg.Queues == nil {
		cfg.Queues = []string{testQueue}
	}
	if cfg.NodeName == "" {
		cfg.NodeName = testNode
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 1
	}
	if cfg.DefaultQueue == "" {
		cfg.DefaultQueue = testQueue
	}
	cfg.Registry = reg
	if cfg.Logger == nil {
		zl := zerolog.New(f.logs).Level(zerolog.DebugLevel).With().Timestamp().Logger()
		cfg.Logger = &zl
	}
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.w = w
	t.Cleanup(func() {
		w.Close()
		if f.ran {
			select {
			case <-f.runErr:
			case <-time.After(patience):
				t.Errorf("Run did not return %v after Close", patience)
			}
		}
		if t.Failed() {
			logs := f.logs.String()
			if len(logs) > 64<<10 {
				logs = "...\n" + logs[len(logs)-64<<10:]
			}
			t.Logf("worker log:\n%s", logs)
		}
	})
	return f
}

// run starts Run in the background.
func (f *fixture) run(ctx context.Context) {
	f.ran = true
	go func() { f.runErr <- f.w.Run(ctx) }()
}

// start runs the worker and waits until it consumes.
func (f *fixture) start() *fixture {
	f.t.Helper()
	f.run(context.Background())
	f.waitReady()
	return f
}

func (f *fixture) waitReady() {
	f.t.Helper()
	select {
	case <-f.w.Ready():
	case err := <-f.runErr:
		f.t.Fatalf("Run returned before the worker was ready: %v", err)
	case <-time.After(patience):
		f.t.Fatal("worker not ready")
	}
	// Ready closes just before the first Consume returns to the loop.
	brokertest.WaitFor(f.t, patience, func() bool { return f.b.Prefetch() >= 0 }, "the worker to consume")
}

// startWorker builds and starts a worker.
func startWorker(t testing.TB, reg *tasks.Registry, cfg worker.Config) *fixture {
	t.Helper()
	return newFixture(t, reg, cfg).start()
}

// waitRun waits for Run to return and gives its error.
func (f *fixture) waitRun(within time.Duration) error {
	f.t.Helper()
	select {
	case err := <-f.runErr:
		f.runErr <- err // for Cleanup
		return err
	case <-time.After(within):
		f.t.Fatalf("Run did not return within %v", within)
		return nil
	}
}

// send publishes m to queue q.
func (f *fixture) send(m *protocol.Message) { f.b.PublishMessage(testQueue, m) }

// publish sends task name with args under id.
func (f *fixture) publish(id, name string, args ...any) {
	f.send(&protocol.Message{ID: id, Task: name, Args: args})
}

// result waits until id has a stored document of status and returns it.
func (f *fixture) result(id, status string) map[string]any {
	f.t.Helper()
	var doc map[string]any
	brokertest.WaitFor(f.t, patience, func() bool {
		doc = f.be.Doc(id)
		return doc != nil && doc["status"] == status
	}, fmt.Sprintf("%s result of %s (have %v)", status, id, f.be.History(id)))
	return doc
}

// waitAcked waits until the delivery of id has been acked.
func (f *fixture) waitAcked(id string) {
	f.t.Helper()
	brokertest.WaitFor(f.t, patience, func() bool { return slices.Contains(f.b.Acked(), id) }, id+" acked")
}

// control sends a remote control command to the worker and returns its
// reply (the value under the node name), failing if none comes.
func (f *fixture) control(method string, args map[string]any) any {
	f.t.Helper()
	body := brokertest.ControlBody(method, args)
	f.b.SendControl(testNode, body)
	r := f.reply(body["ticket"].(string))
	return r.Body[testNode]
}

// reply waits for the control reply with ticket.
func (f *fixture) reply(ticket string) brokertest.Reply {
	f.t.Helper()
	var got brokertest.Reply
	brokertest.WaitFor(f.t, patience, func() bool {
		for _, r := range f.b.Replies() {
			if r.RoutingKey == ticket {
				got = r
				return true
			}
		}
		return false
	}, "control reply "+ticket)
	return got
}

// slowEvents is the in-memory broker with a slow first task event
// publish: the connection takes delay to send it, as a congested link
// would.
type slowEvents struct {
	*brokertest.Broker
	delay time.Duration
	slow  atomic.Bool // set once the slow publish has begun
}

func (s *slowEvents) fake() *brokertest.Broker { return s.Broker }

func (s *slowEvents) Dial(ctx context.Context, p broker.DialParams) (broker.Conn, error) {
	c, err := s.Broker.Dial(ctx, p)
	if err != nil {
		return nil, err
	}
	return &slowEventConn{Conn: c, s: s}, nil
}

type slowEventConn struct {
	broker.Conn
	s *slowEvents
}

func (c *slowEventConn) PublishEvent(ctx context.Context, key string, env *protocol.Envelope) error {
	if strings.HasPrefix(key, "task.") {
		if c.s.slow.CompareAndSwap(false, true) { // only the first; the others go at once
			time.Sleep(c.s.delay)
		}
	}
	return c.Conn.PublishEvent(ctx, key, env)
}

// ---------------------------------------------------------------------
// Task helpers

// runLog records task runs by id.
type runLog struct {
	mu    sync.Mutex
	runs  map[string]int
	order []string
	at    map[string][]time.Time
	reqs  map[string][]tasks.Request
}

func newRunLog() *runLog {
	return &runLog{runs: map[string]int{}, at: map[string][]time.Time{}, reqs: map[string][]tasks.Request{}}
}

// countRegistry registers t.count, a task that only counts its runs in the
// returned log.
func countRegistry() (*runLog, *tasks.Registry) {
	runs := newRunLog()
	reg := tasks.NewRegistry()
	reg.MustRegister("t.count", func(ctx context.Context) (string, error) { runs.add(ctx); return "counted", nil })
	return runs, reg
}

// add records a run of the task running under ctx and returns its request.
func (l *runLog) add(ctx context.Context) *tasks.Request {
	req, ok := tasks.RequestFromContext(ctx)
	if !ok {
		panic("no request in the task's context")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.runs[req.ID]++
	l.order = append(l.order, req.ID)
	l.at[req.ID] = append(l.at[req.ID], time.Now())
	l.reqs[req.ID] = append(l.reqs[req.ID], *req)
	return req
}

func (l *runLog) count(id string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.runs[id]
}

func (l *runLog) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.order)
}

func (l *runLog) startedAt(id string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.at[id]) == 0 {
		return time.Time{}
	}
	return l.at[id][0]
}

func (l *runLog) requests(id string) []tasks.Request {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.reqs[id])
}

// gate is a task that blocks until released (or its context ends), and
// counts how many run at once.
type gate struct {
	release chan struct{}
	once    sync.Once
	// stubborn: when its context ends the handler notes the cause but
	// keeps blocking until released, as a task that ignores cancellation.
	stubborn bool
	mu       sync.Mutex
	running  []string
	peak     int
	ctxErr   map[string]error // cause seen when the context ended
	starts   map[string]int   // runs started per id
}

func newGate() *gate {
	return &gate{release: make(chan struct{}), ctxErr: map[string]error{}, starts: map[string]int{}}
}

// newStubbornGate returns a gate whose tasks ignore cancellation; the
// test's cleanup releases them.
func newStubbornGate(t *testing.T) *gate {
	g := newGate()
	g.stubborn = true
	t.Cleanup(g.Release)
	return g
}

func (g *gate) Release() { g.once.Do(func() { close(g.release) }) }

// handler blocks; it returns "released" or the context's error.
func (g *gate) handler(ctx context.Context, _ []any, _ map[string]any) (any, error) {
	req, _ := tasks.RequestFromContext(ctx)
	g.mu.Lock()
	g.running = append(g.running, req.ID)
	g.starts[req.ID]++
	g.peak = max(g.peak, len(g.running))
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		if i := slices.Index(g.running, req.ID); i >= 0 {
			g.running = slices.Delete(g.running, i, i+1)
		}
		g.mu.Unlock()
	}()
	select {
	case <-g.release:
		return "released", nil
	case <-ctx.Done():
		g.mu.Lock()
		g.ctxErr[req.ID] = context.Cause(ctx)
		g.mu.Unlock()
		if g.stubborn {
			<-g.release
		}
		return nil, context.Cause(ctx)
	}
}

// Running lists the ids blocked in the gate.
func (g *gate) Running() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.running)
}

// Started counts the runs of id started so far.
func (g *gate) Started(id string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.starts[id]
}

func (g *gate) Peak() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.peak
}

func (g *gate) Cause(id string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ctxErr[id]
}

// waitRunning waits until the ids are all blocked in the gate.
func (g *gate) waitRunning(t *testing.T, ids ...string) {
	t.Helper()
	brokertest.WaitFor(t, patience, func() bool {
		r := g.Running()
		for _, id := range ids {
			if !slices.Contains(r, id) {
				return false
			}
		}
		return true
	}, fmt.Sprintf("%v to run (running %v)", ids, g.Running()))
}

// exc reads a stored exception: exc_type and the first exc_message arg.
func exc(doc map[string]any) (typ, msg string) {
	r, _ := doc["result"].(map[string]any)
	typ, _ = r["exc_type"].(string)
	if args, ok := r["exc_message"].([]any); ok && len(args) > 0 {
		msg = fmt.Sprint(args[0])
	}
	return typ, msg
}

// asJSON renders v as compact JSON for comparisons (json.Number and
// float64 render alike).
func asJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("!%v", err)
	}
	return string(b)
}

// decodeSent decodes a task message the worker published.
func decodeSent(t *testing.T, s brokertest.Sent) *protocol.Message {
	t.Helper()
	m, err := protocol.Decode(s.Envelope, protocol.DecodeOptions{})
	if err != nil {
		t.Fatalf("published message does not decode: %v", err)
	}
	return m
}

// sentByID finds the published message with task id, or nil.
func sentByID(t *testing.T, b *brokertest.Broker, id string) *protocol.Message {
	t.Helper()
	for _, s := range b.Published() {
		if s.Envelope.Headers["id"] == id {
			return decodeSent(t, s)
		}
	}
	return nil
}

// eventTypes lists the types of the events sent so far.
func eventTypes(b *brokertest.Broker) []string {
	var out []string
	for _, e := range b.Events() {
		s, _ := e["type"].(string)
		out = append(out, s)
	}
	return out
}

// taskEvents lists, in order, the task event types sent for id.
func taskEvents(b *brokertest.Broker, id string) []string {
	var out []string
	for _, e := range b.Events() {
		if e["uuid"] == id {
			out = append(out, e["type"].(string))
		}
	}
	return out
}

// ptr returns a pointer to v.
func ptr[T any](v T) *T { return &v }
