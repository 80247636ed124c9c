package tasks

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Options are a task's settings, Celery's task attributes.
type Options struct {
	// MaxRetries bounds retries (Python's max_retries, default 3); a
	// negative value means no limit (Python's None).
	MaxRetries int
	// DefaultRetryDelay is the countdown of a retry that sets none
	// (default 180s).
	DefaultRetryDelay time.Duration
	// TimeLimit and SoftTimeLimit apply when the message sets none.
	TimeLimit, SoftTimeLimit time.Duration
	// RateLimit in Celery's syntax ("10/s", "100/m", "5/h"); empty is none.
	RateLimit string
	// AcksLate acknowledges after the result is stored instead of before
	// the task runs.
	AcksLate bool
	// AcksEarly acknowledges before the task runs even when the worker acks
	// late by default (acks_late=False on a task under task_acks_late).
	AcksEarly bool
	// RejectOnWorkerLost, when set, overrides the worker's
	// task_reject_on_worker_lost for this acks_late task.
	RejectOnWorkerLost *bool
	// IgnoreResult stores no result on success.
	IgnoreResult bool
	// TrackStarted stores STARTED before the task runs.
	TrackStarted bool
	// Params names the function's parameters (after the context), so
	// kwargs can bind to them.
	Params []string

	// AutoRetry, when it returns true for a task's error, retries the task
	// with that error as exc (Celery's autoretry_for).
	AutoRetry func(error) bool
	// RetryBackoff > 0 makes automatic retries wait RetryBackoff×2^retries,
	// capped by RetryBackoffMax (default 600s), randomised down to 0 when
	// RetryJitter is set (Celery's retry_backoff, retry_backoff_max,
	// retry_jitter). Without it automatic retries use DefaultRetryDelay.
	RetryBackoff    time.Duration
	RetryBackoffMax time.Duration
	RetryJitter     bool

	// SkipSucceeded skips a message whose task id already has a SUCCESS
	// result (an acks_late redelivery or a duplicate publish): the task
	// does not run again and the message is acknowledged.
	SkipSucceeded bool
}

func defaultOptions() Options {
	return Options{MaxRetries: 3, DefaultRetryDelay: 180 * time.Second,
		RetryBackoffMax: 600 * time.Second, RetryJitter: true}
}

// Option sets one of a task's Options at registration.
type Option func(*Options)

// MaxRetries sets max_retries; negative means unlimited.
func MaxRetries(n int) Option { return func(o *Options) { o.MaxRetries = n } }

// DefaultRetryDelay sets the countdown of retries that give none.
func DefaultRetryDelay(d time.Duration) Option { return func(o *Options) { o.DefaultRetryDelay = d } }

// TimeLimit sets the hard time limit.
func TimeLimit(d time.Duration) Option { return func(o *Options) { o.TimeLimit = d } }

// SoftTimeLimit sets the soft time limit.
func SoftTimeLimit(d time.Duration) Option { return func(o *Options) { o.SoftTimeLimit = d } }

// RateLimit sets the rate limit ("10/s").
func RateLimit(s string) Option { return func(o *Options) { o.RateLimit = s } }

// AcksLate acknowledges after the task has finished.
func AcksLate() Option { return func(o *Options) { o.AcksLate, o.AcksEarly = true, false } }

// AcksEarly acknowledges before the task runs, whatever the worker's
// default.
func AcksEarly() Option { return func(o *Options) { o.AcksEarly, o.AcksLate = true, false } }

// RejectOnWorkerLost sets reject_on_worker_lost for this task.
func RejectOnWorkerLost(v bool) Option { return func(o *Options) { o.RejectOnWorkerLost = &v } }

// IgnoreResult stores no result on success.
func IgnoreResult() Option { return func(o *Options) { o.IgnoreResult = true } }

// TrackStarted stores STARTED when the task starts.
func TrackStarted() Option { return func(o *Options) { o.TrackStarted = true } }

// Params names the parameters for keyword binding.
func Params(names ...string) Option { return func(o *Options) { o.Params = names } }

// AutoRetryFor retries automatically on errors matching any target
// (errors.Is), or a *PyError of the same Type when the target is one.
func AutoRetryFor(targets ...error) Option {
	return func(o *Options) {
		o.AutoRetry = func(err error) bool {
			for _, t := range targets {
				if errors.Is(err, t) {
					return true
				}
				if tp, ok := t.(*PyError); ok {
					if pe, ok := AsPyError(err); ok && pe.Type == tp.Type {
						return true
					}
				}
			}
			return false
		}
	}
}

// AutoRetryIf retries automatically when match(err) is true.
func AutoRetryIf(match func(error) bool) Option { return func(o *Options) { o.AutoRetry = match } }

// RetryBackoff sets exponential backoff for automatic retries: base×2^n
// seconds, at most max (0 keeps the 600s default), with full jitter when
// jitter is set.
func RetryBackoff(base, max time.Duration, jitter bool) Option {
	return func(o *Options) {
		o.RetryBackoff = base
		if max > 0 {
			o.RetryBackoffMax = max
		}
		o.RetryJitter = jitter
	}
}

// SkipSucceeded skips messages whose task id already succeeded.
func SkipSucceeded() Option { return func(o *Options) { o.SkipSucceeded = true } }

// BackoffCountdown is the wait before automatic retry number retries+1,
// computed as Celery's get_exponential_backoff_interval does; rnd returns
// a value in [0, n] for jitter.
func (o *Options) BackoffCountdown(retries int, rnd func(n int64) int64) time.Duration {
	if o.RetryBackoff <= 0 {
		return o.DefaultRetryDelay
	}
	secs := o.RetryBackoff.Seconds()
	if secs < 1 {
		secs = 1 // Celery uses int(max(1.0, retry_backoff))
	}
	n := int64(secs)
	if retries > 62 {
		retries = 62
	}
	countdown := n << uint(retries)
	if countdown <= 0 || countdown > int64(o.RetryBackoffMax/time.Second) {
		countdown = int64(o.RetryBackoffMax / time.Second)
	}
	if o.RetryJitter && rnd != nil {
		countdown = rnd(countdown)
	}
	if countdown < 0 {
		countdown = 0
	}
	return time.Duration(countdown) * time.Second
}

// ParseRateLimit turns Celery's rate limit syntax into tasks per second:
// "10/s", "100/m", "5/h", or a plain number (per second). Empty or zero
// means no limit (0).
func ParseRateLimit(s string) (float64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	num, unit, hasUnit := strings.Cut(s, "/")
	n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || n < 0 || math.IsNaN(n) || math.IsInf(n, 0) {
		return 0, fmt.Errorf("tasks: invalid rate limit %q: want N, N/s, N/m or N/h", s)
	}
	div := 1.0
	if hasUnit {
		switch u := strings.TrimSpace(unit); {
		case u == "" || strings.HasPrefix(u, "s"):
		case strings.HasPrefix(u, "m"):
			div = 60
		case strings.HasPrefix(u, "h"):
			div = 3600
		default:
			return 0, fmt.Errorf("tasks: invalid rate limit %q: unknown unit %q", s, u)
		}
	}
	return n / div, nil
}
