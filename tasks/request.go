package tasks

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// DeliveryInfo is where the message came from (Python's
// request.delivery_info).
type DeliveryInfo struct {
	Exchange    string
	RoutingKey  string
	Redelivered bool
	Priority    int
}

// Request is the running task's context, Python's self.request.
type Request struct {
	ID       string
	Name     string
	RootID   string
	ParentID string
	Group    string
	// GroupIndex is the position in the group, nil outside one.
	GroupIndex *int
	Retries    int
	// Hostname is the worker's node name (go@host).
	Hostname     string
	DeliveryInfo DeliveryInfo
	ETA          *time.Time
	Expires      *time.Time
	Args         []any
	Kwargs       map[string]any
	Task         *Task
	// Logger carries the task's name and id; tasks.Logger marks its lines
	// as the task's own.
	Logger zerolog.Logger

	// UpdateStateFunc stores a custom state; set by the worker.
	UpdateStateFunc func(ctx context.Context, state string, meta any) error

	children *childList // shared by copies of the request
}

type childList struct {
	mu    sync.Mutex
	items []any
}

// childInit guards the lazy creation of Request.children.
var childInit sync.Mutex

func (r *Request) childList() *childList {
	childInit.Lock()
	defer childInit.Unlock()
	if r.children == nil {
		r.children = &childList{}
	}
	return r.children
}

// AddChild records a task sent while this one runs, in the result-tuple
// form Celery stores in the `children` field (`[[id, null], null]` for a
// task); the worker stores them with the result, as Celery's
// request.children. Package client calls it; safe for concurrent use.
func (r *Request) AddChild(tuple any) {
	cl := r.childList()
	cl.mu.Lock()
	cl.items = append(cl.items, tuple)
	cl.mu.Unlock()
}

// Children returns the children recorded so far.
func (r *Request) Children() []any {
	cl := r.childList()
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return append([]any(nil), cl.items...)
}

type requestKey struct{}

// WithRequest returns ctx carrying req.
func WithRequest(ctx context.Context, req *Request) context.Context {
	return context.WithValue(ctx, requestKey{}, req)
}

// RequestFromContext returns the request of the task running under ctx.
func RequestFromContext(ctx context.Context) (*Request, bool) {
	r, ok := ctx.Value(requestKey{}).(*Request)
	return r, ok && r != nil
}

// ErrNoRequest: UpdateState was called outside a running task.
var ErrNoRequest = errors.New("tasks: no task request in context")

// UpdateState stores a custom state (e.g. "PROGRESS") with meta as the
// result, as Python's self.update_state does.
func UpdateState(ctx context.Context, state string, meta any) error {
	req, ok := RequestFromContext(ctx)
	if !ok || req.UpdateStateFunc == nil {
		return ErrNoRequest
	}
	return req.UpdateStateFunc(ctx, state, meta)
}

// Logger returns the running task's logger: every line carries the task's
// name and id, and the console format prints them as Celery's
// worker_task_log_format does ("gocelery.add[<id>]: message"). Outside a
// task it is a logger that discards.
func Logger(ctx context.Context) *zerolog.Logger {
	if req, ok := RequestFromContext(ctx); ok {
		// Built on use: most tasks never log, and this keeps the
		// per-task path free of the allocation.
		l := req.Logger.With().Bool("task_log", true).Logger()
		return &l
	}
	l := zerolog.Nop()
	return &l
}
