package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"math/big"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
)

func addFn(_ context.Context, x, y int) (int, error) { return x + y, nil }

// mustLookup registers fn under name in a fresh registry and returns its handler.
func mustHandler(t *testing.T, name string, fn any, opts ...tasks.Option) tasks.Handler {
	t.Helper()
	reg := tasks.NewRegistry()
	if err := reg.Register(name, fn, opts...); err != nil {
		t.Fatalf("Register(%q): %v", name, err)
	}
	task, ok := reg.Lookup(name)
	if !ok {
		t.Fatalf("Lookup(%q) after Register: not found", name)
	}
	return task.Handler
}

// wantTypeError checks err is a builtins TypeError whose message contains
// every fragment.
func wantTypeError(t *testing.T, err error, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got nil error, want TypeError containing %q", fragments)
	}
	var pe *tasks.PyError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is not a *tasks.PyError", err, err)
	}
	if pe.Type != "TypeError" || pe.Module != "builtins" {
		t.Fatalf("got %s.%s, want builtins.TypeError (%v)", pe.Module, pe.Type, err)
	}
	if len(pe.Args) != 1 {
		t.Fatalf("TypeError args = %#v, want one message", pe.Args)
	}
	msg, ok := pe.Args[0].(string)
	if !ok {
		t.Fatalf("TypeError message %#v is not a string", pe.Args[0])
	}
	for _, f := range fragments {
		if !strings.Contains(msg, f) {
			t.Errorf("TypeError message %q does not contain %q", msg, f)
		}
	}
}

