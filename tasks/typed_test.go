package tasks_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"testing"

	"github.com/celeryworker/gocelery/tasks"
)

// The typed path must behave exactly as the reflective one: same results,
// same TypeError texts, for every shape of input.
func TestTypedMatchesReflective(t *testing.T) {
	addInt := func(_ context.Context, x int, y int64) (int64, error) { return int64(x) + y, nil }
	scale := func(_ context.Context, f float64, name string) (string, error) {
		return fmt.Sprintf("%s=%g", name, f), nil
	}
	mixed := func(_ context.Context, xs []int, m map[string]any, flag bool) (int, error) {
		n := len(m)
		for _, x := range xs {
			n += x
		}
		if flag {
			n = -n
		}
		return n, nil
	}
	// The same names in two registries, so the error texts compare.
	refl, typed := tasks.NewRegistry(), tasks.NewRegistry()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(refl.Register("add", addInt, tasks.Params("x", "y")))
	must(tasks.Register2(typed, "add", addInt, tasks.Params("x", "y")))
	must(refl.Register("scale", scale, tasks.Params("f", "name")))
	must(tasks.Register2(typed, "scale", scale, tasks.Params("f", "name")))
	must(refl.Register("mixed", mixed, tasks.Params("xs", "m", "flag")))
	must(tasks.Register3(typed, "mixed", mixed, tasks.Params("xs", "m", "flag")))

	huge, _ := new(big.Int).SetString("100000000000000000000", 10)
	cases := []struct {
		task   string
		args   []any
		kwargs map[string]any
	}{
		{"add", []any{int64(2), int64(3)}, nil},
		{"add", []any{int64(2)}, map[string]any{"y": int64(3)}},
		{"add", nil, map[string]any{"x": json.Number("7"), "y": int64(-1)}},
		{"add", []any{huge, int64(1)}, nil},
		{"add", []any{"2", int64(3)}, nil},
		{"add", []any{1.5, int64(3)}, nil},
		{"add", []any{nil, int64(3)}, nil},
		{"add", []any{int64(1)}, nil},
		{"add", []any{int64(1), int64(2), int64(3)}, nil},
		{"add", []any{int64(1)}, map[string]any{"z": int64(2)}},
		{"add", []any{int64(1), int64(2)}, map[string]any{"x": int64(2)}},
		{"scale", []any{int64(2), "k"}, nil},
		{"scale", []any{2.5, "k"}, nil},
		{"scale", []any{true, "k"}, nil},
		{"scale", []any{2.5, int64(1)}, nil},
		{"mixed", []any{[]any{int64(1), int64(2)}, map[string]any{"a": nil}, true}, nil},
		{"mixed", []any{[]any{int64(1), "x"}, map[string]any{}, false}, nil},
		{"mixed", []any{nil, nil, false}, nil},
		{"mixed", []any{[]any{}, map[string]any{}, int64(1)}, nil},
	}
	ctx := context.Background()
	for _, c := range cases {
		r, _ := refl.Lookup(c.task)
		ty, _ := typed.Lookup(c.task)
		wantV, wantErr := r.Handler.Call(ctx, c.args, c.kwargs)
		gotV, gotErr := ty.Handler.Call(ctx, c.args, c.kwargs)
		if fmt.Sprint(wantV) != fmt.Sprint(gotV) || fmt.Sprint(wantErr) != fmt.Sprint(gotErr) {
			t.Errorf("%s%v%v: typed (%v, %v), reflective (%v, %v)", c.task, c.args, c.kwargs, gotV, gotErr, wantV, wantErr)
		}
	}
}

func TestTypedRegistrationErrors(t *testing.T) {
	reg := tasks.NewRegistry()
	f := func(_ context.Context, x int64) (int64, error) { return x, nil }
	if err := tasks.Register1(reg, "a", f, tasks.Params("x", "y")); err == nil {
		t.Error("two names for one parameter accepted")
	}
	if err := tasks.Register1(reg, "a", f); err != nil {
		t.Fatal(err)
	}
	if err := tasks.Register1(reg, "a", f); err == nil {
		t.Error("duplicate accepted")
	}
	noArgs := func(context.Context) (string, error) { return "ok", nil }
	if err := tasks.Register0(reg, "n", noArgs); err != nil {
		t.Fatal(err)
	}
	n, _ := reg.Lookup("n")
	if _, err := n.Handler.Call(context.Background(), []any{int64(1)}, nil); err == nil {
		t.Error("n() took an argument")
	}
}
