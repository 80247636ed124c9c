package tasks

import (
	"context"
	"fmt"
	"math"
	"reflect"
	"strconv"
)

// Typed registration: RegisterN binds a function of N arguments with Go
// generics instead of reflection. The common argument types (integers,
// floats, strings, bools, lists, dicts, any) are converted by type switch;
// others fall back to Convert, so the rules and the TypeError texts are
// exactly those of Register. Use it for hot tasks: binding costs a few
// nanoseconds and no allocation where Register's reflect call costs
// hundreds (docs/performance.md, micro-benchmarks).

// Register0 registers fn, which takes no arguments from the message.
func Register0[R any](reg *Registry, name string, fn func(context.Context) (R, error), opts ...Option) error {
	b, err := newTypedBase(name, 0, opts)
	if err != nil {
		return err
	}
	return reg.RegisterHandler(name, &typed0[R]{typedBase: b, fn: fn}, opts...)
}

// Register1 registers fn, bound to one argument (named with Params).
func Register1[A, R any](reg *Registry, name string, fn func(context.Context, A) (R, error), opts ...Option) error {
	b, err := newTypedBase(name, 1, opts)
	if err != nil {
		return err
	}
	return reg.RegisterHandler(name, &typed1[A, R]{typedBase: b, fn: fn}, opts...)
}

// Register2 registers fn, bound to two arguments (named with Params).
func Register2[A, B, R any](reg *Registry, name string, fn func(context.Context, A, B) (R, error), opts ...Option) error {
	b, err := newTypedBase(name, 2, opts)
	if err != nil {
		return err
	}
	return reg.RegisterHandler(name, &typed2[A, B, R]{typedBase: b, fn: fn}, opts...)
}

// Register3 registers fn, bound to three arguments (named with Params).
func Register3[A, B, C, R any](reg *Registry, name string, fn func(context.Context, A, B, C) (R, error), opts ...Option) error {
	b, err := newTypedBase(name, 3, opts)
	if err != nil {
		return err
	}
	return reg.RegisterHandler(name, &typed3[A, B, C, R]{typedBase: b, fn: fn}, opts...)
}

type typedBase struct {
	name   string
	params []string
}

func newTypedBase(name string, n int, opts []Option) (typedBase, error) {
	var o Options
	for _, opt := range opts {
		opt(&o)
	}
	params := o.Params
	if params == nil {
		for i := range n {
			params = append(params, "arg"+strconv.Itoa(i))
		}
	}
	if len(params) != n {
		return typedBase{}, fmt.Errorf("tasks: register %q: %d parameter names for %d parameters", name, len(params), n)
	}
	return typedBase{name: name, params: params}, nil
}

// bind returns the n argument values: straight from args in the common
// case (all positional), else through BindArgs with Python's rules.
func (b *typedBase) bind(args []any, kwargs map[string]any) ([]any, error) {
	if len(kwargs) == 0 && len(args) == len(b.params) {
		return args, nil
	}
	return BindArgs(b.name, b.params, len(b.params), args, kwargs)
}

func (b *typedBase) argErr(i int, err error) error {
	return TypeError("%s() argument '%s': %v", b.name, b.params[i], err)
}

type typed0[R any] struct {
	typedBase
	fn func(context.Context) (R, error)
}

func (h *typed0[R]) Call(ctx context.Context, args []any, kwargs map[string]any) (any, error) {
	if _, err := h.bind(args, kwargs); err != nil {
		return nil, err
	}
	return result(h.fn(ctx))
}

type typed1[A, R any] struct {
	typedBase
	fn func(context.Context, A) (R, error)
}

func (h *typed1[A, R]) Call(ctx context.Context, args []any, kwargs map[string]any) (any, error) {
	v, err := h.bind(args, kwargs)
	if err != nil {
		return nil, err
	}
	a, err := ArgOf[A](v[0])
	if err != nil {
		return nil, h.argErr(0, err)
	}
	return result(h.fn(ctx, a))
}

type typed2[A, B, R any] struct {
	typedBase
	fn func(context.Context, A, B) (R, error)
}

func (h *typed2[A, B, R]) Call(ctx context.Context, args []any, kwargs map[string]any) (any, error) {
	v, err := h.bind(args, kwargs)
	if err != nil {
		return nil, err
	}
	a, err := ArgOf[A](v[0])
	if err != nil {
		return nil, h.argErr(0, err)
	}
	b, err := ArgOf[B](v[1])
	if err != nil {
		return nil, h.argErr(1, err)
	}
	return result(h.fn(ctx, a, b))
}

type typed3[A, B, C, R any] struct {
	typedBase
	fn func(context.Context, A, B, C) (R, error)
}

func (h *typed3[A, B, C, R]) Call(ctx context.Context, args []any, kwargs map[string]any) (any, error) {
	v, err := h.bind(args, kwargs)
	if err != nil {
		return nil, err
	}
	a, err := ArgOf[A](v[0])
	if err != nil {
		return nil, h.argErr(0, err)
	}
	b, err := ArgOf[B](v[1])
	if err != nil {
		return nil, h.argErr(1, err)
	}
	c, err := ArgOf[C](v[2])
	if err != nil {
		return nil, h.argErr(2, err)
	}
	return result(h.fn(ctx, a, b, c))
}

func result[R any](r R, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	return r, nil
}

// ArgOf converts one decoded message value to T with Convert's rules; the
// common types take a type switch instead of reflection.
func ArgOf[T any](v any) (T, error) {
	var zero T
	if t, ok := v.(T); ok {
		return t, nil // the decoder's own type: int64, float64, string, bool, []any, map[string]any
	}
	switch p := any(&zero).(type) {
	case *int:
		if x, ok := v.(int64); ok && x >= math.MinInt && x <= math.MaxInt {
			*p = int(x)
			return zero, nil
		}
	case *float64:
		if x, ok := v.(int64); ok {
			*p = float64(x)
			return zero, nil
		}
	}
	rv, err := Convert(v, reflect.TypeFor[T]())
	if err != nil {
		return zero, err
	}
	out, _ := rv.Interface().(T)
	return out, nil
}
