package worker

import (
	"os"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
)

// The inspect views: what `celery inspect` and Flower read.

// requestInfo describes a task as inspect's request info does.
func (w *Worker) requestInfo(m *protocol.Message, d broker.DeliveryInfo, start *time.Time, acknowledged bool) map[string]any {
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
		out = append(out, w.requestInfo(a.msg, a.info, &a.start, !a.acksLate))
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
		out = append(out, w.requestInfo(j.msg, j.info, nil, false))
	}
	return out
}

func (w *Worker) scheduledInfo() []any {
	out := []any{}
	for _, j := range w.jobsIn(stateScheduled) {
		out = append(out, map[string]any{"eta": protocol.FormatTime(*j.msg.ETA), "priority": int64(6),
			"request": w.requestInfo(j.msg, j.info, nil, false)})
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
			out[j.msg.ID] = []any{state, w.requestInfo(j.msg, j.info, nil, j.state.Load() == stateActive && !j.task.Options.AcksLate)}
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
	bi := w.transport.Info()
	brokerInfo := map[string]any{"transport": bi.Transport, "hostname": bi.Hostname, "port": int64(bi.Port),
		"userid": bi.UserID, "virtual_host": bi.VirtualHost, "ssl": bi.SSL, "insist": false,
		"connect_timeout": int64(10), "transport_options": map[string]any{}, "login_method": "PLAIN",
		"uri_prefix": nil, "heartbeat": bi.Heartbeat, "failover_strategy": "round-robin", "alternates": []any{}}
	soft, hard := w.cfg.SoftTimeLimit.Seconds(), w.cfg.TimeLimit.Seconds()
	return map[string]any{
		"total":  total,
		"pid":    int64(os.Getpid()),
		"clock":  strconv.FormatInt(w.clock.Load(), 10),
		"uptime": int64(time.Since(w.started).Seconds()),
		"pool": map[string]any{"implementation": "gocelery:goroutines", "max-concurrency": int64(w.pool.Size()),
			"processes": []any{int64(os.Getpid())}, "max-tasks-per-child": nil,
			"put-guarded-by-semaphore": false, "timeouts": []any{soft, hard}},
		"broker":         brokerInfo,
		"prefetch_count": int64(w.prefetchWindow()),
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

// conf answers `celery inspect conf` with the settings that matter here,
// the broker URL redacted.
func (w *Worker) conf() map[string]any {
	return map[string]any{
		"broker_url": w.transport.Info().URL, "worker_concurrency": int64(w.cfg.Concurrency),
		"worker_prefetch_multiplier": int64(w.cfg.PrefetchMultiplier), "task_track_started": w.cfg.TrackStarted,
		"result_extended": w.cfg.ResultExtended, "worker_send_task_events": w.events.enabled.Load(),
		"task_time_limit": nilIfZero(w.cfg.TimeLimit), "task_soft_time_limit": nilIfZero(w.cfg.SoftTimeLimit),
	}
}
