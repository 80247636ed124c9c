package main

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ceiling is the raw consumer: amqp091-go + go-redis and no Celery logic.
// It consumes with a prefetch window, json-decodes each body, "runs" the
// task (nothing, or a sleep on a bounded goroutine pool), writes one
// Celery result document per message with SETEX+PUBLISH pipelined per
// batch, and acknowledges with multiple=true up to the highest delivery
// tag below which everything is done.
type ceiling struct {
	b        *bench
	ch       *amqp.Channel
	done     atomic.Int64
	errors   atomic.Int64
	lastErr  atomic.Value
	wg       sync.WaitGroup
	tag      string
	results  bool
	sleep    time.Duration
	prefetch int
	conc     int
}

type completion struct {
	tag uint64
	id  string
}

func (b *bench) startCeiling(q string, results bool, sleep time.Duration, conc, prefetch int) (*ceiling, error) {
	ch, err := b.conn.Channel()
	if err != nil {
		return nil, err
	}
	if err := ch.Qos(prefetch, 0, false); err != nil {
		return nil, err
	}
	c := &ceiling{b: b, ch: ch, tag: "ceiling-" + randSuffix(), results: results, sleep: sleep, prefetch: prefetch, conc: conc}
	ds, err := ch.Consume(q, c.tag, false, false, false, false, nil)
	if err != nil {
		return nil, err
	}
	comps := make(chan completion, prefetch+1024)
	c.wg.Add(2)
	go c.receive(ds, comps)
	go c.write(comps)
	return c, nil
}

func (c *ceiling) receive(ds <-chan amqp.Delivery, comps chan<- completion) {
	defer c.wg.Done()
	var sem chan struct{}
	var pool sync.WaitGroup
	if c.sleep > 0 {
		sem = make(chan struct{}, c.conc)
	}
	for d := range ds {
		var body []any
		if err := json.Unmarshal(d.Body, &body); err != nil || len(body) != 3 {
			c.errors.Add(1)
		}
		id, _ := d.Headers["id"].(string)
		comp := completion{tag: d.DeliveryTag, id: id}
		if sem == nil {
			comps <- comp
			continue
		}
		sem <- struct{}{}
		pool.Add(1)
		go func() {
			defer pool.Done()
			time.Sleep(c.sleep)
			<-sem
			comps <- comp
		}()
	}
	pool.Wait()
	close(comps)
}

// appendResult writes Celery's result document for a successful task.
func appendResult(b []byte, id string, result string, now time.Time) []byte {
	b = append(b, `{"status": "SUCCESS", "result": `...)
	b = append(b, result...)
	b = append(b, `, "traceback": null, "children": [], "date_done": "`...)
	b = now.UTC().AppendFormat(b, "2006-01-02T15:04:05.000000+00:00")
	b = append(b, `", "task_id": "`...)
	b = append(b, id...)
	b = append(b, `"}`...)
	return b
}

func (c *ceiling) write(comps <-chan completion) {
	defer c.wg.Done()
	ctx := context.Background()
	batch := make([]completion, 0, 1024)
	finished := map[uint64]bool{}
	var acked uint64
	result := "null"
	if c.sleep > 0 {
		result = strconv.FormatFloat(c.sleep.Seconds(), 'g', -1, 64)
	}
	var buf []byte
	for first := range comps {
		batch = append(batch[:0], first)
	drain:
		for len(batch) < cap(batch) {
			select {
			case x, ok := <-comps:
				if !ok {
					break drain
				}
				batch = append(batch, x)
			default:
				break drain
			}
		}
		if c.results {
			now := time.Now()
			var err error
			// A failed pipeline (e.g. a read timeout on a loaded machine)
			// is written again: the ceiling must not lose results.
			for attempt := 0; attempt < 5; attempt++ {
				pipe := c.b.rdb.Pipeline()
				for _, x := range batch {
					key := "celery-task-meta-" + x.id
					buf = appendResult(buf[:0], x.id, result, now)
					doc := string(buf)
					pipe.SetEx(ctx, key, doc, 24*time.Hour)
					pipe.Publish(ctx, key, doc)
				}
				if _, err = pipe.Exec(ctx); err == nil {
					break
				}
				c.lastErr.Store(err.Error())
				time.Sleep(50 * time.Millisecond)
			}
			if err != nil {
				c.errors.Add(1)
			}
		}
		for _, x := range batch {
			finished[x.tag] = true
		}
		from := acked
		for finished[acked+1] {
			delete(finished, acked+1)
			acked++
		}
		if acked > from {
			if err := c.ch.Ack(acked, true); err != nil {
				c.errors.Add(1)
			}
		}
		c.done.Add(int64(len(batch)))
	}
}

func (c *ceiling) stop() {
	_ = c.ch.Cancel(c.tag, false)
	c.wg.Wait()
	c.ch.Close()
}
