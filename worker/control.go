package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	method    string
	arguments map[string]any
	replyTo   map[string]any
	ticket    string
}

// noReply is the value of a command that answers nothing even when asked
// to (shutdown: Celery's worker leaves before it replies). Any other value,
// nil included, is sent when the request has a reply_to, as kombu's pidbox
// does (heartbeat's reply is None).
var noReply = new(struct{})

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
	if c, ok := protocol.Int(d.Headers["clock"]); ok {
		w.bumpClock(c)
	}
	req := controlRequest{}
	req.method, _ = m["method"].(string)
	req.arguments, _ = m["arguments"].(map[string]any)
	req.replyTo, _ = m["reply_to"].(map[string]any)
	req.ticket, _ = m["ticket"].(string)
	mine, err := w.addressed(m)
	if err != nil {
		// kombu's pidbox raises for an unknown matcher; Celery's worker logs
		// it and answers nothing.
		w.log.Error().Err(err).Str("method", req.method).Msg("Control command error")
		return
	}
	if !mine {
		return
	}
	w.log.Debug().Str("method", req.method).Msg("remote control command")
	reply := w.dispatchControl(req)
	if req.replyTo == nil || req.ticket == "" || reply == noReply {
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

// addressed reports whether a request is for this node, as kombu's pidbox
// decides: a non-empty destination must name it; otherwise a pattern must
// match it with the request's matcher ("glob", the default, or "pcre");
// otherwise every node takes it. An unknown matcher is an error.
//
// One deliberate difference: kombu applies a pattern only when a matcher
// is named too (a bare pattern reaches every node); here a bare pattern is
// a glob. Celery's own client never sends one without the other.
func (w *Worker) addressed(m map[string]any) (bool, error) {
	if dest := stringList(m["destination"]); len(dest) > 0 {
		return slices.Contains(dest, w.nodeName), nil
	}
	pattern, _ := m["pattern"].(string)
	if pattern == "" {
		return true, nil
	}
	matcher, _ := m["matcher"].(string)
	return matchNode(pattern, matcher, w.nodeName)
}

// controlHandler runs one remote control command and returns its reply
// value (noReply: none at all).
type controlHandler func(w *Worker, a map[string]any) any

// controlCommands are the commands this worker answers, by Celery's
// names and aliases; the inspect views are in inspect.go.
var controlCommands map[string]controlHandler

func init() {
	controlCommands = map[string]controlHandler{
		"ping": func(*Worker, map[string]any) any { return okReply("pong") },
		"revoke": func(w *Worker, a map[string]any) any {
			return w.revoke(stringList(a["task_id"]), truthy(a["terminate"]))
		},
		"terminate":                 func(w *Worker, a map[string]any) any { return w.revoke(stringList(a["task_id"]), true) },
		"revoke_by_stamped_headers": (*Worker).controlRevokeByStampedHeaders,
		"rate_limit":                (*Worker).controlRateLimit,
		"time_limit":                (*Worker).controlTimeLimit,
		"clock":                     func(w *Worker, _ map[string]any) any { return map[string]any{"clock": w.tickClock()} },
		"hello":                     (*Worker).controlHello,
		// Gossip (elections) is not implemented; Celery's worker with gossip
		// answers None.
		"election":       func(*Worker, map[string]any) any { return nil },
		"enable_events":  (*Worker).controlEnableEvents,
		"disable_events": (*Worker).controlDisableEvents,
		"heartbeat":      (*Worker).controlHeartbeat,
		"shutdown":       (*Worker).controlShutdown,
		// pool
		"pool_grow":   (*Worker).controlPoolGrow,
		"pool_shrink": (*Worker).controlPoolShrink,
		"autoscale":   (*Worker).controlAutoscale,
		// Celery answers so unless worker_pool_restarts is set; runners
		// hold no imported code to reload.
		"pool_restart": func(*Worker, map[string]any) any { return pyError("ValueError", "Pool restarts not enabled") },
		// queues
		"add_consumer":    (*Worker).controlAddConsumer,
		"cancel_consumer": (*Worker).controlCancelConsumer,
		// inspect
		"active":        func(w *Worker, a map[string]any) any { return w.activeInfo(truthy(a["safe"])) },
		"reserved":      func(w *Worker, _ map[string]any) any { return w.reservedInfo() },
		"scheduled":     func(w *Worker, _ map[string]any) any { return w.scheduledInfo() },
		"query_task":    func(w *Worker, a map[string]any) any { return w.queryTask(stringList(a["ids"])) },
		"revoked":       func(w *Worker, _ map[string]any) any { return anyList(w.revoked.IDs()) },
		"registered":    func(w *Worker, a map[string]any) any { return w.registered(stringList(a["taskinfoitems"])) },
		"stats":         func(w *Worker, _ map[string]any) any { return w.stats() },
		"conf":          func(w *Worker, _ map[string]any) any { return w.conf() },
		"active_queues": func(w *Worker, _ map[string]any) any { return w.activeQueues() },
		"report":        func(w *Worker, _ map[string]any) any { return okReply(w.report()) },
		"memsample":     (*Worker).controlMemsample,
		"memdump":       (*Worker).controlMemdump,
		"objgraph": func(*Worker, map[string]any) any {
			return pyError("NotImplementedError", "objgraph graphs Python objects; a Go worker has none")
		},
	}
	// Celery's old names for the inspect views.
	for alias, name := range map[string]string{"dump_conf": "conf", "dump_schedule": "scheduled",
		"dump_reserved": "reserved", "dump_active": "active", "dump_revoked": "revoked", "dump_tasks": "registered"} {
		controlCommands[alias] = controlCommands[name]
	}
}

// dispatchControl runs one command and returns its reply value. A command
// that panics is answered with an error, as kombu answers a command that
// raises.
func (w *Worker) dispatchControl(req controlRequest) (reply any) {
	h, found := controlCommands[req.method]
	if !found {
		// As kombu's pidbox answers: the handler lookup raised KeyError.
		w.log.Error().Msgf("No such control command: %s", req.method)
		return pyError("KeyError", req.method)
	}
	defer func() {
		if p := recover(); p != nil {
			w.log.Error().Str("method", req.method).Msgf("pidbox command error: %v", p)
			reply = map[string]any{"error": fmt.Sprint(p)}
		}
	}()
	return h(w, req.arguments)
}

func okReply(v string) map[string]any { return map[string]any{"ok": v} }

// pyError is the reply kombu sends for a command that raised: the repr of
// the exception.
func pyError(typ, msg string) map[string]any {
	return map[string]any{"error": typ + "(" + protocol.PyRepr(msg) + ")"}
}

// controlState is what remote control commands changed at run time.
type controlState struct {
	// timeLimits replace a task's own limits (the time_limit command); read
	// for every task run, so copied on write rather than locked.
	timeLimits atomic.Pointer[map[string]timeLimitOverride]

	mu sync.Mutex
	// rateLimits are the rate limits set by rate_limit, for registered
	// ("" means none).
	rateLimits map[string]string
	// revokedStamps are the stamped header values revoked by
	// revoke_by_stamped_headers, by header name.
	revokedStamps map[string][]any
	memSamples    []string
}

// timeLimitOverride is a task's limits as time_limit set them; 0 is none.
// The reprs are what registered shows.
type timeLimitOverride struct {
	hard, soft         time.Duration
	hardRepr, softRepr string
}

func (c *controlState) timeLimit(task string) (timeLimitOverride, bool) {
	m := c.timeLimits.Load()
	if m == nil {
		return timeLimitOverride{}, false
	}
	o, found := (*m)[task]
	return o, found
}

func (c *controlState) setTimeLimit(task string, o timeLimitOverride) {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := map[string]timeLimitOverride{task: o}
	if m := c.timeLimits.Load(); m != nil {
		for k, v := range *m {
			if k != task {
				next[k] = v
			}
		}
	}
	c.timeLimits.Store(&next)
}

func (c *controlState) rateLimit(task string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, found := c.rateLimits[task]
	return r, found
}

func (w *Worker) controlRateLimit(a map[string]any) any {
	name, _ := a["task_name"].(string)
	if _, found := w.reg.Lookup(name); !found {
		return map[string]any{"error": "unknown task"}
	}
	limit := fmt.Sprint(a["rate_limit"])
	if a["rate_limit"] == nil {
		limit = ""
	}
	if err := w.SetRateLimit(name, limit); err != nil {
		return map[string]any{"error": "Invalid rate limit string: " + err.Error()}
	}
	w.ctl.mu.Lock()
	if w.ctl.rateLimits == nil {
		w.ctl.rateLimits = map[string]string{}
	}
	w.ctl.rateLimits[name] = limit
	w.ctl.mu.Unlock()
	if rate, _ := tasks.ParseRateLimit(limit); rate == 0 {
		w.log.Info().Msgf("Rate limits disabled for tasks of type %s", name)
		return okReply("rate limit disabled successfully")
	}
	w.log.Info().Msgf("New rate limit for tasks of type %s: %s.", name, limit)
	return okReply("new rate limit set successfully")
}

// controlTimeLimit sets a task's hard and soft limits, both at once as
// Celery does (one left out is none): tasks started from now on use them
// in place of the task's own, unless their message sets limits.
func (w *Worker) controlTimeLimit(a map[string]any) any {
	name, _ := a["task_name"].(string)
	if _, found := w.reg.Lookup(name); !found {
		w.log.Error().Msgf("Change time limit attempt for unknown task %s", name)
		return map[string]any{"error": "unknown task"}
	}
	var o timeLimitOverride
	if s, found := argFloat(a["hard"]); found && s > 0 {
		o.hard, o.hardRepr = seconds(s), pyNumber(a["hard"], s)
	}
	if s, found := argFloat(a["soft"]); found && s > 0 {
		o.soft, o.softRepr = seconds(s), pyNumber(a["soft"], s)
	}
	w.ctl.setTimeLimit(name, o)
	w.log.Info().Msgf("New time limits for tasks of type %s: soft=%s hard=%s", name, orNone(o.softRepr), orNone(o.hardRepr))
	return okReply("time limits set successfully")
}

func orNone(s string) string {
	if s == "" {
		return "None"
	}
	return s
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// controlHello answers another node's mingle: the revoked ids (merging
// the ones it sends) and the clock; a node's own hello gets None.
func (w *Worker) controlHello(a map[string]any) any {
	from, _ := a["from_node"].(string)
	if from == w.nodeName {
		return nil
	}
	w.log.Info().Msgf("sync with %s", from)
	switch r := a["revoked"].(type) {
	case []any:
		w.revoked.Add(stringList(r)...)
	case map[string]any: // a LimitedSet's data from Celery before 5.7: the keys
		ids := make([]string, 0, len(r))
		for id := range r {
			ids = append(ids, id)
		}
		w.revoked.Add(ids...)
	}
	return map[string]any{"revoked": anyList(w.revoked.IDs()), "clock": w.tickClock()}
}

func (w *Worker) controlEnableEvents(map[string]any) any {
	if w.events.enabled.Swap(true) {
		return okReply("task events already enabled")
	}
	w.log.Info().Msg("Events of group {task} enabled by remote.")
	return okReply("task events enabled")
}

func (w *Worker) controlDisableEvents(map[string]any) any {
	if !w.events.enabled.Swap(false) {
		return okReply("task events already disabled")
	}
	w.log.Info().Msg("Events of group {task} disabled by remote.")
	return okReply("task events disabled")
}

// controlHeartbeat sends a worker-heartbeat at once; the reply (when one
// is asked for) is None, as Celery's.
func (w *Worker) controlHeartbeat(map[string]any) any {
	w.log.Debug().Msg("Heartbeat requested by remote.")
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
	return noReply
}

// controlPoolGrow adds n runners (default 1); the prefetch window follows.
func (w *Worker) controlPoolGrow(a map[string]any) any {
	if w.pool.autoscaling() {
		return map[string]any{"error": "pool_grow is not supported with autoscale. Adjust autoscale range instead."}
	}
	n := argInt(a["n"], 1)
	size := w.pool.growBy(n)
	w.log.Info().Int("runners", size).Msgf("Pool grown by %d runners by remote", n)
	w.updatePrefetch()
	return okReply("pool will grow")
}

// controlPoolShrink removes n runners (default 1) as they become idle,
// keeping at least one; the prefetch window follows.
func (w *Worker) controlPoolShrink(a map[string]any) any {
	if w.pool.autoscaling() {
		return map[string]any{"error": "pool_shrink is not supported with autoscale. Adjust autoscale range instead."}
	}
	n := argInt(a["n"], 1)
	size := w.pool.shrinkBy(n)
	w.log.Info().Int("runners", size).Msgf("Pool shrunk by %d runners by remote", n)
	w.updatePrefetch()
	return okReply("pool will shrink")
}

// controlAutoscale changes the autoscale range of a worker started with
// --autoscale; Celery refuses it otherwise.
func (w *Worker) controlAutoscale(a map[string]any) any {
	if !w.pool.autoscaling() {
		return pyError("ValueError", "Autoscale not enabled")
	}
	var maxP, minP *int
	if a["max"] != nil {
		v := argInt(a["max"], 0)
		maxP = &v
	}
	if a["min"] != nil {
		v := argInt(a["min"], 0)
		minP = &v
	}
	hi, lo := w.pool.setRange(maxP, minP)
	w.updatePrefetch()
	return okReply(fmt.Sprintf("autoscale now max=%d min=%d", hi, lo))
}

// controlAddConsumer starts consuming a queue, declared as for -Q. With a
// live connection it is done before the reply (so the reply is true, and
// a cancel_consumer right after cannot overtake it); without one, the
// next connection consumes it.
func (w *Worker) controlAddConsumer(a map[string]any) any {
	q, _ := a["queue"].(string)
	if q == "" {
		return map[string]any{"error": "add_consumer: no queue given"}
	}
	if w.currentConn() == nil {
		go func() {
			ctx, cancel := ioContext()
			defer cancel()
			if err := w.AddQueue(ctx, q); err != nil {
				w.log.Error().Err(err).Str("queue", q).Msg("add_consumer failed")
			}
		}()
		return okReply("add consumer " + q)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.AddQueue(ctx, q); err != nil {
		w.log.Error().Err(err).Str("queue", q).Msg("add_consumer failed")
		return map[string]any{"error": err.Error()}
	}
	return okReply("add consumer " + q)
}

// controlCancelConsumer stops consuming a queue before it replies;
// messages already taken from it still run.
func (w *Worker) controlCancelConsumer(a map[string]any) any {
	q, _ := a["queue"].(string)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.CancelQueue(ctx, q); err != nil {
		w.log.Error().Err(err).Str("queue", q).Msg("cancel_consumer failed")
	}
	return okReply("no longer consuming from " + q)
}

// controlMemsample samples the resident set size, in the humanized form
// Celery's memsample gives with psutil installed ("10.5MB"); None where
// the size cannot be read (Celery without psutil answers None too).
func (w *Worker) controlMemsample(map[string]any) any {
	rss, found := currentRSS()
	if !found {
		return nil
	}
	s := humanBytes(rss)
	w.ctl.mu.Lock()
	w.ctl.memSamples = append(w.ctl.memSamples, s)
	w.ctl.mu.Unlock()
	return s
}

// controlMemdump reports the samples taken by memsample since the last
// memdump, then the resident set size now, in Celery's text form.
func (w *Worker) controlMemdump(a map[string]any) any {
	rss, found := currentRSS()
	if !found {
		return "- rss: (unavailable on this platform).\n"
	}
	n := argInt(a["samples"], 10)
	w.ctl.mu.Lock()
	all := w.ctl.memSamples
	w.ctl.memSamples = nil
	w.ctl.mu.Unlock()
	var b strings.Builder
	if len(all) > 0 {
		b.WriteString("- rss (sample):\n")
		for _, s := range sampleOf(all, n) {
			fmt.Fprintf(&b, "-    > %s,\n", s)
		}
	}
	fmt.Fprintf(&b, "- rss (end): %s.\n", humanBytes(rss))
	return b.String()
}

// sampleOf picks n evenly spaced items, as Celery's debug.sample.
func sampleOf(x []string, n int) []string {
	if n <= 0 || len(x) <= n {
		return x
	}
	step := len(x) / n
	out := make([]string, 0, n)
	for i := 0; i < n && i*step < len(x); i++ {
		out = append(out, x[i*step])
	}
	return out
}

// currentRSS reads the resident set size in bytes (Linux).
func currentRSS() (int64, bool) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, false
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, false
	}
	return pages * int64(os.Getpagesize()), true
}

// humanBytes formats n as Celery's debug.humanbytes: "512b", "10KB",
// "12.346MB" (five significant digits).
func humanBytes(n int64) string {
	units := []struct {
		div  float64
		unit string
	}{{1 << 40, "TB"}, {1 << 30, "GB"}, {1 << 20, "MB"}, {1 << 10, "KB"}}
	f := float64(n)
	for _, u := range units {
		if f >= u.div {
			v := f / u.div
			if v == math.Trunc(v) {
				return strconv.FormatInt(int64(v), 10) + u.unit
			}
			return strconv.FormatFloat(v, 'g', 5, 64) + u.unit
		}
	}
	return strconv.FormatInt(n, 10) + "b"
}

// controlRevokeByStampedHeaders flags stamped header values as revoked:
// a task whose stamps carry one of them is discarded as revoked when a
// runner takes it; with terminate, running ones are terminated too.
// Headers come as {name: value or [values]} or as ["name=value", ...].
func (w *Worker) controlRevokeByStampedHeaders(a map[string]any) any {
	headers := map[string]any{}
	switch h := a["headers"].(type) {
	case map[string]any:
		headers = h
	case []any:
		for _, s := range stringList(h) {
			k, v, _ := strings.Cut(s, "=")
			headers[k] = v
		}
	case string:
		k, v, _ := strings.Cut(h, "=")
		headers[k] = v
	}
	w.ctl.mu.Lock()
	if w.ctl.revokedStamps == nil {
		w.ctl.revokedStamps = map[string][]any{}
	}
	for k, v := range headers {
		w.ctl.revokedStamps[k] = append(w.ctl.revokedStamps[k], listOf(v)...)
	}
	w.ctl.mu.Unlock()
	w.log.Info().Msgf("Headers flagged as revoked: %s", protocol.PyRepr(headers))
	if !truthy(a["terminate"]) {
		return okReply(fmt.Sprintf("headers %s flagged as revoked, but not terminated", protocol.PyRepr(headers)))
	}
	terminated := map[string][]any{}
	w.active.Range(func(_, v any) bool {
		t := v.(*activeTask)
		for k, want := range headers {
			for _, got := range stampValues(t.msg, k) {
				if containsValue(listOf(want), got) {
					if !containsValue(terminated[k], got) {
						terminated[k] = append(terminated[k], got)
					}
					w.terminate(t.msg.ID)
				}
			}
		}
		return true
	})
	if len(terminated) == 0 {
		return okReply(fmt.Sprintf("headers %s were not terminated", protocol.PyRepr(headers)))
	}
	// Celery formats its defaultdict of sets.
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range terminated {
			if !yield(k) {
				return
			}
		}
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		vals := make([]string, len(terminated[k]))
		for j, v := range terminated[k] {
			vals[j] = protocol.PyRepr(v)
		}
		slices.Sort(vals)
		parts[i] = protocol.PyRepr(k) + ": {" + strings.Join(vals, ", ") + "}"
	}
	return okReply("headers defaultdict(<class 'set'>, {" + strings.Join(parts, ", ") + "}) revoked")
}

