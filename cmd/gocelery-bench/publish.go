package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	gamqp "github.com/celeryworker/gocelery/amqp"
	"github.com/celeryworker/gocelery/client"
)

// P1: how fast a producer publishes task messages. The Go client
// (client.SendTask: the message Celery 5.7 writes, published with a
// publisher confirm that SendTask waits for) from one goroutine and from
// several, against Python's app.send_task in a loop, with Celery's
// defaults (no publisher confirms) and with confirm_publish; beside them
// the broker's ceilings, raw amqp091 publishes of the same message with
// confirms collected in windows and without confirms. Nothing consumes the queue; a run is valid when the queue holds
// every message.

type publishRate struct {
	label   string
	n       int
	rate    float64 // tasks/s
	invalid string
}

type publishResult struct {
	rows []publishRate
}

const publishWarmup = 200

// pyPublishScript: send_task in a loop, after a warm-up (connection, queue
// declaration); prints the rate.
const pyPublishScript = `
import os, sys, json, time
from celery import Celery
app = Celery("p1", broker=os.environ["CELERY_BROKER_URL"])
if sys.argv[3] == "confirm":
    app.conf.broker_transport_options = {"confirm_publish": True}
q, n = sys.argv[1], int(sys.argv[2])
for _ in range(int(sys.argv[4])):
    app.send_task("gocelery.noop", queue=q)
t = time.perf_counter()
for _ in range(n):
    app.send_task("gocelery.noop", queue=q)
d = time.perf_counter() - t
print(json.dumps({"n": n, "seconds": d}))
`

func (b *bench) publishRates() *publishResult {
	out := &publishResult{}
	add := func(label string, n int, run func(q string) (float64, error)) {
		b.checkQuiet()
		q := "bench-p1-" + randSuffix()
		if err := b.declareQueue(q); err != nil {
			out.rows = append(out.rows, publishRate{label: label, n: n, invalid: err.Error()})
			return
		}
		defer b.deleteQueue(q)
		rate, err := run(q)
		r := publishRate{label: label, n: n, rate: rate}
		if err != nil {
			r.invalid = err.Error()
		} else if r.invalid = b.checkDepth(q, n+publishWarmup); r.invalid != "" {
			r.rate = 0
		}
		b.logf("P1 %s: %.0f tasks/s %s", label, r.rate, r.invalid)
		out.rows = append(out.rows, r)
	}
	// The ceiling: raw amqp091, the captured Celery message, confirms
	// collected in windows of 2000 (what the broker takes at most).
	add("ceiling: raw amqp091 publish, confirms per 2000", b.p1N, func(q string) (float64, error) {
		for i := 0; i < publishWarmup; i++ {
			if _, err := b.publish(q, b.tmpl["noop"], 1); err != nil {
				return 0, err
			}
		}
		start := time.Now()
		if _, err := b.publish(q, b.tmpl["noop"], b.p1N); err != nil {
			return 0, err
		}
		return float64(b.p1N) / time.Since(start).Seconds(), nil
	})
	add("ceiling: raw amqp091 publish, no confirms", b.p1N, func(q string) (float64, error) {
		return b.rawUnconfirmed(q, b.p1N)
	})
	add("Go client.SendTask, 1 goroutine", b.p1SeqN, func(q string) (float64, error) { return b.goPublish(q, b.p1SeqN, 1) })
	add(fmt.Sprintf("Go client.SendTask, %d goroutines", b.p1Par), b.p1N, func(q string) (float64, error) { return b.goPublish(q, b.p1N, b.p1Par) })
	add("Python app.send_task loop (Celery defaults: no confirms)", b.p1PyN, func(q string) (float64, error) { return b.pyPublish(q, b.p1PyN, false) })
	add("Python app.send_task loop (confirm_publish=True)", b.p1PyN, func(q string) (float64, error) { return b.pyPublish(q, b.p1PyN, true) })
	return out
}

// checkDepth: the queue holds want messages (every publish arrived).
func (b *bench) checkDepth(q string, want int) string {
	probe, err := b.newProbe()
	if err != nil {
		return err.Error()
	}
	defer probe.close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ready, _, err := probe.get(q)
		if err != nil {
			return "queue probe: " + err.Error()
		}
		if ready == want {
			return ""
		}
		if time.Now().After(deadline) {
			return fmt.Sprintf("queue holds %d messages, want %d", ready, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// goPublish sends n gocelery.noop tasks to q with the Go client from par
// goroutines sharing one client (one connection), after a warm-up.
func (b *bench) goPublish(q string, n, par int) (float64, error) {
	tr, err := gamqp.NewTransport(gamqp.Params{URL: b.brokerURL})
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := client.New(ctx, client.Config{Broker: tr})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	for i := 0; i < publishWarmup; i++ {
		if _, err := c.SendTask(ctx, "gocelery.noop", nil, nil, client.Queue(q)); err != nil {
			return 0, err
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, par)
	start := time.Now()
	for g := 0; g < par; g++ {
		share := n / par
		if g < n%par {
			share++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < share; i++ {
				if _, err := c.SendTask(ctx, "gocelery.noop", nil, nil, client.Queue(q)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	d := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(n) / d.Seconds(), nil
}

func (b *bench) pyPublish(q string, n int, confirm bool) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	mode := "default"
	if confirm {
		mode = "confirm"
	}
	cmd := exec.CommandContext(ctx, b.python, "-c", pyPublishScript, q, strconv.Itoa(n), mode, strconv.Itoa(publishWarmup))
	cmd.Env = append(os.Environ(), "CELERY_BROKER_URL="+b.brokerURL)
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return 0, fmt.Errorf("%v: %s", err, lastLines(string(ee.Stderr), 5))
		}
		return 0, err
	}
	var res struct {
		N       int     `json:"n"`
		Seconds float64 `json:"seconds"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.Seconds <= 0 {
		return 0, fmt.Errorf("bad output %q", out)
	}
	return float64(res.N) / res.Seconds, nil
}

// rawUnconfirmed publishes the captured message n times without confirms
// (what Python's send_task does by default), after the warm-up; the time
// ends with a passive declare, a round trip behind the last publish.
func (b *bench) rawUnconfirmed(q string, n int) (float64, error) {
	ch, err := b.conn.Channel()
	if err != nil {
		return 0, err
	}
	defer ch.Close()
	ctx := context.Background()
	t := b.tmpl["noop"]
	for i := 0; i < publishWarmup; i++ {
		if err := ch.PublishWithContext(ctx, q, q, false, false, t.instance(newID())); err != nil {
			return 0, err
		}
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		if err := ch.PublishWithContext(ctx, q, q, false, false, t.instance(newID())); err != nil {
			return 0, err
		}
	}
	if _, err := ch.QueueDeclarePassive(q, true, false, false, false, nil); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
