package conformance_test

import (
	"context"
	"encoding/json"
	"errors"
	"math/big"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/tasks"
	"github.com/celeryworker/gocelery/tasks/conformance"
)

var allNames = []string{
	"gocelery.add", "gocelery.echo", "gocelery.fail", "gocelery.flaky", "gocelery.limited",
	"gocelery.noop", "gocelery.progress", "gocelery.request", "gocelery.sleep", "gocelery.xsum",
}

func newRegistry(t *testing.T) *tasks.Registry {
	t.Helper()
	reg := tasks.NewRegistry()
	if err := conformance.Register(reg); err != nil {
		t.Fatalf("Register: %v", err)
	}
	return reg
}

func lookup(t *testing.T, reg *tasks.Registry, name string) *tasks.Task {
	t.Helper()
	task, ok := reg.Lookup(name)
	if !ok {
		t.Fatalf("task %s not registered", name)
	}
	return task
}

// call runs a conformance task with a request in its context.
func call(t *testing.T, name string, req *tasks.Request, args []any, kwargs map[string]any) (any, error) {
	t.Helper()
	reg := newRegistry(t)
	if req == nil {
		req = &tasks.Request{ID: "00000000-0000-0000-0000-000000000001", Name: name}
	}
	ctx := tasks.WithRequest(context.Background(), req)
	return lookup(t, reg, name).Handler.Call(ctx, args, kwargs)
}

func bigInt(t *testing.T, s string) *big.Int {
	t.Helper()
	b, ok := new(big.Int).SetString(s, 10)
	if !ok {
		t.Fatalf("bad big int %q", s)
	}
	return b
}

func wantPyError(t *testing.T, err error, typ string, msgFragment string) *tasks.PyError {
	t.Helper()
	pe, ok := tasks.AsPyError(err)
	if !ok {
		t.Fatalf("error %v (%T) is not a *tasks.PyError, want %s", err, err, typ)
	}
	if pe.Type != typ || pe.Module != "builtins" {
		t.Fatalf("got %s.%s (%v), want builtins.%s", pe.Module, pe.Type, pe, typ)
	}
	if msgFragment != "" {
		if len(pe.Args) == 0 {
			t.Fatalf("%s has no message, want one containing %q", typ, msgFragment)
		}
		if msg, _ := pe.Args[0].(string); !strings.Contains(msg, msgFragment) {
			t.Fatalf("%s message %#v does not contain %q", typ, pe.Args[0], msgFragment)
		}
	}
	return pe
}

// sameNumber compares results: *big.Int by value, int64 and float64 exactly
// and by type (an int result must not come back as a float, nor the reverse).
func sameNumber(got, want any) bool {
	if wb, ok := want.(*big.Int); ok {
		gb, ok := got.(*big.Int)
		return ok && gb.Cmp(wb) == 0
	}
	return reflect.TypeOf(got) == reflect.TypeOf(want) && got == want
}

func TestRegisterNames(t *testing.T) {
	reg := newRegistry(t)
	// The contract's tasks must all be there; more may be added.
	got := reg.Names()
	for _, name := range allNames {
		if !slices.Contains(got, name) {
			t.Errorf("contract task %s not registered (have %v)", name, got)
		}
	}
	// Registering twice into the same registry is a duplicate.
	if err := conformance.Register(reg); !errors.Is(err, tasks.ErrDuplicate) {
		t.Fatalf("second Register = %v, want ErrDuplicate", err)
	}
	if got := lookup(t, reg, "gocelery.limited").Options.RateLimit; got != "5/s" {
		t.Errorf("limited rate limit = %q, want 5/s", got)
	}
	if got := lookup(t, reg, "gocelery.flaky").Options.MaxRetries; got != 3 {
		t.Errorf("flaky max retries = %d, want 3", got)
	}
	if rl, err := tasks.ParseRateLimit(lookup(t, reg, "gocelery.limited").Options.RateLimit); err != nil || rl != 5 {
		t.Errorf("limited rate = %v, %v; want 5 per second", rl, err)
	}
}

