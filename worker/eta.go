package worker

import (
	"container/heap"
	"time"
)

// etaScheduler holds messages whose ETA is in the future: one goroutine and
// a min-heap rather than a goroutine and timer per message, so ten
// thousand held countdown tasks cost little memory. While it holds
// messages the prefetch count is raised by their number (as Celery does),
// so they do not starve ready work; changes are coalesced into one
// basic.qos per batch.
type etaScheduler struct {
	w     *Worker
	add   chan *job
	purge chan struct{} // a connection was lost: drop its held messages
	heap  etaHeap
}

type etaHeap []*job

func (h etaHeap) Len() int           { return len(h) }
func (h etaHeap) Less(i, j int) bool { return h[i].eta.Before(h[j].eta) }
func (h etaHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *etaHeap) Push(x any)        { *h = append(*h, x.(*job)) }
func (h *etaHeap) Pop() any {
	old := *h
	n := len(old)
	j := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	return j
}

func newETAScheduler(w *Worker) *etaScheduler {
	return &etaScheduler{w: w, add: make(chan *job, 1024), purge: make(chan struct{}, 1)}
}

// hold schedules j; the worker's inflight count stays taken until it runs
// or is requeued.
func (s *etaScheduler) hold(j *job) { s.add <- j }

// run is the scheduler loop; it ends when the worker stops taking work,
// requeueing what it holds.
func (s *etaScheduler) run() {
	w := s.w
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		changed := false
		next := time.Hour
		if len(s.heap) > 0 {
			next = time.Until(s.heap[0].eta)
		}
		timer.Reset(next)
		select {
		case j := <-s.add:
			heap.Push(&s.heap, j)
			changed = true
		drain:
			for {
				select {
				case j := <-s.add:
					heap.Push(&s.heap, j)
				default:
					break drain
				}
			}
		case <-s.purge:
			// The broker has requeued what came on a lost connection: drop
			// it now, not at its ETA, so inspect and the prefetch window
			// do not count it next to its redelivered copy.
			kept := s.heap[:0]
			for _, j := range s.heap {
				if lost(j) {
					w.finish(j)
					changed = true
				} else {
					kept = append(kept, j)
				}
			}
			clear(s.heap[len(kept):])
			s.heap = kept
			heap.Init(&s.heap)
		case <-timer.C:
			now := time.Now()
			for len(s.heap) > 0 && !s.heap[0].eta.After(now) {
				j := heap.Pop(&s.heap).(*job)
				changed = true
				if lost(j) {
					w.finish(j) // the broker has requeued it
					continue
				}
				j.state.Store(stateReserved)
				w.afterETA(j)
			}
		case <-w.quit:
			s.awaitServeLoop()
			for _, j := range s.heap {
				if !lost(j) {
					w.reject(j, true, "shutting down before its ETA")
				}
				w.finish(j)
			}
			s.heap = nil
			w.held.Store(0)
			return
		}
		if changed {
			s.setHeld(len(s.heap))
		}
	}
}

// awaitServeLoop takes what the serve loop hands over until it has
// returned (Run closes loopDone on every path, Close included), so held
// messages are requeued only once the consumers are cancelled: requeued
// before, one could come straight back to this worker (the broker still
// delivers until basic.cancel is answered), be held again and be requeued
// twice. The serve loop is the only sender, so nothing arrives after.
func (s *etaScheduler) awaitServeLoop() {
	for {
		select {
		case j := <-s.add:
			s.heap = append(s.heap, j) // order no longer matters
		case <-s.w.loopDone:
			for {
				select {
				case j := <-s.add: // sent just before it returned
					s.heap = append(s.heap, j)
				default:
					return
				}
			}
		}
	}
}

// connLost asks the scheduler to drop held messages whose connection is
// gone.
func (s *etaScheduler) connLost() {
	select {
	case s.purge <- struct{}{}:
	default:
	}
}

// setHeld records how many messages are held and widens the prefetch
// window by as many.
func (s *etaScheduler) setHeld(n int) {
	if s.w.held.Swap(int64(n)) == int64(n) {
		return
	}
	s.w.updatePrefetch()
}

// lost reports whether j's delivery went back to the broker with its
// connection.
func lost(j *job) bool {
	select {
	case <-j.d.Lost():
		return true
	default:
		return false
	}
}
