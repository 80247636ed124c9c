package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/broker/brokertest"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
	"github.com/celeryworker/gocelery/worker"
)

func quorumTopic(name string) broker.Queue {
	return broker.Queue{Name: name, Exchange: broker.Exchange{Name: name, Type: "topic"}, RoutingKey: name,
		Arguments: map[string]any{"x-queue-type": "quorum"}}
}

// The worker declares the consumed queues as the topology defines them,
// and a name it has no definition for as Celery creates a missing queue.
func TestWorkerDeclaresTopology(t *testing.T) {
	t.Parallel()
	reg := tasks.NewRegistry()
	f := startWorker(t, reg, worker.Config{
		Queues:   []string{testQueue, "other"},
		Topology: broker.Topology{Queues: []broker.Queue{quorumTopic(testQueue)}, MissingQueueType: "quorum"},
	})
	q, ok := f.b.Declared(testQueue)
	if !ok || !q.Quorum() || q.Exchange.Kind() != "topic" {
		t.Errorf("declared %+v", q)
	}
	o, ok := f.b.Declared("other")
	if !ok || !o.Quorum() || o.Exchange.Name != "other" || o.Exchange.Kind() != "direct" {
		t.Errorf("missing queue declared %+v", o)
	}
	prio := startWorker(t, reg, worker.Config{Topology: broker.Topology{MaxPriority: 10}})
	if p, _ := prio.b.Declared(testQueue); p.MaxPriority() != 10 || p.Quorum() {
		t.Errorf("task_queue_max_priority: declared %+v", p)
	}
	// task_create_missing_queues off: an undefined queue is refused at once.
	_, err := worker.New(worker.Config{Broker: brokertest.New(), Registry: reg, Queues: []string{"nope"},
		Topology: broker.Topology{NoCreateMissingQueues: true}})
	if err == nil {
		t.Fatal("an undefined queue was accepted with task_create_missing_queues off")
	}
}

// A retry of a message that came through the delay levels goes back by
// its queue's exchange and routing key (not the delay exchange with its
// prefixed key), carrying its ETA and the queue's definition so the
// transport can delay it natively; a plain one goes where it came from.
func TestRetryRoute(t *testing.T) {
	t.Parallel()
	reg := tasks.NewRegistry()
	reg.MustRegister("t.flaky", func(ctx context.Context) (string, error) {
		if req, _ := tasks.RequestFromContext(ctx); req.Retries == 0 {
			return "", tasks.Retry(tasks.Countdown(30 * time.Second))
		}
		return "ok", nil
	})
	f := startWorker(t, reg, worker.Config{Topology: broker.Topology{Queues: []broker.Queue{quorumTopic(testQueue)}}})
	for _, tc := range []struct {
		id            string
		in            broker.Route
		exchange, key string
	}{
		{"delayed", broker.Route{Exchange: "celery_delayed_delivery", RoutingKey: "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.1." + testQueue}, testQueue, testQueue},
		{"plain", broker.Route{Exchange: testQueue, RoutingKey: "custom.key"}, testQueue, "custom.key"},
	} {
		env, err := protocol.Encode(&protocol.Message{ID: tc.id, Task: "t.flaky"}, protocol.EncodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		before := len(f.b.Published())
		f.b.PublishVia(testQueue, tc.in, env)
		f.result(tc.id, backends.StatusRetry)
		brokertest.WaitFor(t, patience, func() bool { return len(f.b.Published()) > before }, "the retry published")
		r := f.b.Published()[before].Route
		if r.Exchange != tc.exchange || r.RoutingKey != tc.key || r.Queue == nil || !r.Queue.Quorum() ||
			time.Until(r.ETA) < 25*time.Second {
			t.Errorf("%s: retry route %+v", tc.id, r)
		}
	}
}

// A canvas step to a quorum queue carries its countdown as the route's
// ETA (for native delayed delivery) and task_default_priority when it sets
// no priority.
func TestCanvasRouteAndDefaultPriority(t *testing.T) {
	t.Parallel()
	runs := newRunLog()
	f := startWorker(t, canvasRegistry(runs), worker.Config{DefaultPriority: 4,
		Topology: broker.Topology{Queues: []broker.Queue{quorumTopic(testQueue)}}})
	next := sig("t.record", "step")
	next.Options["countdown"] = int64(60)
	f.send(&protocol.Message{ID: "first", Task: "t.add", Args: []any{int64(1), int64(2)}, Chain: []protocol.Signature{next}})
	f.result("first", backends.StatusSuccess)
	brokertest.WaitFor(t, patience, func() bool { return len(f.b.Published()) == 1 }, "the step published")
	sent := f.b.Published()[0]
	if r := sent.Route; r.Exchange != testQueue || r.RoutingKey != testQueue || r.Queue == nil || time.Until(r.ETA) < 55*time.Second {
		t.Errorf("route %+v", r)
	}
	if m := decodeSent(t, sent); m.Priority != 4 {
		t.Errorf("priority %d, want task_default_priority 4", m.Priority)
	}
}