// revokedByStamp reports the stamped header that revokes m, if any, as
// Celery's Request.revoked reads its stamps.
func (w *Worker) revokedByStamp(m *protocol.Message) (string, any, bool) {
	if len(m.StampedHeaders) == 0 {
		return "", nil, false
	}
	w.ctl.mu.Lock()
	defer w.ctl.mu.Unlock()
	if len(w.ctl.revokedStamps) == 0 {
		return "", nil, false
	}
	for _, h := range m.StampedHeaders {
		revoked, found := w.ctl.revokedStamps[h]
		if !found {
			continue
		}
		for _, v := range stampValues(m, h) {
			if containsValue(revoked, v) {
				return h, v, true
			}
		}
	}
	return "", nil, false
}

// stampValues are the values of m's stamp named h (a stamp may be a
// list), or none when m is not stamped with h.
func stampValues(m *protocol.Message, h string) []any {
	if !slices.Contains(m.StampedHeaders, h) {
		return nil
	}
	v, found := m.Stamps[h]
	if !found || v == nil {
		return nil
	}
	return listOf(v)
}

// listOf is Celery's maybe_list: a list stays, anything else is one item.
func listOf(v any) []any {
	if l, isList := v.([]any); isList {
		return l
	}
	return []any{v}
}

func containsValue(list []any, v any) bool {
	return slices.ContainsFunc(list, func(x any) bool { return sameValue(x, v) })
}

