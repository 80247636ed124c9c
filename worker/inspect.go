package worker

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
)

// The inspect views: what `celery inspect` and Flower read.

// requestInfo describes a task as inspect's request info does; start is
// when it started running (nil: it has not), which also gives it the
// worker's pid. safe shows the arguments' reprs, as `inspect active
// --safe`.
func (w *Worker) requestInfo(m *protocol.Message, d broker.DeliveryInfo, start *time.Time, acknowledged, safe bool) map[string]any {
	var ts, pid any
	if start != nil {
		ts = float64(start.UnixNano()) / 1e9
		pid = int64(os.Getpid())
	}
	var args, kwargs any = m.Args, m.Kwargs
	if safe {
		args, kwargs = m.ArgsRepr, m.KwargsRepr
	}
	return map[string]any{
		"id": m.ID, "name": m.Task, "args": args, "kwargs": kwargs,
		"type": m.Task, "hostname": w.nodeName, "time_start": ts,
		"acknowledged": acknowledged, "worker_pid": pid,
		"delivery_info": map[string]any{"exchange": d.Exchange, "routing_key": d.RoutingKey,
			"priority": int64(m.Priority), "redelivered": d.Redelivered},
	}
}

func (w *Worker) activeInfo(safe bool) []any {
	out := []any{}
	w.active.Range(func(_, v any) bool {
		a := v.(*activeTask)
		out = append(out, w.requestInfo(a.msg, a.info, &a.start, !a.acksLate, safe))
		return true
	})
	sortByID(out, func(v any) string { return v.(map[string]any)["id"].(string) })
	return out
}

// jobsIn lists the accepted jobs in state, with their messages (thawed
// for the occasion when frozen), by id.
func (w *Worker) jobsIn(state int32) []jobView {
	out := w.knownJobs(func(j *job) bool { return j.state.Load() == state })
	sort.Slice(out, func(a, b int) bool { return out[a].msg.ID < out[b].msg.ID })
	return out
}

func (w *Worker) reservedInfo() []any {
	out := []any{}
	for _, v := range w.jobsIn(stateReserved) {
		out = append(out, w.requestInfo(v.msg, v.j.d.Info(), nil, false, false))
	}
	return out
}

func (w *Worker) scheduledInfo() []any {
	out := []any{}
	for _, v := range w.jobsIn(stateScheduled) {
		out = append(out, map[string]any{"eta": protocol.FormatTime(*v.msg.ETA), "priority": int64(6),
			"request": w.requestInfo(v.msg, v.j.d.Info(), nil, false, false)})
	}
	return out
}

// queryTask answers query_task: {id: [state, request info]}, the state
// "active", "reserved" or "scheduled" (held until its ETA) as Celery 5.7
// names them.
func (w *Worker) queryTask(ids []string) map[string]any {
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	out := map[string]any{}
	for _, v := range w.knownJobs(func(j *job) bool { return want[j.id()] }) {
		j, m, info := v.j, v.msg, v.j.d.Info()
		switch j.state.Load() {
		case stateActive:
			var start *time.Time
			if a, running := w.active.Load(m.ID); running {
				start = &a.(*activeTask).start
			}
			out[m.ID] = []any{"active", w.requestInfo(m, info, start, !w.acksLate(j.task), false)}
		case stateScheduled:
			out[m.ID] = []any{"scheduled", w.requestInfo(m, info, nil, false, false)}
		default:
			out[m.ID] = []any{"reserved", w.requestInfo(m, info, nil, false, false)}
		}
	}
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
	bi := w.transport.Info()
	brokerInfo := map[string]any{"transport": bi.Transport, "hostname": bi.Hostname, "port": int64(bi.Port),
		"userid": bi.UserID, "virtual_host": bi.VirtualHost, "ssl": bi.SSL, "insist": false,
		"connect_timeout": int64(10), "transport_options": map[string]any{}, "login_method": "PLAIN",
		"uri_prefix": nil, "heartbeat": bi.Heartbeat, "failover_strategy": "round-robin", "alternates": []any{},
		"credential_provider": nil}
	out := map[string]any{
		"total":          total,
		"pid":            int64(os.Getpid()),
		"clock":          strconv.FormatInt(w.clock.Load(), 10),
		"uptime":         int64(time.Since(w.started).Seconds()),
		"pool":           w.poolInfo(),
		"broker":         brokerInfo,
		"prefetch_count": int64(w.prefetchWindow()),
		"rusage":         rusage(),
	}
	if w.pool.autoscaling() {
		hi, lo := w.pool.bounds()
		out["autoscaler"] = map[string]any{"max": int64(hi), "min": int64(lo),
			"current": int64(w.pool.Size()), "qty": int64(w.reservedCount())}
	}
	return out
}

