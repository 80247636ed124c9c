package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
)

// Task states as Celery names them (backends has the same constants).
const (
	StatePending = backends.StatusPending
	StateStarted = backends.StatusStarted
	StateSuccess = backends.StatusSuccess
	StateFailure = backends.StatusFailure
	StateRetry   = backends.StatusRetry
	StateRevoked = backends.StatusRevoked
)

// Meta is a snapshot of a task's stored state document
// (celery-task-meta-<id>); a task with nothing stored is PENDING.
type Meta struct {
	TaskID string
	State  string
	// Result is the stored value as the protocol decodes it: the return
	// value for SUCCESS, the exception dict for FAILURE, RETRY and REVOKED,
	// the meta of a custom state such as PROGRESS, {"pid", "hostname"} for
	// STARTED.
	Result    any
	Traceback string
	// Children are the stored result tuples of tasks the task sent.
	Children []any
	DateDone *time.Time
	GroupID  string
	ParentID string
	// Set with result_extended: the task's name, args, kwargs, worker node,
	// retries and queue.
	Name    string
	Args    []any
	Kwargs  map[string]any
	Worker  string
	Retries int
	Queue   string
}

// Ready reports whether the state is final (SUCCESS, FAILURE, REVOKED).
func (m *Meta) Ready() bool { return backends.Ready(m.State) }

// Successful reports SUCCESS.
func (m *Meta) Successful() bool { return m.State == StateSuccess }

// Failed reports FAILURE.
func (m *Meta) Failed() bool { return m.State == StateFailure }

// Exception is the stored exception of a FAILURE, RETRY or REVOKED state
// (nil otherwise).
func (m *Meta) Exception() *TaskError {
	switch m.State {
	case StateFailure, StateRetry, StateRevoked:
		return taskError(m)
	}
	return nil
}

// Err is the error Get returns: a *TaskError for FAILURE and REVOKED
// (Celery's propagating states), nil otherwise.
func (m *Meta) Err() error {
	if m.State == StateFailure || m.State == StateRevoked {
		return taskError(m)
	}
	return nil
}

// Decode stores Result into the Go value dst points to (see Decode).
func (m *Meta) Decode(dst any) error { return Decode(m.Result, dst) }

// ParseMeta reads a stored or published result document.
func ParseMeta(doc []byte) (*Meta, error) {
	v, err := protocol.DecodeJSON(doc)
	if err != nil {
		var merr error
		if v, merr = protocol.DecodeMsgpack(doc); merr != nil {
			return nil, fmt.Errorf("client: result document: %w", err)
		}
	}
	d, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("client: result document is a %s, not a dict", protocol.PyTypeName(v))
	}
	m := &Meta{State: str(d["status"]), Result: d["result"], Traceback: str(d["traceback"]),
		TaskID: str(d["task_id"]), GroupID: str(d["group_id"]), ParentID: str(d["parent_id"]),
		Name: str(d["name"]), Worker: str(d["worker"]), Queue: str(d["queue"])}
	if m.State == "" {
		return nil, errors.New("client: result document has no status")
	}
	m.Children, _ = d["children"].([]any)
	m.Args, _ = d["args"].([]any)
	m.Kwargs, _ = d["kwargs"].(map[string]any)
	if n, ok := toInt(d["retries"]); ok {
		m.Retries = int(n)
	}
	if s := str(d["date_done"]); s != "" {
		if t, _, err := protocol.ParseTime(s); err == nil {
			m.DateDone = &t
		}
	}
	return m, nil
}

// TaskError is a task's failure as Python stored it: the exception's type
// (class name), module and args, its str() as Message, and the formatted
// traceback. Get returns it for FAILURE and REVOKED (Type
// "TaskRevokedError"); find it with errors.As.
type TaskError struct {
	TaskID string
	// State is FAILURE, REVOKED or RETRY.
	State  string
	Type   string
	Module string
	// Args are the exception's args (exc_message).
	Args []any
	// Message is what Python's str(exc) gives for those args.
	Message   string
	Traceback string
}

func (e *TaskError) Error() string {
	name := e.Type
	if e.Module != "" && e.Module != "builtins" && e.Module != "__main__" {
		name = e.Module + "." + e.Type
	}
	if e.Message == "" {
		return name
	}
	return name + ": " + e.Message
}