func TestAdd(t *testing.T) {
	two64 := bigInt(t, "18446744073709551616")
	tests := []struct {
		name    string
		args    []any
		kwargs  map[string]any
		want    any
		wantErr string // TypeError message fragment, "" for success
	}{
		{name: "ints", args: []any{json.Number("2"), json.Number("3")}, want: int64(5)},
		{name: "negative", args: []any{json.Number("-2"), json.Number("-3")}, want: int64(-5)},
		{name: "2**53+1 + 2 exact", args: []any{json.Number("9007199254740993"), json.Number("2")}, want: int64(9007199254740995)},
		{name: "msgpack ints", args: []any{int64(9007199254740993), uint64(2)}, want: int64(9007199254740995)},
		{name: "2**64 + 2**64 big", args: []any{json.Number("18446744073709551616"), two64},
			want: bigInt(t, "36893488147419103232")},
		{name: "max int64 + 1 big", args: []any{int64(9223372036854775807), int64(1)},
			want: bigInt(t, "9223372036854775808")},
		{name: "big back to int64", args: []any{json.Number("18446744073709551616"), json.Number("-18446744073709551615")},
			want: int64(1)},
		{name: "int + float", args: []any{json.Number("1"), json.Number("2.5")}, want: 3.5},
		{name: "float + int", args: []any{2.5, int64(1)}, want: 3.5},
		{name: "float + float", args: []any{json.Number("0.5"), json.Number("0.25")}, want: 0.75},
		{name: "1.0 stays float", args: []any{json.Number("1.0"), json.Number("1")}, want: 2.0},
		{name: "exponent is float", args: []any{json.Number("1e3"), json.Number("1")}, want: 1001.0},
		{name: "kwargs", kwargs: map[string]any{"x": json.Number("4"), "y": json.Number("5")}, want: int64(9)},
		{name: "mixed", args: []any{json.Number("4")}, kwargs: map[string]any{"y": json.Number("6")}, want: int64(10)},
		{name: "string", args: []any{"a", json.Number("1")}, wantErr: "str"},
		{name: "string second", args: []any{json.Number("1"), "b"}, wantErr: "str"},
		{name: "bool", args: []any{true, json.Number("1")}, wantErr: "bool"},
		{name: "bool second", args: []any{json.Number("1"), false}, wantErr: "bool"},
		{name: "null", args: []any{nil, json.Number("1")}, wantErr: "NoneType"},
		{name: "list", args: []any{[]any{}, json.Number("1")}, wantErr: "list"},
		{name: "one arg", args: []any{json.Number("1")}, wantErr: "missing 1 required positional argument: 'y'"},
		{name: "no args", wantErr: "missing 2 required positional arguments: 'x' and 'y'"},
		{name: "three args", args: []any{json.Number("1"), json.Number("2"), json.Number("3")},
			wantErr: "takes 2 positional arguments but 3 were given"},
		{name: "unknown kwarg", args: []any{json.Number("1"), json.Number("2")}, kwargs: map[string]any{"z": json.Number("1")},
			wantErr: "unexpected keyword argument 'z'"},
		{name: "duplicate", args: []any{json.Number("1"), json.Number("2")}, kwargs: map[string]any{"x": json.Number("1")},
			wantErr: "multiple values for argument 'x'"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := call(t, "gocelery.add", nil, tc.args, tc.kwargs)
			if tc.wantErr != "" {
				wantPyError(t, err, "TypeError", tc.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("add: %v", err)
			}
			if !sameNumber(got, tc.want) {
				t.Fatalf("add = %#v (%T), want %#v (%T)", got, got, tc.want, tc.want)
			}
		})
	}
}

