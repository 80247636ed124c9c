package tasks

import (
	"fmt"
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
	// IgnoreResult stores no result on success.
	IgnoreResult bool
	// TrackStarted stores STARTED before the task runs.
	TrackStarted bool
	// Params names the function's parameters (after the context), so
	// kwargs can bind to them.
	Params []string
}

func defaultOptions() Options {
	return Options{MaxRetries: 3, DefaultRetryDelay: 180 * time.Second}
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
func AcksLate() Option { return func(o *Options) { o.AcksLate = true } }

// IgnoreResult stores no result on success.
func IgnoreResult() Option { return func(o *Options) { o.IgnoreResult = true } }

// TrackStarted stores STARTED when the task starts.
func TrackStarted() Option { return func(o *Options) { o.TrackStarted = true } }

// Params names the parameters for keyword binding.
func Params(names ...string) Option { return func(o *Options) { o.Params = names } }

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
	if err != nil || n < 0 {
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