// Is matches ErrRevoked for a revoked task.
func (e *TaskError) Is(target error) bool {
	return target == ErrRevoked && (e.State == StateRevoked || e.Type == "TaskRevokedError")
}

// As lets a Go task return a failure it got from a task it called as its
// own: errors.As(err, &pyErr) with a **tasks.PyError gives the same Python
// exception (type, module, args), so the worker stores it as such.
func (e *TaskError) As(target any) bool {
	if p, ok := target.(**tasks.PyError); ok {
		*p = &tasks.PyError{Type: e.Type, Module: e.Module, Args: e.Args}
		return true
	}
	return false
}

// ErrRevoked matches (errors.Is) the TaskError of a revoked, expired or
// terminated task.
var ErrRevoked = errors.New("client: task revoked")

func taskError(m *Meta) *TaskError {
	e := &TaskError{TaskID: m.TaskID, State: m.State, Traceback: m.Traceback, Type: "Exception", Module: "builtins"}
	d, ok := m.Result.(map[string]any)
	if !ok {
		if m.Result != nil {
			e.Args = []any{m.Result}
		}
		e.Message = excStr(e.Type, e.Args)
		return e
	}
	if t := str(d["exc_type"]); t != "" {
		e.Type = t
	}
	if mod, ok := d["exc_module"].(string); ok {
		e.Module = mod
	}
	switch a := d["exc_message"].(type) {
	case []any:
		e.Args = a
	case nil:
	default:
		e.Args = []any{a}
	}
	e.Message = excStr(e.Type, e.Args)
	return e
}

