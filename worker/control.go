package worker

import (
	"context"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
)

// control serves Celery's remote control commands (celery control / inspect)
// sent to the worker's pidbox queue, for the life of one connection.
// It starts consuming before it returns, so a command sent as soon as the
// worker has answered a task is not lost (the fanout drops messages for
// queues not yet bound).
func (w *Worker) control(ctx context.Context, conn broker.Conn) {
	ds, err := conn.ConsumeControl(ctx, w.nodeName)
	if err != nil {
		if conn.Err() == nil {
			w.log.Error().Err(err).Msg("remote control disabled: cannot consume the pidbox queue")
		}
		return
	}
	go func() {
		for env := range ds {
			w.controlMessage(conn, env)
		}
	}()
}

// controlRequest is a pidbox request body.
type controlRequest struct {
	method      string
	arguments   map[string]any
	destination []string
	replyTo     map[string]any
	ticket      string
}

func (w *Worker) controlMessage(conn broker.Conn, d *protocol.Envelope) {
	body, err := protocol.Unmarshal(d.ContentType, d.Body, w.cfg.Accept)
	if err != nil {
		w.log.Warn().Err(err).Msg("ignoring undecodable remote control message")
		return
	}
	m, ok := body.(map[string]any)
	if !ok {
		w.log.Warn().Msg("ignoring remote control message: body is not a mapping")
		return
	}
	if c, ok := toInt(d.Headers["clock"]); ok {
		w.bumpClock(c)
	}
	req := controlRequest{}
	req.method, _ = m["method"].(string)
	req.arguments, _ = m["arguments"].(map[string]any)
	req.replyTo, _ = m["reply_to"].(map[string]any)
	req.ticket, _ = m["ticket"].(string)
	if dest, ok := m["destination"].([]any); ok {
		for _, n := range dest {
			if s, ok := n.(string); ok {
				req.destination = append(req.destination, s)
			}
		}
		if !containsString(req.destination, w.nodeName) {
			return
		}
	}
	if p, ok := m["pattern"].(string); ok && p != "" && len(req.destination) == 0 {
		if !matchNode(p, w.nodeName) {
			return
		}
	}
	w.log.Debug().Str("method", req.method).Msg("remote control command")
	reply := w.dispatchControl(req)
	if req.replyTo == nil || req.ticket == "" || reply == nil {
		return
	}
	exchange, _ := req.replyTo["exchange"].(string)
	key, _ := req.replyTo["routing_key"].(string)
	payload, err := protocol.MarshalJSON(map[string]any{w.nodeName: reply})
	if err != nil {
		w.log.Error().Err(err).Str("method", req.method).Msg("cannot encode remote control reply")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = conn.PublishReply(ctx, exchange, key, &protocol.Envelope{
		ContentType:     protocol.ContentTypeJSON,
		ContentEncoding: "utf-8",
		DeliveryMode:    1,
		Headers:         map[string]any{"ticket": req.ticket, "clock": w.tickClock()},
		Body:            payload,
	})
	if err != nil {
		w.log.Warn().Err(err).Str("method", req.method).Msg("cannot send remote control reply")
	}
}

// controlHandler runs one remote control command and returns its reply
// value (nil: no reply, as Celery's heartbeat and shutdown).
type controlHandler func(w *Worker, a map[string]any) any

// controlCommands are the commands this worker answers, by Celery's
// names; inspect views are in inspect.go.
var controlCommands map[string]controlHandler

func init() {
	controlCommands = map[string]controlHandler{
		"ping": func(*Worker, map[string]any) any { return map[string]any{"ok": "pong"} },
		"revoke": func(w *Worker, a map[string]any) any {
			return w.revoke(stringList(a["task_id"]), a["terminate"] == true)
		},
		"terminate":  func(w *Worker, a map[string]any) any { return w.revoke(stringList(a["task_id"]), true) },
		"rate_limit": (*Worker).controlRateLimit,
		"clock":      func(w *Worker, _ map[string]any) any { return map[string]any{"clock": w.tickClock()} },
		"hello": func(w *Worker, _ map[string]any) any {
			return map[string]any{"revoked": w.revoked.Stamps(), "clock": w.tickClock()}
		},
		"enable_events": func(w *Worker, _ map[string]any) any {
			w.events.enabled.Store(true)
			return map[string]any{"ok": "task events enabled"}
		},
		"disable_events": func(w *Worker, _ map[string]any) any {
			w.events.enabled.Store(false)
			return map[string]any{"ok": "task events disabled"}
		},
		"heartbeat": (*Worker).controlHeartbeat,
		"shutdown":  (*Worker).controlShutdown,
		// inspect
		"active":        func(w *Worker, _ map[string]any) any { return w.activeInfo() },
		"reserved":      func(w *Worker, _ map[string]any) any { return w.reservedInfo() },
		"scheduled":     func(w *Worker, _ map[string]any) any { return w.scheduledInfo() },
		"query_task":    func(w *Worker, a map[string]any) any { return w.queryTask(stringList(a["ids"])) },
		"revoked":       func(w *Worker, _ map[string]any) any { return anyList(w.revoked.IDs()) },
		"registered":    func(w *Worker, _ map[string]any) any { return anyList(w.reg.Names()) },
		"stats":         func(w *Worker, _ map[string]any) any { return w.stats() },
		"conf":          func(w *Worker, _ map[string]any) any { return w.conf() },
		"active_queues": func(w *Worker, _ map[string]any) any { return w.activeQueues() },
	}
}

// dispatchControl runs one command and returns its reply value.
func (w *Worker) dispatchControl(req controlRequest) any {
	h, ok := controlCommands[req.method]
	if !ok {
		return map[string]any{"error": fmt.Sprintf("No such control command: %s", req.method)}
	}
	return h(w, req.arguments)
}

func (w *Worker) controlRateLimit(a map[string]any) any {
	name, _ := a["task_name"].(string)
	if _, ok := w.reg.Lookup(name); !ok {
		return map[string]any{"error": "unknown task"}
	}
	limit := fmt.Sprint(a["rate_limit"])
	if a["rate_limit"] == nil {
		limit = ""
	}
	if err := w.SetRateLimit(name, limit); err != nil {
		return map[string]any{"error": "Invalid rate limit string: " + err.Error()}
	}
	if rate, _ := tasks.ParseRateLimit(limit); rate == 0 {
		return map[string]any{"ok": "rate limit disabled successfully"}
	}
	return map[string]any{"ok": "new rate limit set successfully"}
}

func (w *Worker) controlHeartbeat(map[string]any) any {
	ev := w.events.workerEvent("worker-heartbeat")
	ev["freq"] = 5.0
	w.events.send(ev)
	return nil
}

// controlShutdown starts a warm shutdown bounded by ShutdownTimeout, as
// the signal does; Run returns when it is done.
func (w *Worker) controlShutdown(map[string]any) any {
	w.log.Warn().Msg("Got shutdown from remote")
	go func() {
		ctx, cancel := w.shutdownContext()
		defer cancel()
		if err := w.Shutdown(ctx); err != nil {
			w.log.Error().Err(err).Msg("shutdown")
		}
	}()
	return nil
}

func anyList(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// revoke flags ids as revoked, stores REVOKED for each (as Celery 5.6.2+
// does) and, with terminate, cancels the ones running here.
func (w *Worker) revoke(ids []string, terminate bool) any {
	w.revoked.Add(ids...)
	for _, id := range ids {
		if _, running := w.active.Load(id); running && terminate {
			continue // it stores REVOKED ("terminated") itself when it stops
		}
		// In the background: the control loop must not wait for Redis.
		r := &backends.Result{TaskID: id, Status: backends.StatusRevoked,
			Result: backends.TaskRevoked("revoked").Value(), DateDone: time.Now().UTC()}
		w.storeThen(&w.log, r, nil)
	}
	w.log.Info().Strs("ids", ids).Bool("terminate", terminate).Msgf("Tasks flagged as revoked: %s", strings.Join(ids, ", "))
	if terminate {
		var hit []string
		for _, id := range ids {
			if w.terminate(id) {
				hit = append(hit, id)
			}
		}
		if len(hit) == 0 {
			return map[string]any{"ok": "terminate: tasks unknown"}
		}
		return map[string]any{"ok": "terminate: " + pySet(hit)}
	}
	return map[string]any{"ok": "tasks " + pySet(ids) + " flagged as revoked"}
}

func pySet(ids []string) string {
	q := make([]string, len(ids))
	for i, id := range ids {
		q[i] = "'" + id + "'"
	}
	return "{" + strings.Join(q, ", ") + "}"
}

func stringList(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		var out []string
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// matchNode matches a glob pattern (kombu's default matcher) against name.
func matchNode(pattern, name string) bool {
	ok, err := path.Match(pattern, name)
	return err == nil && ok
}

func toInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int64:
		return x, true
	case int32:
		return int64(x), true
	case int:
		return int64(x), true
	}
	return 0, false
}

func (w *Worker) bumpClock(other int64) {
	for {
		cur := w.clock.Load()
		if other <= cur || w.clock.CompareAndSwap(cur, other) {
			return
		}
	}
}

func (w *Worker) tickClock() int64 { return w.clock.Add(1) }
