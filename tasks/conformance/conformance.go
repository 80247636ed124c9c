// Package conformance holds the task set the gocelery binary registers out
// of the box (docs/tasks.md): the project's contract with
// Python producers, used by the interop tests, benchmarks and the demo.
package conformance

import (
	"context"
	"math/big"
	"time"

	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
)

// Register adds every conformance task to reg.
func Register(reg *tasks.Registry) error {
	for _, t := range []struct {
		name string
		fn   tasks.HandlerFunc
		opts []tasks.Option
	}{
		{"gocelery.add", add, nil},
		{"gocelery.echo", echo, nil},
		{"gocelery.sleep", sleep, nil},
		{"gocelery.fail", fail, nil},
		{"gocelery.flaky", flaky, []tasks.Option{tasks.MaxRetries(3)}},
		{"gocelery.progress", progress, nil},
		{"gocelery.xsum", xsum, nil},
		{"gocelery.noop", noop, nil},
		{"gocelery.request", request, nil},
		{"gocelery.limited", limited, []tasks.Option{tasks.RateLimit("5/s")}},
		// Beyond the shared contract: automatic retry with backoff, for the
		// task semantics tests (interop/pytasks.py has its twin).
		{"gocelery.autoretry", autoretry, []tasks.Option{tasks.MaxRetries(3),
			tasks.AutoRetryFor(tasks.RuntimeError("")), tasks.RetryBackoff(time.Second, 2*time.Second, false)}},
	} {
		if err := reg.RegisterHandler(t.name, t.fn, t.opts...); err != nil {
			return err
		}
	}
	return nil
}

func add(_ context.Context, args []any, kwargs map[string]any) (any, error) {
	v, err := tasks.BindArgs("add", []string{"x", "y"}, 2, args, kwargs)
	if err != nil {
		return nil, err
	}
	var s sum
	for _, x := range v {
		if err := s.add(x); err != nil {
			return nil, err
		}
	}
	return s.value(), nil
}

// sum adds numbers as Python does: integers exactly, floats once any
// float is involved; anything else is a TypeError.
type sum struct {
	i       big.Int
	f       float64
	isFloat bool
}

func (s *sum) add(v any) error {
	if b, ok := tasks.AsBigInt(v); ok {
		if s.isFloat {
			f, _ := new(big.Float).SetInt(b).Float64()
			s.f += f
		} else {
			s.i.Add(&s.i, b)
		}
		return nil
	}
	if _, isBool := v.(bool); !isBool {
		if f, ok := tasks.AsFloat(v); ok {
			if !s.isFloat {
				s.f, _ = new(big.Float).SetInt(&s.i).Float64()
				s.isFloat = true
			}
			s.f += f
			return nil
		}
	}
	return tasks.TypeError("unsupported operand type(s) for +: 'int' and '%s'", protocol.PyTypeName(v))
}

func (s *sum) value() any {
	if s.isFloat {
		return s.f
	}
	if s.i.IsInt64() {
		return s.i.Int64()
	}
	return new(big.Int).Set(&s.i)
}

func echo(_ context.Context, args []any, kwargs map[string]any) (any, error) {
	if args == nil {
		args = []any{}
	}
	if kwargs == nil {
		kwargs = map[string]any{}
	}
	return map[string]any{"args": args, "kwargs": kwargs}, nil
}

// wait sleeps d or until ctx ends, returning the cancellation's cause
// (soft or hard time limit, terminate).
func wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return context.Cause(ctx)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func seconds(task, name string, v any) (time.Duration, error) {
	if _, isBool := v.(bool); !isBool {
		if f, ok := tasks.AsFloat(v); ok {
			return time.Duration(f * float64(time.Second)), nil
		}
	}
	return 0, tasks.TypeError("%s() argument '%s' must be int or float, not %s", task, name, protocol.PyTypeName(v))
}

func sleep(ctx context.Context, args []any, kwargs map[string]any) (any, error) {
	v, err := tasks.BindArgs("sleep", []string{"seconds"}, 1, args, kwargs)
	if err != nil {
		return nil, err
	}
	d, err := seconds("sleep", "seconds", v[0])
	if err != nil {
		return nil, err
	}
	if err := wait(ctx, d); err != nil {
		return nil, err
	}
	return v[0], nil
}

// failTypes are the builtin exceptions fail raises by name.
var failTypes = map[string]bool{
	"ValueError": true, "KeyError": true, "TypeError": true, "RuntimeError": true,
	"ZeroDivisionError": true, "IndexError": true, "LookupError": true,
	"AttributeError": true, "NotImplementedError": true, "OSError": true,
	"ArithmeticError": true, "AssertionError": true, "Exception": true,
}

