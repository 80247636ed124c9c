package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"time"
)

// lat is a latency summary in milliseconds.
type lat struct {
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
	N    int     `json:"n"`
	Err  string  `json:"error,omitempty"`
}

func summarize(ms []float64) lat {
	if len(ms) == 0 {
		return lat{Err: "no samples"}
	}
	sort.Float64s(ms)
	var sum float64
	for _, v := range ms {
		sum += v
	}
	p := func(q float64) float64 {
		i := int(q*float64(len(ms))+0.5) - 1
		return ms[max(0, min(i, len(ms)-1))]
	}
	return lat{P50: p(0.50), P99: p(0.99), Max: ms[len(ms)-1], Mean: sum / float64(len(ms)), N: len(ms)}
}

// rttScript: sequential send_task -> AsyncResult.get round trips from
// Python Celery 5.7's client (pubsub result consumer), after a warm-up.
const rttScript = `
import os, sys, json, time
from celery import Celery
app = Celery("rtt", broker=os.environ["CELERY_BROKER_URL"], backend=os.environ["CELERY_RESULT_BACKEND"])
q, n = sys.argv[1], int(sys.argv[2])
for _ in range(20):
    r = app.send_task("gocelery.noop", args=[], kwargs={}, queue=q)
    r.get(timeout=60)
    r.forget()
lat = []
for _ in range(n):
    t = time.perf_counter()
    r = app.send_task("gocelery.noop", args=[], kwargs={}, queue=q)
    r.get(timeout=30)
    lat.append((time.perf_counter() - t) * 1000.0)
    r.forget()
lat.sort()
pick = lambda p: lat[max(0, min(len(lat) - 1, int(p * len(lat) + 0.5) - 1))]
print(json.dumps({"p50": pick(0.5), "p99": pick(0.99), "max": lat[-1], "mean": sum(lat) / len(lat), "n": len(lat)}))
`

func (b *bench) pythonRTT(q string, n int) lat {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.python, "-c", rttScript, q, strconv.Itoa(n))
	cmd.Env = append(os.Environ(), "CELERY_BROKER_URL="+b.brokerURL, "CELERY_RESULT_BACKEND="+b.redisURL)
	out, err := cmd.Output()
	if err != nil {
		msg := err.Error()
		if ee, ok := err.(*exec.ExitError); ok {
			msg += ": " + lastLines(string(ee.Stderr), 5)
		}
		return lat{Err: msg}
	}
	var l lat
	if err := json.Unmarshal(out, &l); err != nil {
		return lat{Err: fmt.Sprintf("bad output %q", out)}
	}
	return l
}

// goRTT: the same round trip from Go: subscribe to the task's result
// channel, publish one Celery message, wait for the result on pubsub.
func (b *bench) goRTT(q string, t *template, n int) lat {
	ch, err := b.conn.Channel()
	if err != nil {
		return lat{Err: err.Error()}
	}
	defer ch.Close()
	one := func(timeout time.Duration) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		start := time.Now()
		id := newID()
		key := "celery-task-meta-" + id
		sub := b.rdb.Subscribe(ctx, key)
		defer sub.Close()
		defer b.rdb.Del(context.Background(), key)
		if _, err := sub.Receive(ctx); err != nil {
			return 0, err
		}
		if err := ch.PublishWithContext(ctx, q, q, false, false, t.instance(id)); err != nil {
			return 0, err
		}
		m, err := sub.ReceiveMessage(ctx)
		if err != nil {
			return 0, err
		}
		var doc struct {
			Status string `json:"status"`
		}
		if json.Unmarshal([]byte(m.Payload), &doc) != nil || doc.Status != "SUCCESS" {
			return 0, fmt.Errorf("task %s: result %s", id, m.Payload)
		}
		return time.Since(start), nil
	}
	for i := 0; i < 20; i++ {
		if _, err := one(60 * time.Second); err != nil {
			return lat{Err: "warm-up: " + err.Error()}
		}
	}
	ms := make([]float64, 0, n)
	for i := 0; i < n; i++ {
		d, err := one(30 * time.Second)
		if err != nil {
			return lat{Err: err.Error()}
		}
		ms = append(ms, float64(d)/1e6)
	}
	return summarize(ms)
}
