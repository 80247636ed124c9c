package worker

import (
	"context"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/celeryworker/gocelery/protocol"
)

// events sends Celery's monitoring events to the celeryev exchange, for
// Flower and `celery events`: worker-online/heartbeat/offline always, task
// events with -E (or after the enable_events control command). Events are
// best effort, as in Celery: when the send buffer is full they are
// dropped, never slowing tasks down.
type events struct {
	w         *Worker
	running   atomic.Bool
	stopped   chan struct{} // closed when run returns
	enabled   atomic.Bool
	queue     chan map[string]any
	dropped   atomic.Int64
	freq      time.Duration
	utcoffset int
}

func newEvents(w *Worker, enabled bool) *events {
	_, off := time.Now().Zone()
	e := &events{w: w, queue: make(chan map[string]any, 8192), freq: 2 * time.Second, stopped: make(chan struct{}),
		// Python's time.timezone // 3600: hours west of UTC, floored.
		utcoffset: int(math.Floor(float64(-off) / 3600))}
	e.enabled.Store(enabled)
	return e
}

func (e *events) base(typ string) map[string]any {
	return map[string]any{
		"type":      typ,
		"hostname":  e.w.nodeName,
		"timestamp": float64(time.Now().UnixNano()) / 1e9,
		"utcoffset": int64(e.utcoffset),
		"pid":       int64(os.Getpid()),
		"clock":     e.w.tickClock(),
	}
}

// task queues a task event if task events are on.
func (e *events) task(typ, id string, fields map[string]any) {
	if !e.enabled.Load() {
		return
	}
	ev := e.base(typ)
	ev["uuid"] = id
	for k, v := range fields {
		ev[k] = v
	}
	e.send(ev)
}

func (e *events) send(ev map[string]any) {
	select {
	case e.queue <- ev:
	default:
		e.dropped.Add(1)
	}
}

func (e *events) workerEvent(typ string) map[string]any {
	ev := e.base(typ)
	ev["freq"] = e.freq.Seconds()
	ev["active"] = e.w.running.Load()
	ev["processed"] = e.w.processed.Load()
	ev["loadavg"] = loadavg()
	ev["sw_ident"] = "gocelery"
	ev["sw_ver"] = "5.7.0"
	ev["sw_sys"] = strings.ToUpper(runtime.GOOS[:1]) + runtime.GOOS[1:]
	return ev
}

// run publishes queued events and a heartbeat every freq until the worker
// stops taking work.
func (e *events) run() {
	e.running.Store(true)
	defer close(e.stopped)
	tick := time.NewTicker(e.freq)
	defer tick.Stop()
	for {
		select {
		case ev := <-e.queue:
			batch := []any{ev}
		drain:
			for len(batch) < 100 {
				select {
				case ev := <-e.queue:
					batch = append(batch, ev)
				default:
					break drain
				}
			}
			e.publish(batch)
		case <-tick.C:
			if !e.w.cfg.WithoutHeartbeat {
				e.publish([]any{e.workerEvent("worker-heartbeat")})
			}
		case <-e.w.quit:
			return
		}
	}
}

// publish sends one event, or several as a list on task.multi as Python's
// worker does, on the live connection; with none, events are dropped.
func (e *events) publish(batch []any) {
	c := e.w.currentConn()
	if c == nil {
		e.dropped.Add(int64(len(batch)))
		return
	}
	var body any = batch
	key := "task.multi"
	if len(batch) == 1 {
		body = batch[0]
		key = strings.ReplaceAll(batch[0].(map[string]any)["type"].(string), "-", ".")
	}
	payload, err := protocol.MarshalJSON(body)
	if err != nil {
		e.w.log.Warn().Err(err).Msg("cannot encode event")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = c.PublishEvent(ctx, key, &protocol.Envelope{
		ContentType: protocol.ContentTypeJSON, ContentEncoding: "utf-8", DeliveryMode: 1,
		Headers: map[string]any{"hostname": e.w.nodeName}, Body: payload,
	})
	if err != nil && c.Err() == nil {
		e.w.log.Warn().Err(err).Msg("cannot send event")
	}
}

// online announces the worker on a new connection.
func (e *events) online() {
	e.publish([]any{e.workerEvent("worker-online")})
}

// offline tells monitors the worker is gone, flushing queued events first.
func (e *events) offline() {
	if e.running.Load() {
		// Let run finish the batch it holds, so no event is lost or sent
		// after worker-offline.
		select {
		case <-e.stopped:
		case <-time.After(5 * time.Second):
		}
	}
	var batch []any
	for {
		select {
		case ev := <-e.queue:
			batch = append(batch, ev)
			continue
		default:
		}
		break
	}
	if len(batch) > 0 {
		e.publish(batch)
	}
	e.publish([]any{e.workerEvent("worker-offline")})
}

func loadavg() []any {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return []any{0.0, 0.0, 0.0}
	}
	f := strings.Fields(string(b))
	out := make([]any, 0, 3)
	for i := 0; i < 3 && i < len(f); i++ {
		v, _ := parseFloat(f[i])
		out = append(out, math.Ceil(v*100)/100)
	}
	return out
}

func parseFloat(s string) (float64, error) { return strconv.ParseFloat(s, 64) }
