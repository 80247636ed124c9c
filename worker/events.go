package worker

import (
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/celeryworker/gocelery/amqp"
	"github.com/celeryworker/gocelery/protocol"
)

// events sends Celery's monitoring events to the celeryev exchange, for
// Flower and `celery events`: worker-online/heartbeat/offline always, task
// events with -E (or after the enable_events control command). Events are
// best effort, as in Celery: when the send buffer is full they are
// dropped, never slowing tasks down.
type events struct {
	w         *Worker
	enabled   atomic.Bool
	queue     chan map[string]any
	dropped   atomic.Int64
	freq      time.Duration
	utcoffset int
}

func newEvents(w *Worker, enabled bool) *events {
	_, off := time.Now().Zone()
	e := &events{w: w, queue: make(chan map[string]any, 8192), freq: 2 * time.Second,
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
			e.publish([]any{e.workerEvent("worker-heartbeat")})
		case <-e.w.quit:
			return
		}
	}
}

// publish sends one event, or several as a list on task.multi as Python's
// worker does.
func (e *events) publish(batch []any) {
	c := e.w.currentConn()
	if c == nil || c.IsClosed() {
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
	err = c.PublishTransient(amqp.EventExchange, key, amqp091.Publishing{
		ContentType: protocol.ContentTypeJSON, ContentEncoding: "utf-8", DeliveryMode: 1,
		Headers: amqp091.Table{"hostname": e.w.nodeName}, Body: payload,
	})
	if err != nil && !c.IsClosed() {
		e.w.log.Warn().Err(err).Msg("cannot send event")
	}
}

// online announces the worker on a new connection.
func (e *events) online(c *amqp.Conn) {
	if err := c.DeclareEventExchange(); err != nil {
		e.w.log.Warn().Err(err).Msg("events disabled: cannot declare the celeryev exchange")
		return
	}
	e.publish([]any{e.workerEvent("worker-online")})
}

// offline tells monitors the worker is gone, flushing queued events first.
func (e *events) offline() {
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

// currentConn is the live broker connection, if any.
func (w *Worker) currentConn() *amqp.Conn {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.conn
}

func parseFloat(s string) (float64, error) { return strconv.ParseFloat(s, 64) }
