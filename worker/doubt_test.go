package worker

import (
	"fmt"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/broker/brokertest"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
)

func doubtJob(id string, retries int) *job {
	return &job{msg: &protocol.Message{ID: id, Retries: retries}}
}

func ended(f *runFinish) bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

// TestDoubts pins the records of runs whose ack is in doubt: made once per
// job whichever of rememberDoubts and the runner comes first (even after
// the run ended), each copy of a message waits for the other copy and
// never for itself, a retry (same id, next count) is another message, and
// the oldest records go first.
func TestDoubts(t *testing.T) {
	t.Run("once per job, even after its run", func(t *testing.T) {
		var d doubts
		j, again := doubtJob("x", 0), doubtJob("x", 0)
		r := d.add(doubtKey(j.msg), j) // the runner
		r.end(true)
		if d.add(doubtKey(j.msg), j) != r { // rememberDoubts, late
			t.Fatal("a second record for the same job")
		}
		if f := d.firstRun(again); f != r || !ended(f) {
			t.Fatalf("the redelivery finds %p (ended %v), want the ended %p", f, f != nil && ended(f), r)
		}
	})
	t.Run("two copies in doubt", func(t *testing.T) {
		var d doubts
		j1, j2 := doubtJob("x", 0), doubtJob("x", 0)
		d.add(doubtKey(j1.msg), j1)
		d.add(doubtKey(j2.msg), j2)
		r1, r2 := d.add(doubtKey(j1.msg), j1), d.add(doubtKey(j2.msg), j2)
		if r1 == r2 {
			t.Fatal("two copies share a record")
		}
		if d.firstRun(j1) != nil {
			t.Fatal("the first copy waits for the one after it")
		}
		if d.firstRun(j2) != r1 {
			t.Fatal("the second copy does not wait for the first")
		}
		r1.end(true)
		if d.firstRun(doubtJob("x", 0)) != r2 {
			t.Fatal("a third copy does not find the newest")
		}
	})
	t.Run("a retry is another message", func(t *testing.T) {
		var d doubts
		j := doubtJob("x", 0)
		d.add(doubtKey(j.msg), j).end(true)
		if f := d.firstRun(doubtJob("x", 1)); f != nil {
			t.Fatal("the retry would be acknowledged without running")
		}
	})
	t.Run("answers for redeliveries only in its grace", func(t *testing.T) {
		var d doubts
		j := doubtJob("x", 0)
		r := d.add(doubtKey(j.msg), j)
		r.end(true)
		at := time.Unix(1000, 0)
		d.connected(at)
		soon, late := doubtJob("x", 0), doubtJob("x", 0)
		soon.received = at.Add(time.Second).UnixNano()
		late.received = at.Add(doubtGrace + time.Second).UnixNano()
		if d.firstRun(soon) != r {
			t.Fatal("a redelivery right after the reconnect is not recognised")
		}
		if d.firstRun(late) != nil {
			t.Fatal("a message long after the reconnect is taken for a redelivery")
		}
		d.connected(at.Add(time.Hour)) // a later reconnect does not renew it
		if d.firstRun(late) != nil {
			t.Fatal("the grace was renewed by a later connection")
		}
	})
	t.Run("bounded", func(t *testing.T) {
		var d doubts
		first := doubtJob("first", 0)
		d.add(doubtKey(first.msg), first).end(true)
		for i := range doubtKeep {
			j := doubtJob(fmt.Sprint(i), 0)
			d.add(doubtKey(j.msg), j).end(true)
		}
		if len(d.byKey) != doubtKeep || d.firstRun(doubtJob("first", 0)) != nil {
			t.Fatalf("%d records kept, the oldest found: %v", len(d.byKey), d.firstRun(doubtJob("first", 0)) != nil)
		}
		if d.firstRun(doubtJob("0", 0)) == nil {
			t.Fatal("a recent record dropped")
		}
	})
}

// heldStart is a delivery whose StartAck ends in doubt and returns only
// once released: the goroutine that started it is paused between the ack
// and the job's entry in w.ahead.
type heldStart struct {
	broker.Delivery  // only StartAck is called
	entered, release chan struct{}
}

func (d *heldStart) StartAck() func() error {
	close(d.entered)
	<-d.release
	return func() error { return fmt.Errorf("held: %w", broker.ErrAckInDoubt) }
}

// TestRememberDoubtsWaitsForStartingAcks: a connection lost while a runner
// is between starting an ack and listing its job in w.ahead still gets
// that job remembered as in doubt before the worker consumes again (else
// its redelivery could run beside it).
func TestRememberDoubtsWaitsForStartingAcks(t *testing.T) {
	w, err := New(Config{Broker: brokertest.New(), Registry: tasks.NewRegistry(), Queues: []string{"q"}})
	if err != nil {
		t.Fatal(err)
	}
	d := &heldStart{entered: make(chan struct{}), release: make(chan struct{})}
	j := &job{d: d, task: &tasks.Task{Name: "t"}, msg: &protocol.Message{ID: "A", Task: "t"}}
	started := make(chan struct{})
	go func() { w.startAck(j); close(started) }()
	<-d.entered
	// The serve loop sees the loss now; the runner resumes only once
	// rememberDoubts is under way (waiting for the lock, with the fix; long
	// done with the ranging, without it).
	remembered := make(chan struct{})
	go func() { w.rememberDoubts(); close(remembered) }()
	brokertest.WaitFor(t, 5*time.Second, func() bool {
		select {
		case <-remembered:
			return true
		default:
		}
		if w.aheadMu.TryRLock() { // no writer waiting yet
			w.aheadMu.RUnlock()
			return false
		}
		return true
	}, "rememberDoubts to end or to wait for the lock")
	close(d.release)
	<-remembered
	<-started
	if w.doubts.firstRun(doubtJob("A", 0)) == nil {
		t.Fatal("the ack started as the connection was lost is not remembered as in doubt")
	}
}
