package worker

import (
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// pool is the set of runners: long-lived goroutines that take jobs from
// w.waiting and run them. Their number bounds concurrency; long-lived runners
// keep their grown stacks, which a goroutine per task would grow anew each
// time. With autoscaling (MinConcurrency > 0) the scaler adds runners while
// jobs wait for one and removes them after AutoscaleKeepalive idle, as
// Celery's --autoscale does; the prefetch window follows the size.
//
// The bounds change at run time: pool_grow and pool_shrink move the size
// (and with it the maximum) of a fixed pool, autoscale moves the range of
// an autoscaling one.
type pool struct {
	w *Worker

	mu        sync.Mutex
	size      int // runners that stay (those asked to exit are no longer counted)
	max, min  int // the range: max is the fixed size when not autoscaling
	autoscale bool
	started   bool
	shrink    chan struct{} // a runner that receives from it exits
	lastBusy  time.Time
	// Each runner holds a slot while it lives; a slot counts the jobs its
	// runners took, and keeps its count when they leave (as Celery's
	// prefork counts the writes to each process index).
	slots []*atomic.Int64
	inUse []bool
}

func newPool(w *Worker) *pool {
	c := w.cfg
	p := &pool{w: w, shrink: make(chan struct{}, c.Concurrency), max: c.Concurrency, min: c.MinConcurrency}
	p.autoscale = c.MinConcurrency > 0 && c.MinConcurrency < c.Concurrency
	if !p.autoscale {
		p.min = 0
	}
	return p
}

func (p *pool) autoscaling() bool { return p.autoscale }

// start launches the initial runners (the minimum when autoscaling).
func (p *pool) start() {
	p.mu.Lock()
	n := p.max
	if p.autoscale {
		n = p.min
	}
	p.started = true
	p.mu.Unlock()
	p.grow(n)
	if p.autoscale {
		go p.scaler()
	}
}

// Size is the number of runners.
func (p *pool) Size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sizeLocked()
}

func (p *pool) sizeLocked() int {
	if !p.started {
		// Before start: what start will launch, for the first prefetch.
		if p.autoscale {
			return p.min
		}
		return p.max
	}
	return p.size
}

// bounds reports the autoscale range (max is the size of a fixed pool).
func (p *pool) bounds() (max, min int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.max, p.min
}

// grow adds n runners, up to the maximum; it reports how many it added.
func (p *pool) grow(n int) int {
	p.mu.Lock()
	n = min(n, p.max-p.size)
	if n > 0 {
		p.size += n
		p.lastBusy = time.Now()
	}
	for i := 0; i < n; i++ {
		slot := slices.Index(p.inUse, false)
		if slot < 0 {
			slot = len(p.slots)
			p.slots = append(p.slots, new(atomic.Int64))
			p.inUse = append(p.inUse, false)
		}
		p.inUse[slot] = true
		go p.runner(slot, p.slots[slot])
	}
	p.mu.Unlock()
	return max(n, 0)
}

// writes describes how the jobs were spread over the runners, in the shape
// of Celery's prefork "writes" stats: per slot, the jobs taken and their
// share; the strategy is "fair" (a free runner takes the next job).
func (p *pool) writes() map[string]any {
	p.mu.Lock()
	var vals []int64
	for _, c := range p.slots {
		if n := c.Load(); n > 0 {
			vals = append(vals, n)
		}
	}
	runners := p.size
	p.mu.Unlock()
	var total int64
	for _, v := range vals {
		total += v
	}
	per := func(v, total float64) string {
		if v == 0 {
			return "0.00"
		}
		return strconv.FormatFloat(v/total, 'f', 2, 64)
	}
	all, raw := make([]string, len(vals)), make([]string, len(vals))
	for i, v := range vals {
		all[i], raw[i] = per(float64(v), float64(total)), strconv.FormatInt(v, 10)
	}
	avg := 0.0
	if total > 0 {
		avg = float64(total) / float64(len(vals))
	}
	return map[string]any{"total": total, "avg": per(avg, float64(total)),
		"all": strings.Join(all, ", "), "raw": strings.Join(raw, ", "), "strategy": "fair",
		"inqueues": map[string]any{"total": int64(runners), "active": p.w.running.Load()}}
}

