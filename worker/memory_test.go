package worker_test

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/broker/brokertest"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
	"github.com/celeryworker/gocelery/worker"
)

// heapAfterGC is the live heap once garbage is collected.
func heapAfterGC() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// liveAfterGC is the live heap and goroutine stacks once garbage is
// collected: a goroutine parked per message costs its stack, which the
// heap figure leaves out.
func liveAfterGC() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc + ms.StackInuse
}

// heldModes are the ways a worker holds messages: for their ETA, prefetched
// while the only runner is busy (unlimited prefetch), due (their ETA
// passed) while it is busy, or waiting for a rate limit token.
var heldModes = []string{"eta", "prefetched", "due", "ratelimited"}

// BenchmarkHeldMessageMemory reports what the worker keeps per message it
// holds beyond the broker's own copy, in each of heldModes. "B/held" is the live heap and
// goroutine stacks added per message after the worker took them all,
// divided by their number (the in-memory broker's delivery objects
// included); "body-B" the body size of each. Run with -benchtime 1x (each
// iteration holds 20,000 messages).
func BenchmarkHeldMessageMemory(b *testing.B) {
	const n = 20000
	for _, mode := range heldModes {
		b.Run(mode, func(b *testing.B) {
			var perMsg, bodyLen float64
			for i := 0; i < b.N; i++ {
				p, l := heldMemory(b, n, mode)
				perMsg += p
				bodyLen = l
			}
			b.ReportMetric(perMsg/float64(b.N), "B/held")
			b.ReportMetric(bodyLen, "body-B")
		})
	}
}

// TestHeldMessageMemory bounds what a held message costs in each of
// heldModes (BenchmarkHeldMessageMemory measures it): about 400 bytes
// with an 85-byte body; 1,400 held for an ETA and 3,700 or more waiting
// (a goroutine each) before messages were kept frozen and queued.
func TestHeldMessageMemory(t *testing.T) {
	const bound = 600
	for _, mode := range heldModes {
		t.Run(mode, func(t *testing.T) {
			perMsg, _ := heldMemory(t, 20000, mode)
			t.Logf("%.0f bytes per message", perMsg)
			if perMsg > bound {
				t.Errorf("%.0f bytes per held message, want at most %d", perMsg, bound)
			}
		})
	}
}

func heldMemory(tb testing.TB, n int, mode string) (perMsg, bodyLen float64) {
	b, _ := tb.(*testing.B)
	eta := mode == "eta"
	release := make(chan struct{})
	reg := tasks.NewRegistry()
	reg.MustRegister("t.block", func(ctx context.Context) (string, error) { <-release; return "", nil })
	var opts []tasks.Option
	if mode == "ratelimited" {
		opts = append(opts, tasks.RateLimit("1/h"))
	}
	reg.MustRegister("t.add", func(ctx context.Context, x, y int) (int, error) { return x + y, nil }, opts...)
	// Logs at INFO to nowhere: the fixture's debug log buffer would count.
	quiet := zerolog.New(io.Discard).Level(zerolog.InfoLevel)
	f := newFixture(tb, reg, worker.Config{PrefetchMultiplier: -1, Backend: newMemBackend(), Logger: &quiet})
	defer close(release)
	later := time.Now().Add(time.Hour)
	if mode == "due" {
		later = time.Now().Add(time.Second)
	}
	switch mode {
	case "prefetched", "due":
		f.b.PublishMessage(testQueue, &protocol.Message{ID: "blocker", Task: "t.block"})
	case "ratelimited":
		// Takes the hour's token.
		f.b.PublishMessage(testQueue, &protocol.Message{ID: "first", Task: "t.add", Args: []any{0, 0}})
	}
	var sample []byte
	for i := 0; i < n; i++ {
		m := &protocol.Message{ID: protocol.NewUUID(), Task: "t.add", Args: []any{i, 2}}
		if eta || mode == "due" {
			m.ETA = &later
		}
		env, err := protocol.Encode(m, protocol.EncodeOptions{})
		if err != nil {
			tb.Fatal(err)
		}
		sample = env.Body
		f.b.Publish(testQueue, env)
	}
	before := liveAfterGC()
	if b != nil {
		b.ResetTimer()
	}
	f.start()
	brokertest.WaitFor(tb, time.Minute, func() bool { return f.b.Len(testQueue) == 0 }, "every message delivered")
	// Snapshot, not the inspect commands: their replies are kept by the
	// fake broker and would count here.
	brokertest.WaitFor(tb, time.Minute, func() bool {
		s := f.w.Snapshot()
		return eta && s.Scheduled == n || !eta && s.Reserved == n
	}, fmt.Sprintf("%d held", n))
	after := liveAfterGC()
	if b != nil {
		b.StopTimer()
	}
	return (float64(after) - float64(before)) / float64(n), float64(len(sample))
}

// TestMemoryReturnsAfterLargeMessages: once a burst of 6 messages of 50
// MB each is done with, the live heap is back where it was: no pool, job
// list or logger keeps the bodies or their decoded arguments, not even the
// last message's. (What kept the last one until the next message came was
// the in-memory broker's queue array; amqp091 keeps the last body of each
// channel so: docs/hostile-input.md.)
func TestMemoryReturnsAfterLargeMessages(t *testing.T) {
	const size = 50_000_000
	reg := tasks.NewRegistry()
	reg.MustRegister("t.len", func(ctx context.Context, s string) (int, error) { return len(s), nil })
	f := startWorker(t, reg, worker.Config{Concurrency: 2})
	f.publish("warm", "t.len", "x")
	f.result("warm", backends.StatusSuccess)
	before := heapAfterGC()
	big := strings.Repeat("x", size)
	for i := range 6 {
		id := fmt.Sprintf("big%d", i)
		f.publish(id, "t.len", big)
		f.result(id, backends.StatusSuccess)
	}
	big = ""
	brokertest.WaitFor(t, patience, func() bool { return f.b.Unacked() == 0 }, "every message acked")
	burst := heapAfterGC()
	f.publish("small", "t.len", "y")
	f.result("small", backends.StatusSuccess)
	after := heapAfterGC()
	t.Logf("live heap before %.1f MiB, after 6 x 50 MB %.1f MiB, after one more message %.1f MiB",
		float64(before)/(1<<20), float64(burst)/(1<<20), float64(after)/(1<<20))
	if burst > before+8<<20 {
		t.Fatalf("live heap %d bytes after the burst, %d before: a large message is kept", burst, before)
	}
	if after > before+8<<20 {
		t.Fatalf("live heap %d bytes after the next message, %d before: a large message is kept", after, before)
	}
}