// sameValue compares decoded values as Python's == would: numbers by
// value whatever their Go type.
func sameValue(a, b any) bool {
	_, aStr := a.(string)
	_, bStr := b.(string)
	if !aStr && !bStr {
		fa, okA := argFloat(a)
		fb, okB := argFloat(b)
		if okA && okB {
			return fa == fb
		}
	}
	return protocol.PyRepr(a) == protocol.PyRepr(b)
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
			return okReply("terminate: tasks unknown")
		}
		return okReply("terminate: " + strings.Join(hit, ", "))
	}
	return okReply("tasks " + pySet(ids) + " flagged as revoked")
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
			if s, isStr := e.(string); isStr {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// truthy is Python's truth of an argument, as Celery's commands test
// them: Flower sends terminate as 1 (its strtobool), the CLI as True.
func truthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case string:
		return x != ""
	case []any:
		return len(x) > 0
	case map[string]any:
		return len(x) > 0
	}
	if f, isNum := argFloat(v); isNum {
		return f != 0
	}
	return true
}

// argFloat reads a numeric argument however it was decoded (JSON numbers
// are json.Number, msgpack's are Go numbers; the CLI may send strings).
func argFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	case float64:
		return x, true
	case float32:
		return float64(x), true
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		return f, err == nil
	case bool:
		return 0, false
	}
	if n, isInt := protocol.Int(v); isInt {
		return float64(n), true
	}
	return 0, false
}