// reduce asks n runners to exit when they are next idle, down to floor
// (at least one runner stays).
func (p *pool) reduce(n, floor int) int {
	p.mu.Lock()
	n = min(n, p.size-max(floor, 1))
	if n > 0 {
		p.size -= n
	}
	p.mu.Unlock()
	for i := 0; i < n; i++ {
		p.signalExit()
	}
	return max(n, 0)
}

// signalExit hands one exit token to the runners; with the buffer full
// (a pool grown past its initial size) it waits off the caller.
func (p *pool) signalExit() {
	select {
	case p.shrink <- struct{}{}:
	default:
		go func() {
			select {
			case p.shrink <- struct{}{}:
			case <-p.w.done:
			}
		}()
	}
}

// growBy adds n runners to a fixed pool and raises its maximum with them
// (pool_grow); it reports the new size.
func (p *pool) growBy(n int) int {
	if n > 0 {
		p.mu.Lock()
		p.max += n
		if !p.started {
			p.mu.Unlock()
			return p.Size()
		}
		p.mu.Unlock()
		p.grow(n)
	}
	return p.Size()
}

// shrinkBy removes n runners from a fixed pool, keeping at least one, and
// lowers its maximum with them (pool_shrink); it reports the new size.
func (p *pool) shrinkBy(n int) int {
	if n <= 0 {
		return p.Size()
	}
	p.mu.Lock()
	if !p.started {
		p.max = max(p.max-n, 1)
		p.mu.Unlock()
		return p.Size()
	}
	p.mu.Unlock()
	removed := p.reduce(n, 1)
	p.mu.Lock()
	p.max = max(p.max-removed, p.size, 1)
	p.mu.Unlock()
	return p.Size()
}

// setRange changes the autoscale range (the autoscale command): runners
// above a new maximum are asked to exit, and the pool grows at once to a
// new minimum. A nil bound stays as it is; the minimum never exceeds the
// maximum. It reports the range now.
func (p *pool) setRange(newMax, newMin *int) (max_, min_ int) {
	p.mu.Lock()
	if newMax != nil {
		p.max = max(*newMax, 1)
	}
	if newMin != nil {
		p.min = max(*newMin, 0)
	}
	p.min = min(p.min, p.max)
	max_, min_ = p.max, p.min
	size, started := p.size, p.started
	p.mu.Unlock()
	if !started {
		return max_, min_
	}
	if size > max_ {
		p.reduce(size-max_, max_)
	}
	if size < min_ {
		p.grow(min_ - size)
	}
	return max_, min_
}

// runner runs jobs until it is asked to exit or the worker stops.
func (p *pool) runner(slot int, taken *atomic.Int64) {
	w := p.w
	defer func() {
		p.mu.Lock()
		p.inUse[slot] = false
		p.mu.Unlock()
	}()
	for {
		// An exit token waiting goes first: a runner asked to leave while
		// busy takes no new job. (An idle runner receives its token the
		// moment reduce sends it.)
		select {
		case <-p.shrink:
			return
		default:
		}
		// No new task while the result backend is down: its result could
		// only be held, and the prefetched message is safer in the broker's
		// hands (unacknowledged) than finished here.
		if up := w.runnerGate(); up != nil {
			select {
			case <-up:
			case <-p.shrink:
				return
			case <-w.done:
				return
			}
			continue
		}
		j, _ := w.waiting.take(p.shrink, w.quit)
		if j == nil {
			return // asked to exit, or stopping: Shutdown requeues what waits
		}
		taken.Add(1)
		if up := w.runnerGate(); up != nil {
			// The backend went down while this runner waited: hold the
			// job (still reserved) until it is back. One acknowledged
			// ahead is the worker's: it runs (its result is held).
			select {
			case <-up:
			case <-w.quit:
				if j.ackWait == nil {
					w.reject(j, true, "shutting down before it started")
					w.finish(j)
					continue
				}
			case <-w.done:
				return
			}
		}
		// Its own ack first, then those of the jobs behind it: one write.
		w.startAck(j)
		w.fillAhead()
		w.runJob(j)
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
		waiting := w.waiting.len()
		busy := int(w.running.Load())
		maxN, minN := p.bounds()
		size := p.Size()
		switch {
		case waiting > 0 && size < maxN:
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
			if idle >= w.cfg.AutoscaleKeepalive && size > minN {
				if n := p.reduce(max(size-busy, 0)/2+1, max(busy, minN)); n > 0 {
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
