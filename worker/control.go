package worker

import (
	"context"
	"fmt"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/celeryworker/gocelery/amqp"
	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
)

// control serves Celery's remote control commands (celery control / inspect)
// sent to the worker's pidbox queue, for the life of one connection.
// It starts consuming before it returns, so a command sent as soon as the
// worker has answered a task is not lost (the fanout drops messages for
// queues not yet bound).
func (w *Worker) control(conn *amqp.Conn) {
	ds, err := conn.ConsumeControl(w.nodeName)
	if err != nil {
		if !conn.IsClosed() {
			w.log.Error().Err(err).Msg("remote control disabled: cannot consume the pidbox queue")
		}
		return
	}
	go func() {
		for d := range ds {
			w.controlMessage(conn, &d)
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

func (w *Worker) controlMessage(conn *amqp.Conn, d *amqp.Delivery) {
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
	err = conn.Publish(ctx, exchange, key, amqp091.Publishing{
		ContentType:     protocol.ContentTypeJSON,
		ContentEncoding: "utf-8",
		DeliveryMode:    1,
		Headers:         amqp091.Table{"ticket": req.ticket, "clock": w.tickClock()},
		Body:            payload,
	})
	if err != nil {
		w.log.Warn().Err(err).Str("method", req.method).Msg("cannot send remote control reply")
	}
}

// dispatchControl runs one command and returns its reply value.
func (w *Worker) dispatchControl(req controlRequest) any {
	a := req.arguments
	switch req.method {
	case "ping":
		return map[string]any{"ok": "pong"}
	case "revoke", "terminate":
		ids := stringList(a["task_id"])
		terminate, _ := a["terminate"].(bool)
		if req.method == "terminate" {
			terminate = true
		}
		return w.revoke(ids, terminate)
	case "revoked":
		ids := w.revoked.IDs()
		out := make([]any, len(ids))
		for i, id := range ids {
			out[i] = id
		}
		return out
	case "registered":
		names := w.reg.Names()
		out := make([]any, len(names))
		for i, n := range names {
			out[i] = n
		}
		return out
	case "rate_limit":
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
	case "clock":
		return map[string]any{"clock": w.tickClock()}
	case "hello":
		return map[string]any{"revoked": w.revoked.Stamps(), "clock": w.tickClock()}
	case "active":
		return w.activeInfo()
	case "enable_events":
		w.events.enabled.Store(true)
		return map[string]any{"ok": "task events enabled"}
	case "disable_events":
		w.events.enabled.Store(false)
		return map[string]any{"ok": "task events disabled"}
	case "heartbeat":
		ev := w.events.workerEvent("worker-heartbeat")
		ev["freq"] = 5.0
		w.events.send(ev)
		return nil
	case "stats":
		return w.stats()
	case "reserved":
		return w.reservedInfo()
	case "scheduled":
		return w.scheduledInfo()
	case "query_task":
		return w.queryTask(stringList(a["ids"]))
	case "conf":
		return map[string]any{
			"broker_url": amqp.Redacted(w.cfg.BrokerURL), "worker_concurrency": int64(w.cfg.Concurrency),
			"worker_prefetch_multiplier": int64(w.cfg.PrefetchMultiplier), "task_track_started": w.cfg.TrackStarted,
			"result_extended": w.cfg.ResultExtended, "worker_send_task_events": w.events.enabled.Load(),
			"task_time_limit": nilIfZero(w.cfg.TimeLimit), "task_soft_time_limit": nilIfZero(w.cfg.SoftTimeLimit),
		}
	case "shutdown":
		w.log.Warn().Msg("Got shutdown from remote")
		go func() {
			if err := w.Shutdown(context.Background()); err != nil {
				w.log.Error().Err(err).Msg("shutdown")
			}
		}()
		return nil
	case "active_queues":
		return w.activeQueues()
	}
	return map[string]any{"error": fmt.Sprintf("No such control command: %s", req.method)}
}

// revoke flags ids as revoked, stores REVOKED for each (as Celery 5.6.2+
// does) and, with terminate, cancels the ones running here.
func (w *Worker) revoke(ids []string, terminate bool) any {
	w.revoked.Add(ids...)
	for _, id := range ids {
		if w.backend != nil {
			r := &backends.Result{TaskID: id, Status: backends.StatusRevoked,
				Result: backends.TaskRevoked("revoked").Value(), DateDone: time.Now().UTC()}
			w.store(context.Background(), &w.log, r)
		}
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

// requestInfo describes a task as inspect's request info does.
func (w *Worker) requestInfo(m *protocol.Message, d *amqp.Delivery, start *time.Time, acknowledged bool) map[string]any {
	var ts any
	if start != nil {
		ts = float64(start.UnixNano()) / 1e9
	}
	return map[string]any{
		"id": m.ID, "name": m.Task, "args": m.Args, "kwargs": m.Kwargs,
		"type": m.Task, "hostname": w.nodeName, "time_start": ts,
		"acknowledged": acknowledged, "worker_pid": nil,
		"delivery_info": map[string]any{"exchange": d.Exchange, "routing_key": d.RoutingKey,
			"priority": int64(m.Priority), "redelivered": d.Redelivered},
	}
}

func (w *Worker) activeInfo() []any {
	out := []any{}
	w.active.Range(func(_, v any) bool {
		a := v.(*activeTask)
		d := amqp.Delivery{Exchange: a.exchange, RoutingKey: a.routingKey, Redelivered: a.redelivered}
		out = append(out, w.requestInfo(a.msg, &d, &a.start, !a.acksLate))
		return true
	})
	sortByID(out, func(v any) string { return v.(map[string]any)["id"].(string) })
	return out
}

// jobsIn lists the accepted jobs in state.
func (w *Worker) jobsIn(state int32) []*job {
	var out []*job
	w.known.Range(func(k, _ any) bool {
		if j := k.(*job); j.state.Load() == state {
			out = append(out, j)
		}
		return true
	})
	sort.Slice(out, func(a, b int) bool { return out[a].msg.ID < out[b].msg.ID })
	return out
}

func (w *Worker) reservedInfo() []any {
	out := []any{}
	for _, j := range w.jobsIn(stateReserved) {
		out = append(out, w.requestInfo(j.msg, &j.d, nil, false))
	}
	return out
}

func (w *Worker) scheduledInfo() []any {
	out := []any{}
	for _, j := range w.jobsIn(stateScheduled) {
		out = append(out, map[string]any{"eta": protocol.FormatTime(*j.msg.ETA), "priority": int64(6),
			"request": w.requestInfo(j.msg, &j.d, nil, false)})
	}
	return out
}

// queryTask answers query_task: {id: [state, request info]}.
func (w *Worker) queryTask(ids []string) map[string]any {
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	out := map[string]any{}
	w.known.Range(func(k, _ any) bool {
		j := k.(*job)
		if want[j.msg.ID] {
			state := "reserved"
			if j.state.Load() == stateActive {
				state = "active"
			}
			out[j.msg.ID] = []any{state, w.requestInfo(j.msg, &j.d, nil, j.state.Load() == stateActive && !j.task.Options.AcksLate)}
		}
		return true
	})
	return out
}

func sortByID(list []any, id func(any) string) {
	sort.Slice(list, func(i, j int) bool { return id(list[i]) < id(list[j]) })
}

// stats answers `celery inspect stats` with the fields Flower reads.
func (w *Worker) stats() map[string]any {
	total := map[string]any{}
	w.totals.Range(func(k, v any) bool {
		total[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	broker := map[string]any{"transport": "amqp", "insist": false, "ssl": false,
		"connect_timeout": int64(10), "transport_options": map[string]any{}, "login_method": "PLAIN",
		"uri_prefix": nil, "heartbeat": 60.0, "failover_strategy": "round-robin", "alternates": []any{}}
	if u, err := amqp.ParseURL(w.cfg.BrokerURL); err == nil {
		broker["hostname"] = u.Host
		broker["userid"] = u.Username
		broker["virtual_host"] = u.Vhost
		broker["port"] = int64(u.Port)
		broker["ssl"] = u.Scheme == "amqps"
	}
	soft, hard := w.cfg.SoftTimeLimit.Seconds(), w.cfg.TimeLimit.Seconds()
	return map[string]any{
		"total":  total,
		"pid":    int64(os.Getpid()),
		"clock":  strconv.FormatInt(w.clock.Load(), 10),
		"uptime": int64(time.Since(w.started).Seconds()),
		"pool": map[string]any{"implementation": "gocelery:goroutines", "max-concurrency": int64(w.cfg.Concurrency),
			"processes": []any{int64(os.Getpid())}, "max-tasks-per-child": nil,
			"put-guarded-by-semaphore": false, "timeouts": []any{soft, hard}},
		"broker":         broker,
		"prefetch_count": int64(w.prefetch + int(w.held.Load())),
		"rusage":         "N/A",
	}
}

// activeQueues answers `celery inspect active_queues` in kombu's form.
func (w *Worker) activeQueues() []any {
	out := make([]any, 0, len(w.cfg.Queues))
	for _, q := range w.cfg.Queues {
		out = append(out, map[string]any{
			"name": q, "routing_key": q, "durable": true, "exclusive": false, "auto_delete": false,
			"no_ack": false, "alias": nil, "bindings": []any{}, "no_declare": nil, "expires": nil,
			"message_ttl": nil, "max_length": nil, "max_length_bytes": nil, "max_priority": nil,
			"queue_arguments": nil, "binding_arguments": nil, "consumer_arguments": nil,
			"exchange": map[string]any{"name": q, "type": "direct", "arguments": nil, "durable": true,
				"passive": false, "auto_delete": false, "delivery_mode": nil, "no_declare": false},
		})
	}
	return out
}

func nilIfZero(d time.Duration) any {
	if d == 0 {
		return nil
	}
	return d.Seconds()
}
