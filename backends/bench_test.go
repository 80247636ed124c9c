package backends_test

import (
	"testing"
	"time"

	"github.com/celeryworker/gocelery/backends"
)

func benchResult(b *testing.B, r *backends.Result, extended bool) {
	if _, err := r.Encode(extended); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Encode(extended); err != nil {
			b.Fatal(err)
		}
	}
}

var benchDone = time.Date(2026, 11, 24, 10, 0, 0, 123456000, time.UTC)

// The SUCCESS document of a noop task (result None), the worker's
// per-task write in W1.
func BenchmarkResultEncodeNoop(b *testing.B) {
	benchResult(b, &backends.Result{TaskID: "601de000-0000-4000-8000-000000000001", Status: backends.StatusSuccess,
		Children: []any{}, DateDone: benchDone}, false)
}

// A SUCCESS document with an integer result.
func BenchmarkResultEncodeInt(b *testing.B) {
	benchResult(b, &backends.Result{TaskID: "601de000-0000-4000-8000-000000000001", Status: backends.StatusSuccess,
		Result: int64(5), Children: []any{}, DateDone: benchDone}, false)
}

// result_extended: name, args, kwargs, worker, retries, queue as well.
func BenchmarkResultEncodeExtended(b *testing.B) {
	benchResult(b, &backends.Result{TaskID: "601de000-0000-4000-8000-000000000001", Status: backends.StatusSuccess,
		Result: int64(5), Children: []any{}, DateDone: benchDone, Name: "gocelery.add",
		Args: []any{int64(2), int64(3)}, Kwargs: map[string]any{}, Worker: "go@host", Queue: "celery"}, true)
}

// A FAILURE document with exception info and traceback.
func BenchmarkResultEncodeFailure(b *testing.B) {
	tb := "Traceback (most recent call last):\n  File \"task.go\", line 1\nValueError: bad"
	benchResult(b, &backends.Result{TaskID: "601de000-0000-4000-8000-000000000001", Status: backends.StatusFailure,
		Result:    backends.ExceptionInfo{Type: "ValueError", Module: "builtins", Args: []any{"bad"}}.Value(),
		Traceback: &tb, Children: []any{}, DateDone: benchDone}, false)
}
