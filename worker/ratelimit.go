package worker

import (
	"context"
	"sync"
	"time"
)

// rateLimiter is a token bucket of capacity 1 per task name, as Celery's
// worker keeps: a task waits for its token without blocking other task
// types or other slots.
type rateLimiter struct {
	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	interval time.Duration // 0 = unlimited
	next     time.Time     // earliest time the next token is available
}

func newRateLimiter() *rateLimiter { return &rateLimiter{buckets: map[string]*bucket{}} }

// Set changes a task's rate (tasks per second; 0 removes the limit).
func (r *rateLimiter) Set(task string, perSecond float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if perSecond <= 0 {
		delete(r.buckets, task)
		return
	}
	b := r.buckets[task]
	if b == nil {
		b = &bucket{}
		r.buckets[task] = b
	}
	b.interval = time.Duration(float64(time.Second) / perSecond)
}

// Limited reports whether task has a rate limit.
func (r *rateLimiter) Limited(task string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buckets[task] != nil
}

// Wait reserves the task's next token and sleeps until it is due.
func (r *rateLimiter) Wait(ctx context.Context, task string) error {
	r.mu.Lock()
	b := r.buckets[task]
	if b == nil {
		r.mu.Unlock()
		return nil
	}
	now := time.Now()
	at := b.next
	if at.Before(now) {
		at = now
	}
	b.next = at.Add(b.interval)
	r.mu.Unlock()
	d := time.Until(at)
	if d <= 0 {
		return nil
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
