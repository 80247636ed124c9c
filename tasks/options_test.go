package tasks_test

import (
	"context"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/tasks"
)

func TestParseRateLimit(t *testing.T) {
	tests := []struct {
		in      string
		want    float64
		wantErr bool
	}{
		{in: "10/s", want: 10},
		{in: "100/m", want: 100.0 / 60},
		{in: "5/h", want: 5.0 / 3600},
		{in: "0.5/s", want: 0.5},
		{in: "7", want: 7},
		{in: "", want: 0},
		{in: "0", want: 0},
		{in: "0/m", want: 0},
		{in: " 10/s ", want: 10},
		{in: "abc", wantErr: true},
		{in: "5/x", wantErr: true},
		{in: "-1/s", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "/s", wantErr: true},
		{in: "NaN", wantErr: true},
		{in: "NaN/s", wantErr: true},
		{in: "Inf/m", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := tasks.ParseRateLimit(tc.in)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("ParseRateLimit(%q) = %v, want an error", tc.in, got)
				}
				if !strings.Contains(err.Error(), "rate limit") {
					t.Errorf("error %q does not say what is wrong", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRateLimit(%q): %v", tc.in, err)
			}
			if math.Abs(got-tc.want) > 1e-12 {
				t.Fatalf("ParseRateLimit(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestOptionsApplied(t *testing.T) {
	reg := tasks.NewRegistry()
	hf := tasks.HandlerFunc(func(context.Context, []any, map[string]any) (any, error) { return nil, nil })
	err := reg.RegisterHandler("t", hf,
		tasks.MaxRetries(-1), tasks.DefaultRetryDelay(2*time.Second), tasks.TimeLimit(10*time.Second),
		tasks.SoftTimeLimit(5*time.Second), tasks.RateLimit("1/s"), tasks.AcksLate(), tasks.IgnoreResult(),
		tasks.TrackStarted(), tasks.Params("a"))
	if err != nil {
		t.Fatal(err)
	}
	task, _ := reg.Lookup("t")
	o := task.Options
	// Compared field by field: Options grows new fields.
	if o.MaxRetries != -1 || o.DefaultRetryDelay != 2*time.Second || o.TimeLimit != 10*time.Second ||
		o.SoftTimeLimit != 5*time.Second || o.RateLimit != "1/s" || !o.AcksLate || !o.IgnoreResult ||
		!o.TrackStarted || !reflect.DeepEqual(o.Params, []string{"a"}) {
		t.Fatalf("Options = %+v, want the values set at registration", o)
	}

	if err := reg.RegisterHandler("d", hf); err != nil {
		t.Fatal(err)
	}
	d, _ := reg.Lookup("d")
	o = d.Options
	if o.MaxRetries != 3 || o.DefaultRetryDelay != 180*time.Second || o.TimeLimit != 0 || o.SoftTimeLimit != 0 ||
		o.RateLimit != "" || o.AcksLate || o.IgnoreResult || o.TrackStarted || o.Params != nil {
		t.Fatalf("default Options = %+v, want Celery's defaults", o)
	}
}

func TestRetry(t *testing.T) {
	exc := tasks.ValueError("bad %d", 7)
	eta := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name          string
		opts          []tasks.RetryOption
		wantCountdown *time.Duration
		wantETA       *time.Time
		wantExc       error
		wantMax       *int
		wantMsg       string
	}{
		{name: "bare", wantMsg: "Retry"},
		{name: "countdown", opts: []tasks.RetryOption{tasks.Countdown(5 * time.Second)},
			wantCountdown: ptr(5 * time.Second), wantMsg: "Retry in 5s"},
		{name: "countdown zero", opts: []tasks.RetryOption{tasks.Countdown(0)}, wantCountdown: ptr(time.Duration(0))},
		{name: "eta", opts: []tasks.RetryOption{tasks.ETA(eta)}, wantETA: &eta, wantMsg: "Retry at 2030-01-02T03:04:05Z"},
		{name: "exc", opts: []tasks.RetryOption{tasks.Exc(exc)}, wantExc: exc, wantMsg: "Retry: ValueError: bad 7"},
		{name: "max retries", opts: []tasks.RetryOption{tasks.MaxRetriesOverride(10)}, wantMax: ptr(10)},
		{name: "unlimited", opts: []tasks.RetryOption{tasks.MaxRetriesOverride(-1)}, wantMax: ptr(-1)},
		{name: "all", opts: []tasks.RetryOption{tasks.Countdown(time.Minute), tasks.Exc(exc), tasks.MaxRetriesOverride(1), tasks.ETA(eta)},
			wantCountdown: ptr(time.Minute), wantETA: &eta, wantExc: exc, wantMax: ptr(1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tasks.Retry(tc.opts...)
			// Wrapped, as a task might return it.
			wrapped := errors.Join(errors.New("context"), err)
			var re *tasks.RetryError
			if !errors.As(wrapped, &re) {
				t.Fatalf("errors.As(%v, *RetryError) failed", err)
			}
			if !eqPtr(re.Countdown, tc.wantCountdown) {
				t.Errorf("Countdown = %v, want %v", deref(re.Countdown), deref(tc.wantCountdown))
			}
			if (re.ETA == nil) != (tc.wantETA == nil) || (re.ETA != nil && !re.ETA.Equal(*tc.wantETA)) {
				t.Errorf("ETA = %v, want %v", deref(re.ETA), deref(tc.wantETA))
			}
			if re.Exc != tc.wantExc {
				t.Errorf("Exc = %v, want %v", re.Exc, tc.wantExc)
			}
			if !eqPtr(re.MaxRetries, tc.wantMax) {
				t.Errorf("MaxRetries = %v, want %v", deref(re.MaxRetries), deref(tc.wantMax))
			}
			if tc.wantMsg != "" && err.Error() != tc.wantMsg {
				t.Errorf("Error() = %q, want %q", err.Error(), tc.wantMsg)
			}
			if tc.wantExc != nil {
				if !errors.Is(err, tc.wantExc) {
					t.Error("errors.Is(retry, exc) = false; Unwrap should expose Exc")
				}
				pe, ok := tasks.AsPyError(err)
				if !ok || pe.Type != "ValueError" {
					t.Errorf("AsPyError(retry) = %v, %v", pe, ok)
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func eqPtr[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestPyErrors(t *testing.T) {
	cause := errors.New("cause")
	tests := []struct {
		err      *tasks.PyError
		wantType string
		wantMsg  string
	}{
		{tasks.TypeError("x %s", "y"), "TypeError", "TypeError: x y"},
		{tasks.ValueError("v"), "ValueError", "ValueError: v"},
		{tasks.KeyError("k"), "KeyError", "KeyError: k"},
		{tasks.RuntimeError("r"), "RuntimeError", "RuntimeError: r"},
		{tasks.NewPyError("ZeroDivisionError", "division by zero"), "ZeroDivisionError", "ZeroDivisionError: division by zero"},
		{&tasks.PyError{Type: "KeyError", Args: []any{int64(7), "b"}}, "KeyError", "KeyError: 7, b"},
	}
	for _, tc := range tests {
		if tc.err.Type != tc.wantType || tc.err.Error() != tc.wantMsg {
			t.Errorf("%#v: type %q message %q, want %q %q", tc.err, tc.err.Type, tc.err.Error(), tc.wantType, tc.wantMsg)
		}
		if tc.err.Args == nil {
			continue
		}
	}
	if e := tasks.ValueError("x"); e.Module != "builtins" || len(e.Args) != 1 || e.Args[0] != "x" {
		t.Errorf("ValueError(x) = %#v", e)
	}
	pe := &tasks.PyError{Type: "OSError", Module: "builtins", Args: []any{"io"}, Cause: cause}
	if !errors.Is(pe, cause) {
		t.Error("errors.Is(PyError, Cause) = false")
	}
	if got, ok := tasks.AsPyError(errors.Join(errors.New("x"), pe)); !ok || got != pe {
		t.Errorf("AsPyError(joined) = %v, %v", got, ok)
	}
	if _, ok := tasks.AsPyError(errors.New("plain")); ok {
		t.Error("AsPyError(plain error) found a PyError")
	}
}

func TestUpdateState(t *testing.T) {
	if err := tasks.UpdateState(context.Background(), "PROGRESS", nil); !errors.Is(err, tasks.ErrNoRequest) {
		t.Fatalf("UpdateState without request = %v, want ErrNoRequest", err)
	}
	// A request without a store function cannot store either.
	ctx := tasks.WithRequest(context.Background(), &tasks.Request{ID: "id"})
	if err := tasks.UpdateState(ctx, "PROGRESS", nil); !errors.Is(err, tasks.ErrNoRequest) {
		t.Fatalf("UpdateState with request but no UpdateStateFunc = %v, want ErrNoRequest", err)
	}
	// A nil *Request in the context is no request.
	ctx = tasks.WithRequest(context.Background(), nil)
	if _, ok := tasks.RequestFromContext(ctx); ok {
		t.Fatal("RequestFromContext found a nil request")
	}

	type call struct {
		state string
		meta  any
		id    string
	}
	var calls []call
	storeErr := errors.New("store failed")
	req := &tasks.Request{ID: "task-1"}
	req.UpdateStateFunc = func(ctx context.Context, state string, meta any) error {
		r, _ := tasks.RequestFromContext(ctx)
		id := ""
		if r != nil {
			id = r.ID
		}
		calls = append(calls, call{state, meta, id})
		if state == "FAIL" {
			return storeErr
		}
		return nil
	}
	ctx = tasks.WithRequest(context.Background(), req)
	if got, ok := tasks.RequestFromContext(ctx); !ok || got != req {
		t.Fatalf("RequestFromContext = %v, %v", got, ok)
	}
	if err := tasks.UpdateState(ctx, "PROGRESS", map[string]any{"current": 1}); err != nil {
		t.Fatalf("UpdateState: %v", err)
	}
	if err := tasks.UpdateState(ctx, "FAIL", nil); !errors.Is(err, storeErr) {
		t.Fatalf("UpdateState error = %v, want the store's error", err)
	}
	want := []call{{"PROGRESS", map[string]any{"current": 1}, "task-1"}, {"FAIL", nil, "task-1"}}
	if !reflect.DeepEqual(calls, want) {
		t.Fatalf("calls = %#v, want %#v", calls, want)
	}
}