func TestBindAddCalls(t *testing.T) {
	h := mustHandler(t, "add", addFn, tasks.Params("x", "y"))
	ctx := context.Background()
	tests := []struct {
		name    string
		args    []any
		kwargs  map[string]any
		want    int
		wantErr []string // TypeError message fragments; nil means success
	}{
		{name: "positional", args: []any{json.Number("2"), json.Number("3")}, want: 5},
		{name: "positional int64", args: []any{int64(-2), int64(7)}, want: 5},
		{name: "keyword", kwargs: map[string]any{"x": json.Number("4"), "y": json.Number("6")}, want: 10},
		{name: "keyword reversed", kwargs: map[string]any{"y": json.Number("1"), "x": json.Number("10")}, want: 11},
		{name: "mixed", args: []any{json.Number("1")}, kwargs: map[string]any{"y": json.Number("2")}, want: 3},
		{name: "missing y", args: []any{json.Number("1")},
			wantErr: []string{"add() missing 1 required positional argument: 'y'"}},
		{name: "missing both", args: nil,
			wantErr: []string{"add() missing 2 required positional arguments: 'x' and 'y'"}},
		{name: "missing x with kw y", kwargs: map[string]any{"y": json.Number("2")},
			wantErr: []string{"missing 1 required positional argument: 'x'"}},
		{name: "too many", args: []any{json.Number("1"), json.Number("2"), json.Number("3")},
			wantErr: []string{"add() takes 2 positional arguments but 3 were given"}},
		{name: "unexpected kw", args: []any{json.Number("1"), json.Number("2")}, kwargs: map[string]any{"z": json.Number("3")},
			wantErr: []string{"add() got an unexpected keyword argument 'z'"}},
		{name: "multiple values", args: []any{json.Number("1")}, kwargs: map[string]any{"x": json.Number("2")},
			wantErr: []string{"add() got multiple values for argument 'x'"}},
		{name: "string for int", args: []any{"1", json.Number("2")}, wantErr: []string{"'x'", "str"}},
		{name: "bool for int", args: []any{json.Number("1"), true}, wantErr: []string{"'y'", "bool"}},
		{name: "float for int", args: []any{json.Number("1.5"), json.Number("2")}, wantErr: []string{"'x'", "float"}},
		{name: "float64 for int", args: []any{1.5, json.Number("2")}, wantErr: []string{"'x'", "float"}},
		{name: "float 1e3 for int", args: []any{json.Number("1e3"), json.Number("2")}, wantErr: []string{"'x'"}},
		{name: "null for int", args: []any{nil, json.Number("2")}, wantErr: []string{"'x'", "None"}},
		{name: "list for int", args: []any{[]any{}, json.Number("2")}, wantErr: []string{"'x'", "list"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := h.Call(ctx, tc.args, tc.kwargs)
			if tc.wantErr != nil {
				wantTypeError(t, err, tc.wantErr...)
				if got != nil {
					t.Errorf("value with error = %#v, want nil", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Call: %v", err)
			}
			if got != tc.want {
				t.Fatalf("Call = %#v (%T), want int %d", got, got, tc.want)
			}
		})
	}
}

func TestBindArgsMessages(t *testing.T) {
	tests := []struct {
		name     string
		params   []string
		required int
		args     []any
		kwargs   map[string]any
		want     []any
		wantErr  string
	}{
		{name: "one param, two given", params: []string{"x"}, required: 1, args: []any{1, 2},
			wantErr: "f() takes 1 positional argument but 2 were given"},
		{name: "no params, one given", params: nil, required: 0, args: []any{1},
			wantErr: "f() takes 0 positional arguments but 1 was given"},
		{name: "three missing", params: []string{"a", "b", "c"}, required: 3,
			wantErr: "f() missing 3 required positional arguments: 'a', 'b', and 'c'"},
		{name: "optional missing is nil", params: []string{"a", "b"}, required: 1, args: []any{1},
			want: []any{1, nil}},
		{name: "optional by keyword", params: []string{"a", "b"}, required: 1, args: []any{1}, kwargs: map[string]any{"b": "x"},
			want: []any{1, "x"}},
		{name: "no params nothing given", params: nil, required: 0, want: []any{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tasks.BindArgs("f", tc.params, tc.required, tc.args, tc.kwargs)
			if tc.wantErr != "" {
				wantTypeError(t, err, tc.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("BindArgs: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("BindArgs = %#v, want %#v", got, tc.want)
			}
		})
	}
}

func TestBindIntOverflow(t *testing.T) {
	h := mustHandler(t, "small", func(x int8) int8 { return x }, tasks.Params("x"))
	for _, tc := range []struct {
		in      any
		want    int8
		wantErr bool
	}{
		{in: json.Number("127"), want: 127},
		{in: json.Number("-128"), want: -128},
		{in: json.Number("128"), wantErr: true},
		{in: json.Number("-129"), wantErr: true},
		{in: int64(300), wantErr: true},
		{in: json.Number("1180591620717411303424"), wantErr: true},
	} {
		got, err := h.Call(context.Background(), []any{tc.in}, nil)
		if tc.wantErr {
			wantTypeError(t, err, "overflows int8")
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("small(%v) = %#v, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

type point struct {
	X    int    `json:"x"`
	Y    int    `json:"y"`
	Name string `json:"name"`
}

func TestConvert(t *testing.T) {
	big70, _ := new(big.Int).SetString("1180591620717411303424", 10) // 2**70
	when := time.Date(2026, 11, 23, 21, 40, 9, 631096000, time.UTC)
	seven := 7
	tests := []struct {
		name    string
		in      any
		typ     reflect.Type
		want    any
		wantErr string
	}{
		{name: "json.Number 2**53+1 into int64 exact", in: json.Number("9007199254740993"), typ: reflect.TypeFor[int64](),
			want: int64(9007199254740993)},
		{name: "json.Number max int64", in: json.Number("9223372036854775807"), typ: reflect.TypeFor[int64](),
			want: int64(9223372036854775807)},
		{name: "json.Number max int64+1 overflows", in: json.Number("9223372036854775808"), typ: reflect.TypeFor[int64](),
			wantErr: "overflows"},
		{name: "uint64 max into uint64", in: uint64(18446744073709551615), typ: reflect.TypeFor[uint64](),
			want: uint64(18446744073709551615)},
		{name: "negative into uint", in: int64(-1), typ: reflect.TypeFor[uint](), wantErr: "overflows"},
		{name: "2**70 into *big.Int", in: json.Number("1180591620717411303424"), typ: reflect.TypeFor[*big.Int](),
			want: big70},
		{name: "float into *big.Int", in: 1.5, typ: reflect.TypeFor[*big.Int](), wantErr: "expected int, got float"},
		{name: "int into float64", in: json.Number("3"), typ: reflect.TypeFor[float64](), want: 3.0},
		{name: "json float into float64", in: json.Number("0.25"), typ: reflect.TypeFor[float64](), want: 0.25},
		{name: "bool into float64", in: true, typ: reflect.TypeFor[float64](), wantErr: "expected float, got bool"},
		{name: "string into string", in: "héllo", typ: reflect.TypeFor[string](), want: "héllo"},
		{name: "int into string", in: json.Number("1"), typ: reflect.TypeFor[string](), wantErr: "expected str, got int"},
		{name: "bool into bool", in: false, typ: reflect.TypeFor[bool](), want: false},
		{name: "int into bool", in: int64(1), typ: reflect.TypeFor[bool](), wantErr: "expected bool, got int"},
		{name: "[]int from []any", in: []any{json.Number("1"), int64(2), json.Number("3")}, typ: reflect.TypeFor[[]int](),
			want: []int{1, 2, 3}},
		{name: "[]int with a string item", in: []any{json.Number("1"), "2"}, typ: reflect.TypeFor[[]int](),
			wantErr: "item 1"},
		{name: "[]int from dict", in: map[string]any{}, typ: reflect.TypeFor[[]int](), wantErr: "expected list, got dict"},
		{name: "[]any unchanged", in: []any{"a", nil, true}, typ: reflect.TypeFor[[]any](), want: []any{"a", nil, true}},
		{name: "map[string]string", in: map[string]any{"a": "1", "b": "2"}, typ: reflect.TypeFor[map[string]string](),
			want: map[string]string{"a": "1", "b": "2"}},
		{name: "map[string]string bad value", in: map[string]any{"a": json.Number("1")}, typ: reflect.TypeFor[map[string]string](),
			wantErr: `key "a"`},
		{name: "map from list", in: []any{}, typ: reflect.TypeFor[map[string]string](), wantErr: "expected dict, got list"},
		{name: "struct from map", in: map[string]any{"x": json.Number("1"), "y": json.Number("-2"), "name": "p"},
			typ: reflect.TypeFor[point](), want: point{X: 1, Y: -2, Name: "p"}},
		{name: "struct from string", in: "p", typ: reflect.TypeFor[point](), wantErr: "expected dict, got str"},
		{name: "*point from map", in: map[string]any{"x": json.Number("3")}, typ: reflect.TypeFor[*point](),
			want: &point{X: 3}},
		{name: "*int nil", in: nil, typ: reflect.TypeFor[*int](), want: (*int)(nil)},
		{name: "*int value", in: json.Number("7"), typ: reflect.TypeFor[*int](), want: &seven},
		{name: "[]int nil", in: nil, typ: reflect.TypeFor[[]int](), want: []int(nil)},
		{name: "int nil", in: nil, typ: reflect.TypeFor[int](), wantErr: "got None"},
		{name: "any nil", in: nil, typ: reflect.TypeFor[any](), want: nil},
		{name: "any keeps json.Number", in: json.Number("1.0"), typ: reflect.TypeFor[any](), want: json.Number("1.0")},
		{name: "time.Time from DateTime", in: protocol.DateTime{Time: when}, typ: reflect.TypeFor[time.Time](), want: when},
		{name: "time.Time from ISO string", in: "2026-11-23T21:40:09.631096+00:00", typ: reflect.TypeFor[time.Time](), want: when},
		{name: "time.Time from int", in: json.Number("1"), typ: reflect.TypeFor[time.Time](), wantErr: "expected datetime"},
		{name: "duration from seconds", in: json.Number("1.5"), typ: reflect.TypeFor[time.Duration](), want: 1500 * time.Millisecond},
		{name: "[]byte from string", in: "ab", typ: reflect.TypeFor[[]byte](), want: []byte("ab")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rv, err := tasks.Convert(tc.in, tc.typ)
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("Convert(%#v, %s) = %#v, want error containing %q", tc.in, tc.typ, rv, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Convert error %q does not contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Convert(%#v, %s): %v", tc.in, tc.typ, err)
			}
			if tc.typ.Kind() == reflect.Interface {
				if !rv.Type().AssignableTo(tc.typ) {
					t.Fatalf("Convert returned a %s, not assignable to %s", rv.Type(), tc.typ)
				}
			} else if rv.Type() != tc.typ {
				t.Fatalf("Convert returned a %s, want %s", rv.Type(), tc.typ)
			}
			got := rv.Interface()
			switch want := tc.want.(type) {
			case *big.Int:
				if b, ok := got.(*big.Int); !ok || b.Cmp(want) != 0 {
					t.Fatalf("Convert = %v, want %v", got, want)
				}
			case time.Time:
				if g, ok := got.(time.Time); !ok || !g.Equal(want) {
					t.Fatalf("Convert = %v, want %v", got, want)
				}
			default:
				if !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("Convert = %#v, want %#v", got, tc.want)
				}
			}
		})
	}
}

func TestBindShapes(t *testing.T) {
	sentinel := errors.New("boom")
	var gotArgs []any
	var ranNothing bool
	var gotPtr *int
	tests := []struct {
		name    string
		fn      any
		opts    []tasks.Option
		args    []any
		kwargs  map[string]any
		want    any
		wantErr error
		check   func(t *testing.T)
	}{
		{name: "variadic any", fn: func(args ...any) int { gotArgs = args; return len(args) },
			args: []any{"a", json.Number("1"), nil}, want: 3,
			check: func(t *testing.T) {
				if !reflect.DeepEqual(gotArgs, []any{"a", json.Number("1"), nil}) {
					t.Errorf("variadic got %#v", gotArgs)
				}
			}},
		{name: "variadic none", fn: func(args ...any) int { return len(args) }, want: 0},
		{name: "variadic typed with fixed", fn: func(ctx context.Context, sep string, xs ...int) (string, error) {
			parts := make([]string, len(xs))
			for i, x := range xs {
				parts[i] = strings.Repeat("*", x)
			}
			return strings.Join(parts, sep), nil
		}, opts: []tasks.Option{tasks.Params("sep")}, args: []any{"-", json.Number("1"), json.Number("2")}, want: "*-**"},
		{name: "only error, nil", fn: func(ctx context.Context) error { return nil }, want: nil},
		{name: "only error, failing", fn: func(ctx context.Context) error { return sentinel }, wantErr: sentinel},
		{name: "value and error failing", fn: func(x int) (int, error) { return x, sentinel },
			args: []any{json.Number("1")}, wantErr: sentinel},
		{name: "only value", fn: func() string { return "v" }, want: "v"},
		{name: "nothing", fn: func() { ranNothing = true }, want: nil,
			check: func(t *testing.T) {
				if !ranNothing {
					t.Error("function returning nothing was not called")
				}
			}},
		{name: "*int nil argument", fn: func(p *int) bool { gotPtr = p; return p == nil }, args: []any{nil}, want: true,
			check: func(t *testing.T) {
				if gotPtr != nil {
					t.Errorf("got pointer %v, want nil", gotPtr)
				}
			}},
		{name: "default names positional only", fn: func(a, b string) string { return a + b }, args: []any{"x", "y"}, want: "xy"},
		{name: "time.Time from DateTime", fn: func(t time.Time) int { return t.Year() },
			args: []any{protocol.DateTime{Time: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}}, want: 2030},
		{name: "struct and map", fn: func(p point, m map[string]string) string { return p.Name + m["k"] },
			opts:   []tasks.Option{tasks.Params("p", "m")},
			kwargs: map[string]any{"p": map[string]any{"name": "n"}, "m": map[string]any{"k": "v"}}, want: "nv"},
		{name: "big int exact", fn: func(b *big.Int) string { return b.String() },
			args: []any{json.Number("1180591620717411303424")}, want: "1180591620717411303424"},
		{name: "context is passed", fn: func(ctx context.Context) (string, error) {
			v, _ := ctx.Value(ctxKey{}).(string)
			return v, nil
		}, want: "ctx-value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := mustHandler(t, "shape", tc.fn, tc.opts...)
			ctx := context.WithValue(context.Background(), ctxKey{}, "ctx-value")
			got, err := h.Call(ctx, tc.args, tc.kwargs)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Call error = %v, want %v", err, tc.wantErr)
				}
				if got != nil {
					t.Errorf("value with error = %#v, want nil", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Call: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Call = %#v (%T), want %#v (%T)", got, got, tc.want, tc.want)
			}
			if tc.check != nil {
				tc.check(t)
			}
		})
	}
}

type ctxKey struct{}

func TestBindVariadicTypeError(t *testing.T) {
	h := mustHandler(t, "ints", func(xs ...int) int { return len(xs) })
	_, err := h.Call(context.Background(), []any{json.Number("1"), "two"}, nil)
	wantTypeError(t, err, "ints()", "argument 2", "str")
	_, err = h.Call(context.Background(), nil, map[string]any{"xs": []any{}})
	wantTypeError(t, err, "unexpected keyword argument 'xs'")
}

func TestBindRejects(t *testing.T) {
	tests := []struct {
		name string
		fn   any
		opts []tasks.Option
		want string
	}{
		{name: "not a function", fn: 42, want: "want a function"},
		{name: "nil func", fn: (func())(nil), want: "want a function"},
		{name: "too many param names", fn: addFn, opts: []tasks.Option{tasks.Params("x", "y", "z")}, want: "3 parameter names for 2 parameters"},
		{name: "too few param names", fn: addFn, opts: []tasks.Option{tasks.Params("x")}, want: "1 parameter names for 2 parameters"},
		{name: "second result not error", fn: func() (int, int) { return 0, 0 }, want: "second result must be error"},
		{name: "three results", fn: func() (int, int, error) { return 0, 0, nil }, want: "at most"},
		{name: "invalid rate limit", fn: addFn, opts: []tasks.Option{tasks.Params("x", "y"), tasks.RateLimit("abc")}, want: "rate limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := tasks.NewRegistry()
			err := reg.Register("bad", tc.fn, tc.opts...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Register error = %v, want one containing %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), `"bad"`) {
				t.Errorf("Register error %q does not name the task", err)
			}
			if _, ok := reg.Lookup("bad"); ok {
				t.Fatal("a rejected task was registered")
			}
			if n := reg.Names(); len(n) != 0 {
				t.Fatalf("Names after rejection = %v, want none", n)
			}
		})
	}
}

func TestRegistry(t *testing.T) {
	reg := tasks.NewRegistry()
	hf := tasks.HandlerFunc(func(ctx context.Context, args []any, kwargs map[string]any) (any, error) {
		return len(args) + len(kwargs), nil
	})
	if err := reg.RegisterHandler("b.handler", hf, tasks.RateLimit("10/m"), tasks.MaxRetries(5)); err != nil {
		t.Fatalf("RegisterHandler: %v", err)
	}
	if err := reg.Register("c.add", addFn, tasks.Params("x", "y"), tasks.AcksLate()); err != nil {
		t.Fatalf("Register: %v", err)
	}
	// A plain function of the HandlerFunc shape is used as is, not bound.
	if err := reg.Register("a.raw", func(ctx context.Context, args []any, kwargs map[string]any) (any, error) {
		return args, nil
	}); err != nil {
		t.Fatalf("Register raw: %v", err)
	}

	if got, want := reg.Names(), []string{"a.raw", "b.handler", "c.add"}; !slices.Equal(got, want) {
		t.Fatalf("Names = %v, want %v", got, want)
	}

	for _, tc := range []struct {
		name     string
		register func() error
	}{
		{"Register", func() error { return reg.Register("c.add", addFn, tasks.Params("x", "y")) }},
		{"RegisterHandler", func() error { return reg.RegisterHandler("b.handler", hf) }},
	} {
		err := tc.register()
		if !errors.Is(err, tasks.ErrDuplicate) {
			t.Errorf("%s duplicate: error %v, want ErrDuplicate", tc.name, err)
		}
	}

	task, ok := reg.Lookup("b.handler")
	if !ok {
		t.Fatal("Lookup(b.handler) not found")
	}
	if task.Name != "b.handler" || task.Options.RateLimit != "10/m" || task.Options.MaxRetries != 5 {
		t.Errorf("b.handler task = %+v", task)
	}
	if task.Options.DefaultRetryDelay != 180*time.Second {
		t.Errorf("default retry delay = %v, want 180s", task.Options.DefaultRetryDelay)
	}
	got, err := task.Handler.Call(context.Background(), []any{1, 2}, map[string]any{"k": 1})
	if err != nil || got != 3 {
		t.Errorf("handler Call = %v, %v; want 3", got, err)
	}

	add, ok := reg.Lookup("c.add")
	if !ok {
		t.Fatal("Lookup(c.add) not found")
	}
	if !add.Options.AcksLate || add.Options.MaxRetries != 3 || !slices.Equal(add.Options.Params, []string{"x", "y"}) {
		t.Errorf("c.add options = %+v", add.Options)
	}
	if v, err := add.Handler.Call(context.Background(), nil, map[string]any{"x": json.Number("1"), "y": json.Number("2")}); err != nil || v != 3 {
		t.Errorf("c.add(x=1, y=2) = %v, %v", v, err)
	}

	raw, _ := reg.Lookup("a.raw")
	if v, err := raw.Handler.Call(context.Background(), []any{"a", "b"}, nil); err != nil || !reflect.DeepEqual(v, []any{"a", "b"}) {
		t.Errorf("a.raw = %#v, %v", v, err)
	}

	if _, ok := reg.Lookup("missing"); ok {
		t.Error("Lookup(missing) found a task")
	}

	for _, rl := range []string{"abc", "5/x", "-1/s"} {
		if err := reg.RegisterHandler("rl."+rl, hf, tasks.RateLimit(rl)); err == nil {
			t.Errorf("RegisterHandler with rate limit %q: no error", rl)
		}
	}
	if err := reg.RegisterHandler("", hf); err == nil {
		t.Error("RegisterHandler with empty name: no error")
	}
	if err := reg.RegisterHandler("nil", nil); err == nil {
		t.Error("RegisterHandler with nil handler: no error")
	}
	if got := len(reg.Names()); got != 3 {
		t.Errorf("%d tasks after rejected registrations, want 3", got)
	}
}

func TestRegistryConcurrent(t *testing.T) {
	reg := tasks.NewRegistry()
	hf := tasks.HandlerFunc(func(context.Context, []any, map[string]any) (any, error) { return nil, nil })
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		go func() {
			err := reg.RegisterHandler("same", hf)
			reg.Names()
			reg.Lookup("same")
			errs <- err
		}()
	}
	var ok, dup int
	for i := 0; i < 16; i++ {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, tasks.ErrDuplicate):
			dup++
		default:
			t.Errorf("unexpected error %v", err)
		}
	}
	if ok != 1 || dup != 15 {
		t.Fatalf("%d registrations succeeded and %d were duplicates, want 1 and 15", ok, dup)
	}
}

func TestPyTypeNames(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want string
	}{
		{nil, "NoneType"}, {true, "bool"}, {"s", "str"}, {json.Number("1"), "int"}, {json.Number("1.0"), "float"},
		{json.Number("1e5"), "float"}, {int64(1), "int"}, {1.0, "float"}, {[]any{}, "list"}, {map[string]any{}, "dict"},
		{new(big.Int), "int"}, {[]byte("x"), "bytes"},
	} {
		if got := protocol.PyTypeName(tc.v); got != tc.want {
			t.Errorf("PyType(%#v) = %q, want %q", tc.v, got, tc.want)
		}
	}
}
