package client

import (
	"context"
	"slices"
)

// Task is a typed handle on a task whose return value decodes into R, for
// tasks registered in Go (or Python) with a known result type:
//
//	total := client.NewTask[OrderTotal](c, "orders.total", client.Queue("orders"))
//	r, err := total.Delay(ctx, lines, "eur")
//	t, err := r.Get(ctx) // an OrderTotal
type Task[R any] struct {
	Name    string
	Options []Option
	c       *Client
}

// NewTask returns a typed handle on the task name; opts apply to every
// call (before the call's own).
func NewTask[R any](c *Client, name string, opts ...Option) *Task[R] {
	return &Task[R]{Name: name, Options: opts, c: c}
}

// Delay sends the task with positional arguments.
func (t *Task[R]) Delay(ctx context.Context, args ...any) (*Result[R], error) {
	return t.Apply(ctx, args, nil)
}

// Apply sends the task with args, kwargs and extra options.
func (t *Task[R]) Apply(ctx context.Context, args []any, kwargs map[string]any, opts ...Option) (*Result[R], error) {
	r, err := t.c.SendTask(ctx, t.Name, args, kwargs, append(slices.Clone(t.Options), opts...)...)
	if err != nil {
		return nil, err
	}
	return &Result[R]{r}, nil
}

// Call sends the task and waits for its result: the R it returned, or a
// *TaskError.
func (t *Task[R]) Call(ctx context.Context, args ...any) (R, error) {
	r, err := t.Delay(ctx, args...)
	if err != nil {
		var zero R
		return zero, err
	}
	return r.Get(ctx)
}

// S is a signature of the task (with the handle's options), for canvases.
func (t *Task[R]) S(args ...any) *Signature { return S(t.Name, args...).Set(t.Options...) }

// SI is an immutable signature of the task.
func (t *Task[R]) SI(args ...any) *Signature { return SI(t.Name, args...).Set(t.Options...) }

// Result is an AsyncResult whose Get decodes into R.
type Result[R any] struct {
	*AsyncResult
}

// Get waits for the task and decodes its return value into an R; a
// failure is a *TaskError.
func (r *Result[R]) Get(ctx context.Context) (R, error) { return GetAs[R](ctx, r.AsyncResult) }

// Call sends the task name with positional args and waits for its
// result, decoded into an R:
//
//	sum, err := client.Call[int](ctx, c, "gocelery.add", 2, 3)
func Call[R any](ctx context.Context, c *Client, name string, args ...any) (R, error) {
	return NewTask[R](c, name).Call(ctx, args...)
}