// argInt reads an integer argument, def when it is missing or not one.
func argInt(v any, def int) int {
	f, found := argFloat(v)
	if !found || math.IsNaN(f) || math.IsInf(f, 0) {
		return def
	}
	return int(f)
}

// pyNumber is str() of a numeric argument as Python holds it: an integer
// as sent stays one ("5"), a float keeps its point ("5.0").
func pyNumber(v any, f float64) string {
	if n, isNum := v.(json.Number); isNum {
		if _, err := n.Int64(); err == nil {
			return n.String()
		}
	}
	if _, isInt := protocol.Int(v); isInt {
		return strconv.FormatInt(int64(f), 10)
	}
	return string(protocol.AppendPyFloat(nil, f))
}

// matchNode matches pattern against a node name with kombu's matchers:
// "glob" (the default; fnmatch) or "pcre" (re.match: anchored at the
// start only).
func matchNode(pattern, matcher, name string) (bool, error) {
	var expr string
	switch matcher {
	case "", "glob":
		expr = "^(?s:" + fnmatchRegexp(pattern) + ")$"
	case "pcre":
		expr = "^(?:" + pattern + ")"
	default:
		return false, fmt.Errorf("MatcherNotInstalled: No matcher installed for %s", matcher)
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return false, fmt.Errorf("pattern %q (%s): %w", pattern, matcher, err)
	}
	return re.MatchString(name), nil
}

// fnmatchRegexp translates a shell pattern as Python's fnmatch does: * is
// any run of characters (slashes too), ? one, [seq] and [!seq] classes,
// an unclosed [ a literal.
func fnmatchRegexp(p string) string {
	var b strings.Builder
	r := []rune(p)
	for i := 0; i < len(r); {
		c := r[i]
		i++
		switch c {
		case '*':
			for i < len(r) && r[i] == '*' {
				i++
			}
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		case '[':
			j := i
			if j < len(r) && r[j] == '!' {
				j++
			}
			if j < len(r) && r[j] == ']' {
				j++
			}
			for j < len(r) && r[j] != ']' {
				j++
			}
			if j >= len(r) {
				b.WriteString(`\[`)
				continue
			}
			stuff := r[i:j]
			i = j + 1
			b.WriteByte('[')
			for k, sc := range stuff {
				switch {
				case k == 0 && sc == '!':
					b.WriteByte('^')
				case k == 0 && sc == '^', sc == '\\', sc == '[', sc == ']':
					b.WriteByte('\\')
					b.WriteRune(sc)
				default:
					b.WriteRune(sc)
				}
			}
			b.WriteByte(']')
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	return b.String()
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