// excStr is Python's str() of an exception built with args.
func excStr(typ string, args []any) string {
	switch len(args) {
	case 0:
		return ""
	case 1:
		if s, ok := args[0].(string); ok && typ != "KeyError" {
			return s
		}
		return protocol.PyRepr(args[0])
	}
	parts := make([]string, len(args))
	for i, a := range args {
		parts[i] = protocol.PyRepr(a)
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// AsyncResult is a task's pending result, Celery's AsyncResult.
type AsyncResult struct {
	ID string
	// Parent is the previous step's result, for a chain's step (nil
	// otherwise).
	Parent *AsyncResult
	// Header is the chord's header group, for a chord's result.
	Header *GroupResult
	// Ignored is set for a task sent with IgnoreResult: Get returns nil at
	// once.
	Ignored bool

	c     *Client
	mu    sync.Mutex
	ready *Meta // cached once ready, as Celery caches ready results
}

// AsyncResult returns the result handle of a task id.
func (c *Client) AsyncResult(id string) *AsyncResult { return &AsyncResult{ID: id, c: c} }

func (r *AsyncResult) String() string { return r.ID }

func (r *AsyncResult) backend() (*backends.Redis, error) {
	if r.c == nil || r.c.backend == nil {
		return nil, ErrNoBackend
	}
	return r.c.backend, nil
}

// Meta reads the task's current state document.
func (r *AsyncResult) Meta(ctx context.Context) (*Meta, error) {
	r.mu.Lock()
	cached := r.ready
	r.mu.Unlock()
	if cached != nil {
		return cached, nil
	}
	be, err := r.backend()
	if err != nil {
		return nil, err
	}
	doc, err := be.Get(ctx, r.ID)
	if err != nil {
		return nil, err
	}
	if doc == nil {
		return &Meta{TaskID: r.ID, State: StatePending}, nil
	}
	m, err := ParseMeta(doc)
	if err != nil {
		return nil, err
	}
	if m.TaskID == "" {
		m.TaskID = r.ID
	}
	r.keep(m)
	return m, nil
}

func (r *AsyncResult) keep(m *Meta) {
	if m.Ready() {
		r.mu.Lock()
		r.ready = m
		r.mu.Unlock()
	}
}

// State is the task's state: PENDING (nothing stored yet), STARTED,
// RETRY, a custom state such as PROGRESS, or a final SUCCESS, FAILURE,
// REVOKED.
func (r *AsyncResult) State(ctx context.Context) (string, error) {
	m, err := r.Meta(ctx)
	if err != nil {
		return "", err
	}
	return m.State, nil
}

// Info is Celery's result.info: the return value after SUCCESS, the
// *TaskError after FAILURE, RETRY or REVOKED, the meta of a custom state
// (e.g. {"current": 3, "total": 10} for PROGRESS), nil while PENDING.
func (r *AsyncResult) Info(ctx context.Context) (any, error) {
	m, err := r.Meta(ctx)
	if err != nil {
		return nil, err
	}
	if e := m.Exception(); e != nil {
		return e, nil
	}
	return m.Result, nil
}

// Ready reports whether the task has finished (SUCCESS, FAILURE, REVOKED).
func (r *AsyncResult) Ready(ctx context.Context) (bool, error) {
	m, err := r.Meta(ctx)
	if err != nil {
		return false, err
	}
	return m.Ready(), nil
}

// Successful reports whether the task succeeded.
func (r *AsyncResult) Successful(ctx context.Context) (bool, error) {
	m, err := r.Meta(ctx)
	if err != nil {
		return false, err
	}
	return m.Successful(), nil
}

// Failed reports whether the task failed.
func (r *AsyncResult) Failed(ctx context.Context) (bool, error) {
	m, err := r.Meta(ctx)
	if err != nil {
		return false, err
	}
	return m.Failed(), nil
}

// Traceback is the stored traceback of a failure or retry ("" otherwise).
func (r *AsyncResult) Traceback(ctx context.Context) (string, error) {
	m, err := r.Meta(ctx)
	if err != nil {
		return "", err
	}
	return m.Traceback, nil
}

// Result decodes the current stored value into dst without waiting (see
// Decode); for a failure it is the exception dict.
func (r *AsyncResult) Result(ctx context.Context, dst any) error {
	m, err := r.Meta(ctx)
	if err != nil {
		return err
	}
	return m.Decode(dst)
}

// Wait blocks until the task is ready and returns its final state, without
// turning a failure into an error. It subscribes to the result's Redis
// channel (celery-task-meta-<id>), on which workers publish every state
// they store, then reads the stored state, so nothing is missed and
// nothing is polled. onUpdate, when not nil, sees each intermediate state
// (STARTED, RETRY, PROGRESS, ...) published while waiting.
func (r *AsyncResult) Wait(ctx context.Context, onUpdate func(*Meta)) (*Meta, error) {
	r.mu.Lock()
	cached := r.ready
	r.mu.Unlock()
	if cached != nil {
		return cached, nil
	}
	be, err := r.backend()
	if err != nil {
		return nil, err
	}
	var update func(string, []byte)
	if onUpdate != nil {
		update = func(_ string, doc []byte) {
			if m, err := ParseMeta(doc); err == nil {
				onUpdate(m)
			}
		}
	}
	docs, err := be.WaitReady(ctx, []string{r.ID}, update)
	if err != nil {
		return nil, fmt.Errorf("client: wait for %s: %w", r.ID, err)
	}
	m, err := ParseMeta(docs[0])
	if err != nil {
		return nil, err
	}
	if m.TaskID == "" {
		m.TaskID = r.ID
	}
	r.keep(m)
	return m, nil
}

// Get waits for the task (see Wait) and returns its return value, or a
// *TaskError carrying the Python exception when it failed or was revoked.
// Bound the wait with ctx. A task sent with IgnoreResult gives nil at
// once, as in Celery. Unlike Celery, Get inside a running task is allowed
// (Celery refuses it unless disable_sync_subtasks=False): the waiting task
// holds its worker slot, so a worker whose slots all wait on tasks queued
// behind them deadlocks; prefer a chain or chord.
func (r *AsyncResult) Get(ctx context.Context) (any, error) {
	if r.Ignored {
		return nil, nil
	}
	m, err := r.Wait(ctx, nil)
	if err != nil {
		return nil, err
	}
	if err := m.Err(); err != nil {
		return nil, err
	}
	return m.Result, nil
}

// GetInto is Get decoding the return value into the Go value dst points to.
func (r *AsyncResult) GetInto(ctx context.Context, dst any) error {
	v, err := r.Get(ctx)
	if err != nil {
		return err
	}
	return Decode(v, dst)
}

// GetAs is Get decoding the return value as an R.
func GetAs[R any](ctx context.Context, r *AsyncResult) (R, error) {
	var out R
	err := r.GetInto(ctx, &out)
	return out, err
}

// Forget deletes the stored result (Celery's result.forget()).
func (r *AsyncResult) Forget(ctx context.Context) error {
	be, err := r.backend()
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.ready = nil
	r.mu.Unlock()
	return be.Forget(ctx, r.ID)
}

// Revoke tells every worker not to run the task (the revoke remote
// control command, as app.control.revoke sends it); with terminate a
// worker running it stops it. See Client.Revoke.
func (r *AsyncResult) Revoke(ctx context.Context, terminate bool) error {
	if r.c == nil {
		return ErrClosed
	}
	return r.c.Revoke(ctx, []string{r.ID}, RevokeOptions{Terminate: terminate})
}

// Children are the results of the tasks this task sent while running, as
// the worker stored them: *AsyncResult for a task, *GroupResult for a
// group.
func (r *AsyncResult) Children(ctx context.Context) ([]any, error) {
	m, err := r.Meta(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]any, 0, len(m.Children))
	for _, t := range m.Children {
		if res := r.c.resultFromTuple(t); res != nil {
			out = append(out, res)
		}
	}
	return out, nil
}

// resultFromTuple reads a result tuple: [[id, parent], null] for a task,
// [[gid, parent], [child tuples]] for a group (Celery's result_from_tuple).
func (c *Client) resultFromTuple(v any) any {
	t, ok := v.([]any)
	if !ok || len(t) != 2 {
		return nil
	}
	head, ok := t[0].([]any)
	if !ok || len(head) < 1 {
		return nil
	}
	id := str(head[0])
	if id == "" {
		return nil
	}
	if members, ok := t[1].([]any); ok {
		g := &GroupResult{ID: id, c: c}
		for _, m := range members {
			if res, ok := c.resultFromTuple(m).(*AsyncResult); ok {
				g.Results = append(g.Results, res)
			}
		}
		return g
	}
	r := c.AsyncResult(id)
	if len(head) > 1 {
		if p, ok := c.resultFromTuple(head[1]).(*AsyncResult); ok {
			r.Parent = p
		}
	}
	return r
}

// GroupResult is a group's results, Celery's GroupResult.
type GroupResult struct {
	ID      string
	Results []*AsyncResult
	c       *Client
}

// GroupResult returns the handle of a group of task ids.
func (c *Client) GroupResult(id string, taskIDs ...string) *GroupResult {
	g := &GroupResult{ID: id, c: c}
	for _, t := range taskIDs {
		g.Results = append(g.Results, c.AsyncResult(t))
	}
	return g
}

// IDs are the member task ids, in group order.
func (g *GroupResult) IDs() []string {
	ids := make([]string, len(g.Results))
	for i, r := range g.Results {
		ids[i] = r.ID
	}
	return ids
}

// Metas reads every member's current state, in group order.
func (g *GroupResult) Metas(ctx context.Context) ([]*Meta, error) {
	if g.c == nil || g.c.backend == nil {
		return nil, ErrNoBackend
	}
	out := make([]*Meta, len(g.Results))
	if len(out) == 0 {
		return out, nil
	}
	be := g.c.backend
	keys := make([]string, len(g.Results))
	for i, r := range g.Results {
		keys[i] = be.Key(r.ID)
	}
	vals, err := be.Client().MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("client: group %s: %w", g.ID, err)
	}
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			out[i] = &Meta{TaskID: g.Results[i].ID, State: StatePending}
			continue
		}
		m, err := ParseMeta([]byte(s))
		if err != nil {
			return nil, err
		}
		g.Results[i].keep(m)
		out[i] = m
	}
	return out, nil
}

