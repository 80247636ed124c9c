package worker

import "sync"

// readyQueue holds the jobs waiting for a runner, in the order they came.
// Runners take from it; nothing else waits on a job, so a message waiting
// for a runner costs its place here, not a goroutine (2 KB of stack and
// more) as a blocked send would.
type readyQueue struct {
	mu     sync.Mutex
	jobs   []*job // jobs[head:] wait, oldest first
	head   int
	idle   int  // runners waiting in take
	tried  int  // jobs[head:head+tried] were offered to startAhead
	closed bool // shutdown took the rest: push refuses
	// avail holds a token while jobs may be waiting: a runner that takes a
	// job and leaves more passes the token on.
	avail chan struct{}
}

func newReadyQueue() *readyQueue { return &readyQueue{avail: make(chan struct{}, 1)} }

// push appends j; false when the queue is closed (the caller requeues j).
func (q *readyQueue) push(j *job) bool {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return false
	}
	q.jobs = append(q.jobs, j)
	q.mu.Unlock()
	q.signal()
	return true
}

func (q *readyQueue) signal() {
	select {
	case q.avail <- struct{}{}:
	default:
	}
}

// busy reports whether a job pushed now would wait behind at least slack
// others with no runner idle for it. (A hint: it only decides whether the
// job is kept frozen.)
func (q *readyQueue) busy(slack int) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.jobs)-q.head >= q.idle+slack
}

// len is the number of jobs waiting.
func (q *readyQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.jobs) - q.head
}

// pop takes the oldest job, or nil.
func (q *readyQueue) pop() *job {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.popLocked()
}

func (q *readyQueue) popLocked() *job {
	if q.head == len(q.jobs) {
		return nil
	}
	j := q.jobs[q.head]
	q.jobs[q.head] = nil
	q.head++
	q.tried = max(q.tried-1, 0)
	switch {
	case q.head == len(q.jobs):
		// Empty: start again at the front of the same array, unless it grew
		// large (a burst), which is let go.
		if cap(q.jobs) > 1024 {
			q.jobs = nil
		} else {
			q.jobs = q.jobs[:0]
		}
		q.head = 0
	case q.head > 1024 && q.head*2 > len(q.jobs):
		// Mostly consumed: move the rest down so the array does not grow
		// without end under a steady backlog.
		n := copy(q.jobs, q.jobs[q.head:])
		clear(q.jobs[n:])
		q.jobs = q.jobs[:n]
		q.head = 0
	}
	return j
}

// take waits for a job. It returns nil once quit is closed, or when it
// received an exit token from shrink (shrunk true).
func (q *readyQueue) take(shrink, quit <-chan struct{}) (j *job, shrunk bool) {
	for {
		q.mu.Lock()
		j := q.popLocked()
		more := len(q.jobs) > q.head
		if j == nil {
			q.idle++
		}
		q.mu.Unlock()
		if j != nil {
			if more {
				q.signal()
			}
			return j, false
		}
		woken := true
		select {
		case <-q.avail:
		case <-shrink:
			woken, shrunk = false, true
		case <-quit:
			woken = false
		}
		q.mu.Lock()
		q.idle--
		q.mu.Unlock()
		if !woken {
			return nil, shrunk
		}
	}
}

// drain closes the queue and returns what waited, oldest first.
func (q *readyQueue) drain() []*job {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	out := q.jobs[q.head:]
	q.jobs, q.head, q.tried = nil, 0, 0
	return out
}

// startAhead offers the first n waiting jobs, in order, to start (each
// once: start decides whether to start its ack).
func (q *readyQueue) startAhead(n int, start func(*job)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	end := min(len(q.jobs), q.head+n)
	for i := q.head + q.tried; i < end; i++ {
		start(q.jobs[i])
	}
	q.tried = max(q.tried, end-q.head)
}

// removeLost takes out the jobs whose delivery is lost, keeping the
// order of the rest, and returns them.
func (q *readyQueue) removeLost() []*job {
	q.mu.Lock()
	defer q.mu.Unlock()
	var gone []*job
	kept := q.jobs[:q.head]
	q.tried = 0
	for _, j := range q.jobs[q.head:] {
		// One acknowledged ahead is the worker's: it stays (its run
		// learns whether the ack went through).
		if lost(j) && j.ackWait == nil {
			gone = append(gone, j)
		} else {
			kept = append(kept, j)
		}
	}
	clear(q.jobs[len(kept):])
	q.jobs = kept
	return gone
}