func TestEcho(t *testing.T) {
	big70 := bigInt(t, "1180591620717411303424")
	tests := []struct {
		name   string
		args   []any
		kwargs map[string]any
		want   map[string]any
	}{
		{name: "nil", want: map[string]any{"args": []any{}, "kwargs": map[string]any{}}},
		{name: "empty", args: []any{}, kwargs: map[string]any{}, want: map[string]any{"args": []any{}, "kwargs": map[string]any{}}},
		{name: "values",
			args:   []any{"héllo ✓", nil, true, false, json.Number("9007199254740993"), big70, []any{[]any{json.Number("1.5")}}},
			kwargs: map[string]any{"k": map[string]any{"n": nil, "l": []any{}}, "ü": "v"},
			want: map[string]any{
				"args":   []any{"héllo ✓", nil, true, false, json.Number("9007199254740993"), big70, []any{[]any{json.Number("1.5")}}},
				"kwargs": map[string]any{"k": map[string]any{"n": nil, "l": []any{}}, "ü": "v"},
			}},
		{name: "kwargs only", kwargs: map[string]any{"a": json.Number("1")},
			want: map[string]any{"args": []any{}, "kwargs": map[string]any{"a": json.Number("1")}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := call(t, "gocelery.echo", nil, tc.args, tc.kwargs)
			if err != nil {
				t.Fatalf("echo: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("echo = %#v, want %#v", got, tc.want)
			}
		})
	}
}

func TestSleep(t *testing.T) {
	t.Run("zero returns seconds", func(t *testing.T) {
		for _, secs := range []any{json.Number("0"), json.Number("0.0"), int64(0), 0.0} {
			got, err := call(t, "gocelery.sleep", nil, []any{secs}, nil)
			if err != nil || !reflect.DeepEqual(got, secs) {
				t.Errorf("sleep(%#v) = %#v, %v; want the argument back", secs, got, err)
			}
		}
	})
	t.Run("short sleep", func(t *testing.T) {
		got, err := call(t, "gocelery.sleep", nil, nil, map[string]any{"seconds": json.Number("0.001")})
		if err != nil || got != json.Number("0.001") {
			t.Errorf("sleep(seconds=0.001) = %#v, %v", got, err)
		}
	})
	for _, tc := range []struct {
		name    string
		args    []any
		wantErr string
	}{
		{"string", []any{"1"}, "str"},
		{"bool", []any{true}, "bool"},
		{"null", []any{nil}, "NoneType"},
		{"no args", nil, "missing 1 required positional argument: 'seconds'"},
	} {
		t.Run("TypeError "+tc.name, func(t *testing.T) {
			_, err := call(t, "gocelery.sleep", nil, tc.args, nil)
			wantPyError(t, err, "TypeError", tc.wantErr)
		})
	}

	causes := []error{tasks.ErrSoftTimeLimitExceeded, tasks.ErrTimeLimitExceeded, tasks.ErrTerminated}
	for _, cause := range causes {
		t.Run("already cancelled "+cause.Error(), func(t *testing.T) {
			reg := newRegistry(t)
			ctx, cancel := context.WithCancelCause(tasks.WithRequest(context.Background(), &tasks.Request{ID: "x"}))
			cancel(cause)
			got, err := callWithin(t, lookup(t, reg, "gocelery.sleep").Handler, ctx, []any{json.Number("3600")})
			if !errors.Is(err, cause) || got != nil {
				t.Fatalf("sleep = %#v, %v; want %v", got, err, cause)
			}
		})
	}
	t.Run("cancelled while sleeping", func(t *testing.T) {
		reg := newRegistry(t)
		ctx, cancel := context.WithCancelCause(tasks.WithRequest(context.Background(), &tasks.Request{ID: "x"}))
		defer cancel(nil)
		go cancel(tasks.ErrSoftTimeLimitExceeded)
		got, err := callWithin(t, lookup(t, reg, "gocelery.sleep").Handler, ctx, []any{json.Number("3600")})
		if !errors.Is(err, tasks.ErrSoftTimeLimitExceeded) || got != nil {
			t.Fatalf("sleep = %#v, %v; want SoftTimeLimitExceeded", got, err)
		}
	})
}

// callWithin calls h and fails the test if it has not returned within 10s
// (a task that ignores cancellation would otherwise hang the test).
func callWithin(t *testing.T, h tasks.Handler, ctx context.Context, args []any) (any, error) {
	t.Helper()
	type result struct {
		v   any
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := h.Call(ctx, args, nil)
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-time.After(10 * time.Second):
		t.Fatal("task did not return within 10s of its context being cancelled")
		return nil, nil
	}
}

func TestFail(t *testing.T) {
	tests := []struct {
		excType  string
		message  any
		wantType string
	}{
		{"ValueError", "bad value", "ValueError"},
		{"KeyError", "k", "KeyError"},
		{"TypeError", "t", "TypeError"},
		{"RuntimeError", "r", "RuntimeError"},
		{"ZeroDivisionError", "division by zero", "ZeroDivisionError"},
		{"IndexError", "list index out of range", "IndexError"},
		{"LookupError", "l", "LookupError"},
		{"Bogus", "unknown type", "RuntimeError"},
		{"", "empty type", "RuntimeError"},
		{"os.system", "not a builtin", "RuntimeError"},
		{"SystemExit", "must not exit", "RuntimeError"},
		{"ValueError", "héllo ✓", "ValueError"},
	}
	for _, tc := range tests {
		t.Run(tc.excType+"/"+tc.wantType, func(t *testing.T) {
			got, err := call(t, "gocelery.fail", nil, []any{tc.excType, tc.message}, nil)
			if got != nil {
				t.Errorf("fail returned a value %#v", got)
			}
			pe := wantPyError(t, err, tc.wantType, "")
			if !reflect.DeepEqual(pe.Args, []any{tc.message}) {
				t.Fatalf("Args = %#v, want [%#v]", pe.Args, tc.message)
			}
		})
	}
	t.Run("kwargs", func(t *testing.T) {
		_, err := call(t, "gocelery.fail", nil, nil, map[string]any{"exc_type": "KeyError", "message": "m"})
		pe := wantPyError(t, err, "KeyError", "m")
		if len(pe.Args) != 1 {
			t.Fatalf("Args = %#v", pe.Args)
		}
	})
	t.Run("missing message", func(t *testing.T) {
		_, err := call(t, "gocelery.fail", nil, []any{"ValueError"}, nil)
		wantPyError(t, err, "TypeError", "missing 1 required positional argument: 'message'")
	})
}

func TestFlaky(t *testing.T) {
	tests := []struct {
		name          string
		retries       int
		args          []any
		kwargs        map[string]any
		wantRetry     bool
		wantCountdown time.Duration
		want          int64
	}{
		{name: "first try retries", retries: 0, args: []any{json.Number("2")}, wantRetry: true, wantCountdown: 0},
		{name: "second try retries with countdown", retries: 1, args: []any{json.Number("2"), json.Number("1")},
			wantRetry: true, wantCountdown: time.Second},
		{name: "float countdown", retries: 0, args: []any{json.Number("1")}, kwargs: map[string]any{"countdown": json.Number("0.5")},
			wantRetry: true, wantCountdown: 500 * time.Millisecond},
		{name: "enough retries", retries: 2, args: []any{json.Number("2"), json.Number("1")}, want: 2},
		{name: "more retries than failures", retries: 5, args: []any{json.Number("2")}, want: 5},
		{name: "no failures", retries: 0, args: []any{json.Number("0")}, want: 0},
		{name: "kwargs", retries: 3, kwargs: map[string]any{"failures": int64(3), "countdown": int64(0)}, want: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := call(t, "gocelery.flaky", &tasks.Request{ID: "f", Retries: tc.retries}, tc.args, tc.kwargs)
			if !tc.wantRetry {
				if err != nil {
					t.Fatalf("flaky: %v", err)
				}
				if !sameNumber(got, tc.want) {
					t.Fatalf("flaky = %#v (%T), want int64 %d", got, got, tc.want)
				}
				return
			}
			var re *tasks.RetryError
			if !errors.As(err, &re) {
				t.Fatalf("flaky = %#v, %v; want a *tasks.RetryError", got, err)
			}
			if re.Countdown == nil || *re.Countdown != tc.wantCountdown {
				t.Errorf("Countdown = %v, want %v", re.Countdown, tc.wantCountdown)
			}
			if re.ETA != nil || re.MaxRetries != nil {
				t.Errorf("unexpected ETA %v / MaxRetries %v", re.ETA, re.MaxRetries)
			}
			pe, ok := re.Exc.(*tasks.PyError)
			if !ok || pe.Type != "RuntimeError" || pe.Module != "builtins" || !reflect.DeepEqual(pe.Args, []any{"flaky"}) {
				t.Fatalf("Exc = %#v, want RuntimeError('flaky')", re.Exc)
			}
		})
	}
	for _, tc := range []struct {
		name string
		args []any
	}{
		{"string failures", []any{"2"}},
		{"bool countdown", []any{json.Number("1"), true}},
		{"no args", nil},
	} {
		t.Run("TypeError "+tc.name, func(t *testing.T) {
			_, err := call(t, "gocelery.flaky", &tasks.Request{ID: "f"}, tc.args, nil)
			wantPyError(t, err, "TypeError", "")
		})
	}
}

