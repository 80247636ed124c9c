package worker

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/broker/brokertest"
)

// lostDelivery is a delivery whose Lost is the channel given.
type lostDelivery struct {
	broker.Delivery
	lost chan struct{}
}

func (d lostDelivery) Lost() <-chan struct{} { return d.lost }

// queueJobs makes n jobs on live deliveries.
func queueJobs(n int) []*job {
	out := make([]*job, n)
	for i := range out {
		out[i] = &job{frozen: fmt.Sprint(i), d: lostDelivery{lost: make(chan struct{})}}
	}
	return out
}

// TestReadyQueueOrder: jobs come out oldest first, across the queue's
// compactions under a steady backlog and its reset when empty.
func TestReadyQueueOrder(t *testing.T) {
	q := newReadyQueue()
	jobs := queueJobs(5000)
	var got []*job
	for i, j := range jobs {
		q.push(j)
		if i%3 == 2 { // out slower than in: a backlog that grows and moves
			got = append(got, q.pop())
		}
	}
	if q.len() != len(jobs)-len(got) {
		t.Fatalf("len %d, want %d", q.len(), len(jobs)-len(got))
	}
	for j := q.pop(); j != nil; j = q.pop() {
		got = append(got, j)
	}
	if !slices.Equal(got, jobs) {
		t.Fatal("jobs out of order")
	}
	if q.len() != 0 || q.pop() != nil {
		t.Fatal("queue not empty")
	}
}

// TestReadyQueueTake: a waiting runner gets a job pushed later; several
// waiting runners each get one; shrink and quit end the wait.
func TestReadyQueueTake(t *testing.T) {
	q := newReadyQueue()
	shrink, quit := make(chan struct{}, 1), make(chan struct{})
	jobs := queueJobs(3)
	got := make(chan *job, 3)
	for range 3 {
		go func() {
			j, _ := q.take(shrink, quit)
			got <- j
		}()
	}
	brokertest.WaitFor(t, time.Minute, func() bool { return !q.busy(0) }, "three idle runners")
	for _, j := range jobs {
		q.push(j)
	}
	var taken []*job
	for range 3 {
		select {
		case j := <-got:
			taken = append(taken, j)
		case <-time.After(time.Minute):
			t.Fatalf("only %d of 3 jobs taken", len(taken))
		}
	}
	for _, j := range jobs {
		if !slices.Contains(taken, j) {
			t.Fatalf("taken %v, want each job once", taken)
		}
	}
	if !q.busy(0) {
		t.Fatal("busy with no idle runner: false")
	}

	shrink <- struct{}{}
	if j, shrunk := q.take(shrink, quit); j != nil || !shrunk {
		t.Fatalf("take with an exit token: %v %v", j, shrunk)
	}
	close(quit)
	if j, shrunk := q.take(shrink, quit); j != nil || shrunk {
		t.Fatalf("take after quit: %v %v", j, shrunk)
	}
}

// TestReadyQueueDrain: drain returns what waits in order and closes the
// queue; removeLost keeps the order of the rest.
func TestReadyQueueDrain(t *testing.T) {
	q := newReadyQueue()
	jobs := queueJobs(6)
	for _, j := range jobs {
		q.push(j)
	}
	if j := q.pop(); j != jobs[0] {
		t.Fatal("pop: not the oldest")
	}
	close(jobs[2].d.(lostDelivery).lost)
	close(jobs[4].d.(lostDelivery).lost)
	if got := q.removeLost(); !slices.Equal(got, []*job{jobs[2], jobs[4]}) {
		t.Fatalf("removeLost: %d jobs, want the 2 lost", len(got))
	}
	if got := q.drain(); !slices.Equal(got, []*job{jobs[1], jobs[3], jobs[5]}) {
		t.Fatal("drain: not the rest in order")
	}
	if q.push(jobs[0]) {
		t.Fatal("push after drain accepted")
	}
}