// CompletedCount is the number of members that succeeded.
func (g *GroupResult) CompletedCount(ctx context.Context) (int, error) {
	ms, err := g.Metas(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, m := range ms {
		if m.Successful() {
			n++
		}
	}
	return n, nil
}

// Ready reports whether every member has finished.
func (g *GroupResult) Ready(ctx context.Context) (bool, error) {
	ms, err := g.Metas(ctx)
	if err != nil {
		return false, err
	}
	for _, m := range ms {
		if !m.Ready() {
			return false, nil
		}
	}
	return true, nil
}

// Successful reports whether every member succeeded.
func (g *GroupResult) Successful(ctx context.Context) (bool, error) {
	n, err := g.CompletedCount(ctx)
	return err == nil && n == len(g.Results), err
}

// Failed reports whether any member failed.
func (g *GroupResult) Failed(ctx context.Context) (bool, error) {
	ms, err := g.Metas(ctx)
	if err != nil {
		return false, err
	}
	for _, m := range ms {
		if m.Failed() {
			return true, nil
		}
	}
	return false, nil
}

// Wait waits until every member is ready (one subscription for all of
// them) and returns their final states in group order.
func (g *GroupResult) Wait(ctx context.Context) ([]*Meta, error) {
	if g.c == nil || g.c.backend == nil {
		return nil, ErrNoBackend
	}
	docs, err := g.c.backend.WaitReady(ctx, g.IDs(), nil)
	if err != nil {
		return nil, fmt.Errorf("client: wait for group %s: %w", g.ID, err)
	}
	out := make([]*Meta, len(docs))
	for i, d := range docs {
		m, err := ParseMeta(d)
		if err != nil {
			return nil, err
		}
		g.Results[i].keep(m)
		out[i] = m
	}
	return out, nil
}

// Join waits for every member and returns their return values in group
// order; the first failed member (in group order) makes it return that
// member's *TaskError, as Celery's join() raises it.
func (g *GroupResult) Join(ctx context.Context) ([]any, error) {
	ms, err := g.Wait(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]any, len(ms))
	for i, m := range ms {
		if err := m.Err(); err != nil {
			return nil, err
		}
		out[i] = m.Result
	}
	return out, nil
}