func fail(_ context.Context, args []any, kwargs map[string]any) (any, error) {
	v, err := tasks.BindArgs("fail", []string{"exc_type", "message"}, 2, args, kwargs)
	if err != nil {
		return nil, err
	}
	typ, _ := v[0].(string)
	if !failTypes[typ] {
		typ = "RuntimeError"
	}
	return nil, &tasks.PyError{Type: typ, Module: "builtins", Args: []any{v[1]}}
}

func intArg(task, name string, v any) (int64, error) {
	b, ok := tasks.AsBigInt(v)
	if !ok || !b.IsInt64() {
		return 0, tasks.TypeError("%s() argument '%s' must be int, not %s", task, name, protocol.PyTypeName(v))
	}
	return b.Int64(), nil
}

func flaky(ctx context.Context, args []any, kwargs map[string]any) (any, error) {
	v, err := tasks.BindArgs("flaky", []string{"failures", "countdown"}, 1, args, kwargs)
	if err != nil {
		return nil, err
	}
	failures, err := intArg("flaky", "failures", v[0])
	if err != nil {
		return nil, err
	}
	var countdown time.Duration
	if v[1] != nil {
		if countdown, err = seconds("flaky", "countdown", v[1]); err != nil {
			return nil, err
		}
	}
	req, _ := tasks.RequestFromContext(ctx)
	retries := 0
	if req != nil {
		retries = req.Retries
	}
	if int64(retries) < failures {
		tasks.Logger(ctx).Warn().Msgf("flaky: attempt %d fails", retries)
		return nil, tasks.Retry(tasks.Countdown(countdown), tasks.Exc(tasks.RuntimeError("flaky")))
	}
	return int64(retries), nil
}

func progress(ctx context.Context, args []any, kwargs map[string]any) (any, error) {
	v, err := tasks.BindArgs("progress", []string{"steps", "delay"}, 2, args, kwargs)
	if err != nil {
		return nil, err
	}
	steps, err := intArg("progress", "steps", v[0])
	if err != nil {
		return nil, err
	}
	delay, err := seconds("progress", "delay", v[1])
	if err != nil {
		return nil, err
	}
	for i := int64(1); i <= steps; i++ {
		if err := tasks.UpdateState(ctx, "PROGRESS", map[string]any{"current": i, "total": steps}); err != nil && err != tasks.ErrNoRequest {
			return nil, err
		}
		if err := wait(ctx, delay); err != nil {
			return nil, err
		}
	}
	return steps, nil
}

func xsum(_ context.Context, args []any, kwargs map[string]any) (any, error) {
	v, err := tasks.BindArgs("xsum", []string{"numbers"}, 1, args, kwargs)
	if err != nil {
		return nil, err
	}
	list, ok := v[0].([]any)
	if !ok {
		return nil, tasks.TypeError("'%s' object is not iterable", protocol.PyTypeName(v[0]))
	}
	var s sum
	for _, x := range list {
		if err := s.add(x); err != nil {
			return nil, err
		}
	}
	return s.value(), nil
}

func noop(_ context.Context, args []any, kwargs map[string]any) (any, error) {
	if _, err := tasks.BindArgs("noop", nil, 0, args, kwargs); err != nil {
		return nil, err
	}
	return nil, nil
}

func orNil(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func request(ctx context.Context, args []any, kwargs map[string]any) (any, error) {
	if _, err := tasks.BindArgs("request", nil, 0, args, kwargs); err != nil {
		return nil, err
	}
	req, ok := tasks.RequestFromContext(ctx)
	if !ok {
		return nil, tasks.RuntimeError("request() called outside a worker")
	}
	return map[string]any{
		"id":          req.ID,
		"root_id":     orNil(req.RootID),
		"parent_id":   orNil(req.ParentID),
		"group":       orNil(req.Group),
		"retries":     int64(req.Retries),
		"hostname":    req.Hostname,
		"routing_key": orNil(req.DeliveryInfo.RoutingKey),
	}, nil
}

func limited(_ context.Context, args []any, kwargs map[string]any) (any, error) {
	v, err := tasks.BindArgs("limited", []string{"x"}, 1, args, kwargs)
	if err != nil {
		return nil, err
	}
	return v[0], nil
}

func autoretry(ctx context.Context, args []any, kwargs map[string]any) (any, error) {
	v, err := tasks.BindArgs("autoretry", []string{"failures"}, 1, args, kwargs)
	if err != nil {
		return nil, err
	}
	failures, err := intArg("autoretry", "failures", v[0])
	if err != nil {
		return nil, err
	}
	retries := 0
	if req, ok := tasks.RequestFromContext(ctx); ok {
		retries = req.Retries
	}
	if int64(retries) < failures {
		return nil, tasks.RuntimeError("autoretry")
	}
	return int64(retries), nil
}
