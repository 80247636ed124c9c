package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// R1 is W1 (noop + results) with a Redis broker: kombu's Redis transport
// on both sides. The messages are Python's send_task output captured from
// the Redis list; the ceiling is a bare go-redis consumer (BRPOP one
// message, decode kombu's envelope and the body, store the result), with
// no acknowledgement emulation at all.

// redisTemplate is one captured message: its JSON, the task id it carries
// (id, root_id, correlation_id) and its delivery_tag, both replaced per
// instance.
type redisTemplate struct {
	raw, id, tag string
}

func (t *redisTemplate) instance(id string) string {
	return strings.ReplaceAll(strings.ReplaceAll(t.raw, t.id, id), t.tag, newID())
}

const redisCaptureScript = `
import os, sys
from celery import Celery
app = Celery("bench", broker=os.environ["CELERY_BROKER_URL"], backend=os.environ["CELERY_RESULT_BACKEND"])
app.send_task("gocelery.noop", args=[], kwargs={}, queue=sys.argv[1])
`

func (b *bench) setupRedisBroker() error {
	opts, err := redis.ParseURL(b.redisBrokerURL)
	if err != nil {
		return fmt.Errorf("-redis-broker: %w", err)
	}
	opts.PoolSize = 8
	b.rbroker = redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	q := "bench-capture-" + randSuffix()
	defer b.rbroker.Del(context.Background(), q, "_kombu.binding."+q, "_kombu.binding_permanent."+q)
	cmd := exec.CommandContext(ctx, b.python, "-c", redisCaptureScript, q)
	cmd.Env = append(os.Environ(), "CELERY_BROKER_URL="+b.redisBrokerURL, "CELERY_RESULT_BACKEND="+b.redisURL)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("python send_task on the Redis broker: %v: %s", err, out)
	}
	raw, err := b.rbroker.RPop(ctx, q).Result()
	if err != nil {
		return fmt.Errorf("captured message: %w", err)
	}
	var m struct {
		Headers    map[string]any `json:"headers"`
		Properties struct {
			DeliveryTag string `json:"delivery_tag"`
		} `json:"properties"`
	}
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return fmt.Errorf("captured message: %w", err)
	}
	id, _ := m.Headers["id"].(string)
	b.rtmpl = &redisTemplate{raw: raw, id: id, tag: m.Properties.DeliveryTag}
	return nil
}

// redisThroughput runs R1 for each implementation.
func (b *bench) redisThroughput() map[string][]runResult {
	if err := b.setupRedisBroker(); err != nil {
		b.logf("R1: %v", err)
		return map[string][]runResult{"gocelery": {{invalid: err.Error()}}}
	}
	defer b.rbroker.Close()
	out := map[string][]runResult{}
	for _, impl := range []string{"ceiling", "gocelery", "python"} {
		if !b.impls[impl] {
			continue
		}
		runs, n := b.runs, b.n
		if impl == "python" {
			runs, n = b.pyRuns, b.pyN
		}
		for r := 0; r < runs; r++ {
			res := b.redisRun(impl, n, r)
			b.logf("R1 %s run %d: %.0f tasks/s in %v, rss %.1f MiB, cpu ms/1k tasks worker %.0f redis %.0f %s", impl, r, res.rate, res.dur, mib(res.peakRSS), res.cpuWorker, res.cpuRedis, res.invalid)
			out[impl] = append(out[impl], res)
		}
	}
	return out
}