func TestProgress(t *testing.T) {
	type update struct {
		state string
		meta  any
	}
	var mu sync.Mutex
	var updates []update
	req := &tasks.Request{ID: "p", UpdateStateFunc: func(_ context.Context, state string, meta any) error {
		mu.Lock()
		defer mu.Unlock()
		updates = append(updates, update{state, meta})
		return nil
	}}
	got, err := call(t, "gocelery.progress", req, []any{json.Number("3"), json.Number("0")}, nil)
	if err != nil {
		t.Fatalf("progress: %v", err)
	}
	if !sameNumber(got, int64(3)) {
		t.Fatalf("progress = %#v (%T), want int64 3", got, got)
	}
	if len(updates) != 3 {
		t.Fatalf("got %d updates, want 3: %#v", len(updates), updates)
	}
	for i, u := range updates {
		meta, ok := u.meta.(map[string]any)
		if u.state != "PROGRESS" || !ok || len(meta) != 2 ||
			!sameNumber(meta["current"], int64(i+1)) || !sameNumber(meta["total"], int64(3)) {
			t.Errorf("update %d = %#v, want PROGRESS {current: %d, total: 3}", i, u, i+1)
		}
	}

	t.Run("store error stops it", func(t *testing.T) {
		storeErr := errors.New("redis down")
		calls := 0
		req := &tasks.Request{ID: "p", UpdateStateFunc: func(context.Context, string, any) error { calls++; return storeErr }}
		_, err := call(t, "gocelery.progress", req, []any{json.Number("3"), json.Number("0")}, nil)
		if !errors.Is(err, storeErr) || calls != 1 {
			t.Fatalf("progress = %v after %d calls, want the store error after 1", err, calls)
		}
	})
	t.Run("without request", func(t *testing.T) {
		reg := newRegistry(t)
		got, err := lookup(t, reg, "gocelery.progress").Handler.Call(context.Background(), []any{json.Number("2"), json.Number("0")}, nil)
		if err != nil || !sameNumber(got, int64(2)) {
			t.Fatalf("progress without request = %#v, %v; want 2", got, err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		reg := newRegistry(t)
		ctx, cancel := context.WithCancelCause(tasks.WithRequest(context.Background(), &tasks.Request{ID: "p"}))
		cancel(tasks.ErrSoftTimeLimitExceeded)
		_, err := callWithin(t, lookup(t, reg, "gocelery.progress").Handler, ctx, []any{json.Number("2"), json.Number("3600")})
		if !errors.Is(err, tasks.ErrSoftTimeLimitExceeded) {
			t.Fatalf("progress = %v, want SoftTimeLimitExceeded", err)
		}
	})
	t.Run("TypeError", func(t *testing.T) {
		_, err := call(t, "gocelery.progress", nil, []any{"3", json.Number("0")}, nil)
		wantPyError(t, err, "TypeError", "")
		_, err = call(t, "gocelery.progress", nil, []any{json.Number("3")}, nil)
		wantPyError(t, err, "TypeError", "missing 1 required positional argument: 'delay'")
	})
}

func TestXsum(t *testing.T) {
	tests := []struct {
		name    string
		numbers any
		want    any
		wantErr string
	}{
		{name: "empty", numbers: []any{}, want: int64(0)},
		{name: "ints", numbers: []any{json.Number("1"), json.Number("2"), json.Number("3")}, want: int64(6)},
		{name: "exact", numbers: []any{json.Number("9007199254740993"), json.Number("1"), json.Number("1")}, want: int64(9007199254740995)},
		{name: "big", numbers: []any{json.Number("18446744073709551616"), json.Number("18446744073709551616")},
			want: bigInt(t, "36893488147419103232")},
		{name: "float", numbers: []any{json.Number("1"), json.Number("0.5")}, want: 1.5},
		{name: "null item", numbers: []any{json.Number("1"), nil}, wantErr: "NoneType"},
		{name: "string item", numbers: []any{"1"}, wantErr: "str"},
		{name: "bool item", numbers: []any{true}, wantErr: "bool"},
		{name: "not a list", numbers: json.Number("1"), wantErr: "not iterable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := call(t, "gocelery.xsum", nil, []any{tc.numbers}, nil)
			if tc.wantErr != "" {
				wantPyError(t, err, "TypeError", tc.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("xsum: %v", err)
			}
			if !sameNumber(got, tc.want) {
				t.Fatalf("xsum = %#v (%T), want %#v (%T)", got, got, tc.want, tc.want)
			}
		})
	}
}

func TestNoop(t *testing.T) {
	got, err := call(t, "gocelery.noop", nil, nil, nil)
	if err != nil || got != nil {
		t.Fatalf("noop() = %#v, %v; want nil, nil", got, err)
	}
	got, err = call(t, "gocelery.noop", nil, []any{}, map[string]any{})
	if err != nil || got != nil {
		t.Fatalf("noop() with empty args = %#v, %v; want nil, nil", got, err)
	}
	_, err = call(t, "gocelery.noop", nil, []any{json.Number("1")}, nil)
	wantPyError(t, err, "TypeError", "takes 0 positional arguments but 1 was given")
	_, err = call(t, "gocelery.noop", nil, nil, map[string]any{"x": json.Number("1")})
	wantPyError(t, err, "TypeError", "unexpected keyword argument 'x'")
}

func TestRequest(t *testing.T) {
	tests := []struct {
		name string
		req  *tasks.Request
		want map[string]any
	}{
		{name: "full",
			req: &tasks.Request{ID: "id-1", RootID: "root-1", ParentID: "parent-1", Group: "group-1", Retries: 2,
				Hostname: "go@host", DeliveryInfo: tasks.DeliveryInfo{RoutingKey: "celery", Exchange: ""}},
			want: map[string]any{"id": "id-1", "root_id": "root-1", "parent_id": "parent-1", "group": "group-1",
				"retries": int64(2), "hostname": "go@host", "routing_key": "celery"}},
		{name: "empty fields are None",
			req: &tasks.Request{ID: "id-2", Hostname: "go@h2"},
			want: map[string]any{"id": "id-2", "root_id": nil, "parent_id": nil, "group": nil,
				"retries": int64(0), "hostname": "go@h2", "routing_key": nil}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := call(t, "gocelery.request", tc.req, nil, nil)
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("request = %#v, want %#v", got, tc.want)
			}
		})
	}
	t.Run("rejects args", func(t *testing.T) {
		_, err := call(t, "gocelery.request", nil, []any{json.Number("1")}, nil)
		wantPyError(t, err, "TypeError", "takes 0 positional arguments")
	})
	t.Run("outside a worker", func(t *testing.T) {
		reg := newRegistry(t)
		_, err := lookup(t, reg, "gocelery.request").Handler.Call(context.Background(), nil, nil)
		if err == nil {
			t.Fatal("request without a request context: no error")
		}
	})
}

func TestLimited(t *testing.T) {
	for _, v := range []any{json.Number("7"), "s", nil, []any{json.Number("1")}} {
		got, err := call(t, "gocelery.limited", nil, []any{v}, nil)
		if err != nil || !reflect.DeepEqual(got, v) {
			t.Errorf("limited(%#v) = %#v, %v", v, got, err)
		}
	}
	got, err := call(t, "gocelery.limited", nil, nil, map[string]any{"x": json.Number("3")})
	if err != nil || got != json.Number("3") {
		t.Errorf("limited(x=3) = %#v, %v", got, err)
	}
	_, err = call(t, "gocelery.limited", nil, nil, nil)
	wantPyError(t, err, "TypeError", "missing 1 required positional argument: 'x'")
}