// JoinInto is Join decoding the list of values into dst (e.g. *[]int).
func (g *GroupResult) JoinInto(ctx context.Context, dst any) error {
	vals, err := g.Join(ctx)
	if err != nil {
		return err
	}
	return Decode(vals, dst)
}

// Forget deletes every member's result and the saved group.
func (g *GroupResult) Forget(ctx context.Context) error {
	if g.c == nil || g.c.backend == nil {
		return ErrNoBackend
	}
	if err := g.c.backend.Forget(ctx, g.IDs()...); err != nil {
		return err
	}
	return g.c.backend.ForgetGroup(ctx, g.ID)
}

// Revoke revokes every member.
func (g *GroupResult) Revoke(ctx context.Context, terminate bool) error {
	if g.c == nil {
		return ErrClosed
	}
	return g.c.Revoke(ctx, g.IDs(), RevokeOptions{Terminate: terminate})
}

// Tuple is the group's result tuple, [[gid, null], [[[id, null], null], ...]].
func (g *GroupResult) Tuple() []any {
	members := make([]any, len(g.Results))
	for i, r := range g.Results {
		members[i] = []any{[]any{r.ID, nil}, nil}
	}
	return []any{[]any{g.ID, nil}, members}
}

// Save stores the group (celery-taskset-meta-<gid>) so RestoreGroup can
// find it by id, as Celery's GroupResult.save().
func (g *GroupResult) Save(ctx context.Context) error {
	if g.c == nil || g.c.backend == nil {
		return ErrNoBackend
	}
	return g.c.backend.SaveGroup(ctx, g.ID, g.Tuple())
}

// RestoreGroup reads a group saved by GroupResult.Save (Go or Python);
// nil, nil when none is stored.
func (c *Client) RestoreGroup(ctx context.Context, id string) (*GroupResult, error) {
	if c.backend == nil {
		return nil, ErrNoBackend
	}
	doc, err := c.backend.GetGroup(ctx, id)
	if err != nil || doc == nil {
		return nil, err
	}
	var d struct {
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, fmt.Errorf("client: group %s: %w", id, err)
	}
	v, err := protocol.DecodeJSON(d.Result)
	if err != nil {
		return nil, fmt.Errorf("client: group %s: %w", id, err)
	}
	g, ok := c.resultFromTuple(v).(*GroupResult)
	if !ok {
		return nil, fmt.Errorf("client: group %s: stored result is not a group tuple", id)
	}
	return g, nil
}