// poolInfo describes the runners in the shape of Celery's prefork pool
// info. There are no child processes: every runner is a goroutine of this
// process, so "processes" lists this pid once per runner (monitors count
// the list to learn the concurrency), and max-concurrency is the number of
// runners now.
func (w *Worker) poolInfo() map[string]any {
	size := w.pool.Size()
	procs := make([]any, size)
	pid := int64(os.Getpid())
	for i := range procs {
		procs[i] = pid
	}
	return map[string]any{
		"implementation":           "gocelery:goroutines",
		"max-concurrency":          int64(size),
		"processes":                procs,
		"max-tasks-per-child":      "N/A",
		"put-guarded-by-semaphore": false,
		"timeouts":                 []any{timeoutValue(w.cfg.SoftTimeLimit), timeoutValue(w.cfg.TimeLimit)},
		"writes":                   w.pool.writes(),
	}
}

// timeoutValue is a pool timeout as Celery shows it: seconds, or 0.
func timeoutValue(d time.Duration) any {
	if d <= 0 {
		return int64(0)
	}
	return d.Seconds()
}

// reservedCount is Celery's reserved_requests count: the tasks taken for
// running now, waiting for a runner or running (not those held for an
// ETA).
func (w *Worker) reservedCount() int {
	n := 0
	w.eachKnown(func(j *job) {
		if s := j.state.Load(); s == stateReserved || s == stateActive {
			n++
		}
	})
	return n
}

// activeQueues answers `celery inspect active_queues` in kombu's form,
// from each queue's definition.
func (w *Worker) activeQueues() []any {
	out := make([]any, 0, len(w.queueList()))
	for _, name := range w.queueList() {
		q, err := w.queueDef(name)
		if err != nil {
			q = broker.NewQueue(name)
		}
		bindings := make([]any, 0, len(q.Bindings))
		for _, b := range q.Bindings {
			bindings = append(bindings, map[string]any{"exchange": exchangeInfo(b.Exchange), "routing_key": b.RoutingKey,
				"arguments": mapOrNil(b.Arguments), "unbind_arguments": nil})
		}
		out = append(out, map[string]any{
			"name": q.Name, "routing_key": q.RoutingKey, "durable": q.Durable(), "exclusive": q.Exclusive,
			"auto_delete": q.AutoDelete || q.Exclusive, "no_ack": false, "alias": nil, "bindings": bindings,
			"no_declare": q.NoDeclare, "expires": nil, "message_ttl": nil, "max_length": nil, "max_length_bytes": nil,
			"max_priority": nil, "queue_arguments": mapOrNil(q.Arguments), "binding_arguments": mapOrNil(q.BindingArguments),
			"consumer_arguments": nil, "exchange": exchangeInfo(q.Exchange),
		})
	}
	return out
}

func exchangeInfo(e broker.Exchange) map[string]any {
	return map[string]any{"name": e.Name, "type": e.Kind(), "arguments": mapOrNil(e.Arguments), "durable": e.Durable(),
		"passive": false, "auto_delete": e.AutoDelete, "delivery_mode": nil, "no_declare": e.NoDeclare}
}

// mapOrNil: kombu reports unset arguments as None.
func mapOrNil(m map[string]any) any {
	if len(m) == 0 {
		return nil
	}
	return m
}

func nilIfZero(d time.Duration) any {
	if d == 0 {
		return nil
	}
	return d.Seconds()
}

// conf answers `celery inspect conf` with the settings that matter here,
// the broker URL redacted.
func (w *Worker) conf() map[string]any {
	accept := w.cfg.Accept
	if len(accept) == 0 {
		accept = []string{"json", "msgpack"}
	}
	c := map[string]any{
		"broker_url": w.transport.Info().URL, "worker_concurrency": int64(w.cfg.Concurrency),
		"worker_prefetch_multiplier": int64(w.multiplier), "task_track_started": w.cfg.TrackStarted,
		"task_acks_late": w.cfg.TaskAcksLate, "task_reject_on_worker_lost": w.cfg.TaskRejectOnWorkerLost,
		"result_extended": w.cfg.ResultExtended, "worker_send_task_events": w.events.enabled.Load(),
		"task_time_limit": nilIfZero(w.cfg.TimeLimit), "task_soft_time_limit": nilIfZero(w.cfg.SoftTimeLimit),
		"accept_content": anyList(accept),
		// A refused connection at start is retried (only a misconfiguration
		// ends the worker), and prefetching is always on.
		"broker_connection_retry_on_startup": true, "worker_disable_prefetch": false,
	}
	if w.be.store != nil {
		c["result_backend"] = w.resultsURL()
	}
	return c
}

// defaultTaskInfoItems are the task attributes registered shows by
// default, as Celery's.
var defaultTaskInfoItems = []string{"exchange", "routing_key", "rate_limit"}

