package tasks

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinel causes of a task context's cancellation. A task that returns
// one (or an error wrapping it) is recorded as Celery records the event.
var (
	// ErrSoftTimeLimitExceeded: the soft time limit passed; the task may
	// clean up and return.
	ErrSoftTimeLimitExceeded = errors.New("SoftTimeLimitExceeded()")
	// ErrTimeLimitExceeded: the hard time limit passed; the worker has
	// already recorded the failure and stopped waiting.
	ErrTimeLimitExceeded = errors.New("TimeLimitExceeded()")
	// ErrTerminated: the task was revoked with terminate=True.
	ErrTerminated = errors.New("task terminated")
)

// PyError is a task failure that Python clients rebuild as the exception
// class Module.Type called with Args: a ValueError("bad") in Go is
// PyError{Type: "ValueError", Args: []any{"bad"}}. Module defaults to
// builtins.
type PyError struct {
	Type   string
	Module string
	Args   []any
	// Cause is the Go error behind it, kept for the traceback and errors.Is.
	Cause error
}

func (e *PyError) Error() string {
	parts := make([]string, len(e.Args))
	for i, a := range e.Args {
		if s, ok := a.(string); ok {
			parts[i] = s
		} else {
			parts[i] = fmt.Sprint(a)
		}
	}
	return e.Type + ": " + strings.Join(parts, ", ")
}

func (e *PyError) Unwrap() error { return e.Cause }

// NewPyError returns a PyError of the builtin exception typ with message.
func NewPyError(typ, message string) *PyError {
	return &PyError{Type: typ, Module: "builtins", Args: []any{message}}
}

// TypeError, ValueError, KeyError and RuntimeError build the builtin
// exceptions tasks raise most, with a printf-style message.
func TypeError(format string, a ...any) *PyError {
	return NewPyError("TypeError", fmt.Sprintf(format, a...))
}

func ValueError(format string, a ...any) *PyError {
	return NewPyError("ValueError", fmt.Sprintf(format, a...))
}

func KeyError(format string, a ...any) *PyError {
	return NewPyError("KeyError", fmt.Sprintf(format, a...))
}

func RuntimeError(format string, a ...any) *PyError {
	return NewPyError("RuntimeError", fmt.Sprintf(format, a...))
}

// AsPyError finds a *PyError in err's chain.
func AsPyError(err error) (*PyError, bool) {
	var pe *PyError
	if errors.As(err, &pe) {
		return pe, true
	}
	return nil, false
}

// RetryError asks the worker to retry the task, as Python's Task.retry
// does: the same task id is sent again with retries+1 and an eta. Build it
// with Retry.
type RetryError struct {
	// Countdown or ETA set when to run again; neither means the task's
	// DefaultRetryDelay.
	Countdown *time.Duration
	ETA       *time.Time
	// Exc is the error stored with the RETRY state, and the failure stored
	// when no retries are left.
	Exc error
	// MaxRetries overrides the task's option for this call.
	MaxRetries *int
}

func (e *RetryError) Error() string {
	switch {
	case e.Exc != nil:
		return "Retry: " + e.Exc.Error()
	case e.Countdown != nil:
		return fmt.Sprintf("Retry in %s", *e.Countdown)
	case e.ETA != nil:
		return "Retry at " + e.ETA.UTC().Format(time.RFC3339)
	}
	return "Retry"
}

func (e *RetryError) Unwrap() error { return e.Exc }

// RetryOption sets one parameter of Retry.
type RetryOption func(*RetryError)

// Countdown retries after d (0 retries at once).
func Countdown(d time.Duration) RetryOption {
	return func(e *RetryError) { e.Countdown = &d }
}

// ETA retries at t.
func ETA(t time.Time) RetryOption { return func(e *RetryError) { e.ETA = &t } }

// Exc records err with the RETRY state and as the final failure.
func Exc(err error) RetryOption { return func(e *RetryError) { e.Exc = err } }

// MaxRetriesOverride overrides the task's max retries for this retry; a
// negative n retries without limit.
func MaxRetriesOverride(n int) RetryOption { return func(e *RetryError) { e.MaxRetries = &n } }

// Retry returns the error a task returns to be retried:
//
//	return nil, tasks.Retry(tasks.Countdown(5*time.Second), tasks.Exc(err))
func Retry(opts ...RetryOption) error {
	e := &RetryError{}
	for _, o := range opts {
		o(e)
	}
	return e
}
