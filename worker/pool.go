package worker

import (
	"sync"
	"time"
)

// pool is the set of runners: long-lived goroutines that take jobs from
// w.jobs and run them. Their number bounds concurrency; long-lived runners
// keep their grown stacks, which a goroutine per task would grow anew each
// time. With autoscaling (MinConcurrency > 0) the scaler adds runners while
// jobs wait for one and removes them after AutoscaleKeepalive idle, as
// Celery's --autoscale does; the prefetch window follows the size.
type pool struct {
	w *Worker

	mu       sync.Mutex
	size     int           // runners alive, or asked to exit but not yet
	shrink   chan struct{} // a runner that receives from it exits
	lastBusy time.Time
}

func newPool(w *Worker) *pool {
	return &pool{w: w, shrink: make(chan struct{}, w.cfg.Concurrency)}
}

func (p *pool) autoscaling() bool {
	c := p.w.cfg
	return c.MinConcurrency > 0 && c.MinConcurrency < c.Concurrency
}

// start launches the initial runners (the minimum when autoscaling).
func (p *pool) start() {
	n := p.w.cfg.Concurrency
	if p.autoscaling() {
		n = p.w.cfg.MinConcurrency
	}
	p.grow(n)
	if p.autoscaling() {
		go p.scaler()
	}
}

// Size is the number of runners.
func (p *pool) Size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.size == 0 {
		// Before start: what start will launch, for the first prefetch.
		if p.autoscaling() {
			return p.w.cfg.MinConcurrency
		}
		return p.w.cfg.Concurrency
	}
	return p.size
}

// grow adds n runners, up to Concurrency; it reports how many it added.
func (p *pool) grow(n int) int {
	p.mu.Lock()
	n = min(n, p.w.cfg.Concurrency-p.size)
	if n > 0 {
		p.size += n
		p.lastBusy = time.Now()
	}
	p.mu.Unlock()
	for i := 0; i < n; i++ {
		go p.runner()
	}
	return max(n, 0)
}

// reduce asks n runners to exit when they are next idle, down to floor.
func (p *pool) reduce(n, floor int) int {
	p.mu.Lock()
	n = min(n, p.size-max(floor, 1))
	if n > 0 {
		p.size -= n
	}
	p.mu.Unlock()
	for i := 0; i < n; i++ {
		p.shrink <- struct{}{}
	}
	return max(n, 0)
}

// runner runs jobs until it is asked to exit or the worker stops.
func (p *pool) runner() {
	w := p.w
	for {
		select {
		case j := <-w.jobs:
			w.runJob(j)
		case <-p.shrink:
			return
		case <-w.done:
			return
		}
	}
}

// scaler adjusts the number of runners to the work waiting: it grows at
// once when jobs wait for a runner, and shrinks by one runner per tick
// once no job has waited for AutoscaleKeepalive.
func (p *pool) scaler() {
	w := p.w
	tick := time.NewTicker(autoscaleTick)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-w.quit:
			return
		}
		waiting := len(w.jobs)
		busy := int(w.running.Load())
		size := p.Size()
		switch {
		case waiting > 0 && size < w.cfg.Concurrency:
			if n := p.grow(waiting); n > 0 {
				w.log.Info().Int("runners", p.Size()).Int("waiting", waiting).Msg("autoscale: more runners")
				w.updatePrefetch()
			}
		case waiting > 0 || busy >= size:
			p.mu.Lock()
			p.lastBusy = time.Now()
			p.mu.Unlock()
		default:
			p.mu.Lock()
			idle := time.Since(p.lastBusy)
			p.mu.Unlock()
			if idle >= w.cfg.AutoscaleKeepalive && size > w.cfg.MinConcurrency {
				if n := p.reduce(max(size-busy, 0)/2+1, max(busy, w.cfg.MinConcurrency)); n > 0 {
					w.log.Info().Int("runners", p.Size()).Msg("autoscale: fewer runners")
					w.updatePrefetch()
					p.mu.Lock()
					p.lastBusy = time.Now().Add(-w.cfg.AutoscaleKeepalive / 2)
					p.mu.Unlock()
				}
			}
		}
	}
}

// autoscaleTick is how often the scaler looks (Celery's is 1 s).
var autoscaleTick = 250 * time.Millisecond