// registered answers `celery inspect registered [attr...]`: the task names,
// each followed by " [attr=value ...]" for the asked attributes (by
// default exchange, routing_key and rate_limit) that are set, as Celery
// lists "gocelery.limited [rate_limit=5/s]".
func (w *Worker) registered(items []string) []any {
	if len(items) == 0 {
		items = defaultTaskInfoItems
	}
	out := []any{}
	for _, name := range w.reg.Names() {
		t, _ := w.reg.Lookup(name)
		var fields []string
		seen := map[string]bool{}
		for _, item := range items {
			if strings.HasPrefix(item, "_") || seen[item] {
				continue
			}
			seen[item] = true
			if v, set := w.taskAttr(name, t, item); set {
				fields = append(fields, item+"="+v)
			}
		}
		if len(fields) == 0 {
			out = append(out, name)
			continue
		}
		out = append(out, name+" ["+strings.Join(fields, " ")+"]")
	}
	return out
}

// taskAttr is str() of a task attribute as a Python task would have it
// (the rate and time limits as remote control last set them); set is false
// for an attribute that is None or that a Go task does not have.
func (w *Worker) taskAttr(name string, t *tasks.Task, attr string) (string, bool) {
	o := &t.Options
	pyBool := func(b bool) string {
		if b {
			return "True"
		}
		return "False"
	}
	switch attr {
	case "name":
		return name, true
	case "rate_limit":
		r := o.RateLimit
		if set, changed := w.ctl.rateLimit(name); changed {
			r = set
		}
		return r, r != ""
	case "time_limit", "soft_time_limit":
		if tl, changed := w.ctl.timeLimit(name); changed {
			r := tl.hardRepr
			if attr == "soft_time_limit" {
				r = tl.softRepr
			}
			return r, r != ""
		}
		d := o.TimeLimit
		if attr == "soft_time_limit" {
			d = o.SoftTimeLimit
		}
		return pySeconds(d), d > 0
	case "max_retries":
		return strconv.Itoa(o.MaxRetries), o.MaxRetries >= 0
	case "default_retry_delay":
		return pySeconds(o.DefaultRetryDelay), true
	case "acks_late":
		return pyBool(o.AcksLate || (w.cfg.TaskAcksLate && !o.AcksEarly)), true
	case "ignore_result":
		return pyBool(o.IgnoreResult), true
	case "track_started":
		return pyBool(o.TrackStarted || w.cfg.TrackStarted), true
	case "serializer":
		return "json", true
	case "typing", "send_events", "trail", "acks_on_failure_or_timeout":
		return "True", true
	case "store_errors_even_if_ignored":
		return "False", true
	case "resultrepr_maxsize":
		return "1024", true
	case "retry_backoff":
		return pySeconds(o.RetryBackoff), o.AutoRetry != nil && o.RetryBackoff > 0
	case "retry_backoff_max":
		return pySeconds(o.RetryBackoffMax), o.AutoRetry != nil
	case "retry_jitter":
		return pyBool(o.RetryJitter), o.AutoRetry != nil
	}
	return "", false
}

// pySeconds renders a duration as Python would hold it in seconds: 5 or
// 0.5.
func pySeconds(d time.Duration) string {
	s := d.Seconds()
	if s == math.Trunc(s) {
		return strconv.FormatInt(int64(s), 10)
	}
	return string(protocol.AppendPyFloat(nil, s))
}

// report answers `celery inspect report` in the layout of Celery's
// bugreport.
func (w *Worker) report() string {
	version := "(devel)"
	if bi, found := debug.ReadBuildInfo(); found && bi.Main.Version != "" {
		version = bi.Main.Version
	}
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	bi := w.transport.Info()
	conf := w.conf()
	keys := make([]string, 0, len(conf))
	for k := range conf {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var settings strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&settings, "%s: %s\n", k, protocol.PyRepr(conf[k]))
	}
	return fmt.Sprintf("\nsoftware -> gocelery:%s go:%s celery-protocol:5.7.0\n"+
		"            broker:%s\n"+
		"platform -> system:%s arch:%s\n"+
		"            kernel version:%s imp:%s\n"+
		"loader   -> gocelery task registry (%d tasks)\n"+
		"settings -> transport:%s results:%s\n\n%s",
		version, runtime.Version(), bi.Transport,
		strings.ToUpper(runtime.GOOS[:1])+runtime.GOOS[1:], runtime.GOARCH,
		kernel, runtime.Compiler, len(w.reg.Names()),
		bi.Transport, w.resultsURL(), settings.String())
}

// resultsURL names the result backend without credentials.
func (w *Worker) resultsURL() string {
	switch b := w.be.store.(type) {
	case nil:
		return "disabled"
	case *backends.Redis:
		return b.URL()
	default:
		return fmt.Sprintf("%T", b)
	}
}
