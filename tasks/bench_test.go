package tasks_test

import (
	"context"
	"testing"

	"github.com/celeryworker/gocelery/tasks"
)

// Arguments as the JSON decoder hands them over for args [2, 3].
var benchArgs = []any{int64(2), int64(3)}

func benchAdd(_ context.Context, x, y int) (int, error) { return x + y, nil }

// BenchmarkBindCall is the reflect-bound path: func(ctx, x, y int) (int, error)
// called with decoded positional arguments.
func BenchmarkBindCall(b *testing.B) {
	h, err := tasks.Bind("bench.add", benchAdd, []string{"x", "y"})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		v, err := h.Call(ctx, benchArgs, map[string]any{})
		if err != nil || v == nil {
			b.Fatal(v, err)
		}
	}
}

// BenchmarkBindCallKwargs binds both arguments by name.
func BenchmarkBindCallKwargs(b *testing.B) {
	h, err := tasks.Bind("bench.add", benchAdd, []string{"x", "y"})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	kw := map[string]any{"x": int64(2), "y": int64(3)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.Call(ctx, nil, kw); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBind is the one-time cost at registration.
func BenchmarkBind(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tasks.Bind("bench.add", benchAdd, []string{"x", "y"}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHandlerFunc is the same task written against the raw Handler
// interface: the floor the reflect path is compared with.
func BenchmarkHandlerFunc(b *testing.B) {
	h := tasks.HandlerFunc(func(_ context.Context, args []any, _ map[string]any) (any, error) {
		x, _ := args[0].(int64)
		y, _ := args[1].(int64)
		return x + y, nil
	})
	var hi tasks.Handler = h
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := hi.Call(ctx, benchArgs, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRegistryLookup is the per-message task lookup.
func BenchmarkRegistryLookup(b *testing.B) {
	reg := tasks.NewRegistry()
	for _, n := range []string{"a.one", "a.two", "gocelery.noop", "gocelery.add", "b.three"} {
		if err := reg.Register(n, benchAdd, tasks.Params("x", "y")); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := reg.Lookup("gocelery.add"); !ok {
			b.Fatal("not found")
		}
	}
}

func benchAdd64(_ context.Context, x, y int) (int, error) { return x + y, nil }

// BenchmarkTypedCall is the generic path (Register2) for the same task as
// BenchmarkBindCall.
func BenchmarkTypedCall(b *testing.B) {
	reg := tasks.NewRegistry()
	if err := tasks.Register2(reg, "bench.add", benchAdd64, tasks.Params("x", "y")); err != nil {
		b.Fatal(err)
	}
	t, _ := reg.Lookup("bench.add")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		v, err := t.Handler.Call(ctx, benchArgs, map[string]any{})
		if err != nil || v == nil {
			b.Fatal(v, err)
		}
	}
}

// BenchmarkTypedCallKwargs binds both arguments by name on the typed path.
func BenchmarkTypedCallKwargs(b *testing.B) {
	reg := tasks.NewRegistry()
	if err := tasks.Register2(reg, "bench.add", benchAdd64, tasks.Params("x", "y")); err != nil {
		b.Fatal(err)
	}
	t, _ := reg.Lookup("bench.add")
	ctx := context.Background()
	kw := map[string]any{"x": int64(2), "y": int64(3)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := t.Handler.Call(ctx, nil, kw); err != nil {
			b.Fatal(err)
		}
	}
}
