package tasks

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
)

// Handler runs a task with the message's positional and keyword
// arguments. The returned value is stored as the result; it must be made
// of JSON/msgpack-encodable values (the protocol package's value model or
// plain Go values).
type Handler interface {
	Call(ctx context.Context, args []any, kwargs map[string]any) (any, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, args []any, kwargs map[string]any) (any, error)

// Call calls f.
func (f HandlerFunc) Call(ctx context.Context, args []any, kwargs map[string]any) (any, error) {
	return f(ctx, args, kwargs)
}

// Task is a registered task.
type Task struct {
	Name    string
	Handler Handler
	Options Options
}

// Registry maps task names to tasks. It is safe for concurrent use.
type Registry struct {
	mu    sync.RWMutex
	tasks map[string]*Task
}

// ErrDuplicate: a task of that name is already registered.
var ErrDuplicate = errors.New("tasks: task already registered")

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{tasks: map[string]*Task{}} }

// Register registers fn under name. fn is a Handler, a HandlerFunc-shaped
// function, or any Go function whose parameters are bound from the
// message (see Bind): e.g. func(ctx context.Context, x, y int) (int, error)
// with Params("x", "y") for keyword arguments.
func (r *Registry) Register(name string, fn any, opts ...Option) error {
	var h Handler
	switch f := fn.(type) {
	case Handler:
		h = f
	case func(context.Context, []any, map[string]any) (any, error):
		h = HandlerFunc(f)
	default:
		// Only the parameter names are needed to bind; RegisterHandler
		// applies the options for the task.
		var o Options
		for _, opt := range opts {
			opt(&o)
		}
		b, err := Bind(name, fn, o.Params)
		if err != nil {
			return err
		}
		h = b
	}
	return r.RegisterHandler(name, h, opts...)
}

// RegisterHandler registers h under name.
func (r *Registry) RegisterHandler(name string, h Handler, opts ...Option) error {
	if name == "" {
		return errors.New("tasks: empty task name")
	}
	if h == nil {
		return fmt.Errorf("tasks: register %q: nil handler", name)
	}
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if _, err := ParseRateLimit(o.RateLimit); err != nil {
		return fmt.Errorf("tasks: register %q: %w", name, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.tasks[name]; dup {
		return fmt.Errorf("%w: %q", ErrDuplicate, name)
	}
	r.tasks[name] = &Task{Name: name, Handler: h, Options: o}
	return nil
}

// MustRegister is Register that panics on error, for package init.
func (r *Registry) MustRegister(name string, fn any, opts ...Option) {
	if err := r.Register(name, fn, opts...); err != nil {
		panic(err)
	}
}

// Lookup returns the task registered under name.
func (r *Registry) Lookup(name string) (*Task, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t, ok := r.tasks[name]
	return t, ok
}

// Names lists the registered names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.tasks))
	for n := range r.tasks {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