func (b *bench) redisRun(impl string, n, run int) runResult {
	b.checkQuiet()
	ctx := context.Background()
	q := fmt.Sprintf("bench-r1-%s-%d-%s", impl, run, randSuffix())
	defer b.rbroker.Del(ctx, q, "_kombu.binding."+q, "_kombu.binding_permanent."+q)
	ids := make([]string, n)
	for start := 0; start < n; start += 2000 {
		pipe := b.rbroker.Pipeline()
		for i := start; i < min(start+2000, n); i++ {
			ids[i] = newID()
			pipe.LPush(ctx, q, b.rtmpl.instance(ids[i]))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return runResult{invalid: "publish: " + err.Error()}
		}
	}
	defer b.forget(ids)
	base, _ := b.rdb.DBSize(ctx).Result()
	var c *redisCeiling
	var p *proc
	var err error
	saved := b.brokerURL
	b.brokerURL = b.redisBrokerURL
	switch impl {
	case "ceiling":
		c = b.startRedisCeiling(q)
	case "gocelery":
		p, err = b.startGocelery(q, b.goC, "--prefetch-multiplier", fmt.Sprint(b.goPrefetchMult))
	case "python":
		p, err = b.startPython(q, "prefork", 2)
	}
	b.brokerURL = saved
	if err != nil {
		return runResult{invalid: "start: " + err.Error()}
	}
	b.listDepth = b.rbroker
	res := b.wait(q, ids, base, true, nil, p)
	time.Sleep(300 * time.Millisecond)
	if c != nil {
		c.stop()
		if e := c.errors.Load(); e > 0 && res.invalid == "" {
			res.invalid = fmt.Sprintf("ceiling: %d errors", e)
		}
	}
	if p != nil {
		p.stop(syscall.SIGTERM, 20*time.Second)
		res.peakRSS = p.peakRSS.Load()
		if res.invalid != "" {
			b.logf("worker log: %s", p.log())
		}
	}
	if res.invalid == "" {
		res.invalid = b.validate(q, ids, true)
	}
	b.listDepth = nil
	if res.invalid == "" && impl != "ceiling" {
		// Every message acknowledged: nothing left in kombu's unacked hash.
		if left, _ := b.rbroker.HLen(ctx, "unacked").Result(); left > 0 {
			res.invalid = fmt.Sprintf("%d messages left unacked", left)
		}
	}
	return res
}

// redisCeiling is the bare consumer: BRPOP, decode, store the result
// (SETEX + PUBLISH, pipelined per batch as the AMQP ceiling writes them).
type redisCeiling struct {
	b      *bench
	quit   chan struct{}
	wg     sync.WaitGroup
	errors atomic.Int64
}

func (b *bench) startRedisCeiling(q string) *redisCeiling {
	c := &redisCeiling{b: b, quit: make(chan struct{})}
	ids := make(chan string, 4096)
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		defer close(ids)
		ctx := context.Background()
		for {
			select {
			case <-c.quit:
				return
			default:
			}
			kv, err := b.rbroker.BRPop(ctx, time.Second, q).Result()
			if errors.Is(err, redis.Nil) {
				continue
			}
			if err != nil {
				c.errors.Add(1)
				return
			}
			var m struct {
				Body    string         `json:"body"`
				Headers map[string]any `json:"headers"`
			}
			var body []any
			raw, derr := []byte(nil), json.Unmarshal([]byte(kv[1]), &m)
			if derr == nil {
				raw, derr = base64.StdEncoding.DecodeString(m.Body)
			}
			if derr != nil || json.Unmarshal(raw, &body) != nil || len(body) != 3 {
				c.errors.Add(1)
			}
			id, _ := m.Headers["id"].(string)
			ids <- id
		}
	}()
	go func() {
		defer c.wg.Done()
		ctx := context.Background()
		var buf []byte
		batch := make([]string, 0, 1024)
		for first := range ids {
			batch = append(batch[:0], first)
		drain:
			for len(batch) < cap(batch) {
				select {
				case id, ok := <-ids:
					if !ok {
						break drain
					}
					batch = append(batch, id)
				default:
					break drain
				}
			}
			now := time.Now()
			pipe := b.rdb.Pipeline()
			for _, id := range batch {
				buf = appendResult(buf[:0], id, "null", now)
				doc := string(buf)
				pipe.SetEx(ctx, "celery-task-meta-"+id, doc, 24*time.Hour)
				pipe.Publish(ctx, "celery-task-meta-"+id, doc)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				c.errors.Add(1)
			}
		}
	}()
	return c
}

func (c *redisCeiling) stop() {
	close(c.quit)
	c.wg.Wait()
}
