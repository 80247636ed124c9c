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

// pacer holds, in the order they came, the jobs of one rate-limited task
// waiting for their tokens: one goroutine per task with jobs waiting
// takes a token for each in turn and queues it for the runners, rather
// than a goroutine per waiting job.
type pacer struct {
	jobs    []*job
	running bool // a goroutine serves the jobs
}

// pace queues j behind the other jobs of task waiting for a token.
func (w *Worker) pace(j *job, task string) {
	w.pacersMu.Lock()
	p := w.pacers[task]
	if p == nil {
		p = &pacer{}
		w.pacers[task] = p
	}
	p.jobs = append(p.jobs, j)
	start := !p.running
	p.running = true
	w.pacersMu.Unlock()
	if start {
		go w.servePacer(task, p)
	}
}

// servePacer gives p's jobs their tokens in turn, then ends (dropping p)
// once none waits. When the worker stops, the rest are requeued in order.
func (w *Worker) servePacer(task string, p *pacer) {
	for {
		w.pacersMu.Lock()
		if len(p.jobs) == 0 {
			p.running = false
			p.jobs = nil
			delete(w.pacers, task)
			w.pacersMu.Unlock()
			return
		}
		j := p.jobs[0]
		p.jobs[0] = nil
		p.jobs = p.jobs[1:]
		w.pacersMu.Unlock()
		if err := w.limiter.Wait(w.quitCtx, task); err != nil {
			w.reject(j, true, "shutting down before it started")
			w.finish(j)
			continue
		}
		w.dispatch(j)
	}
}
