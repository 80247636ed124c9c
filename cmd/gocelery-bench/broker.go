package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/celeryworker/gocelery/protocol"
)

// template is one task message exactly as Celery 5.7's send_task wrote it:
// properties, header table and body. Per message only the task id changes
// (headers id and root_id, property correlation_id).
type template struct {
	name  string
	pub   amqp.Publishing
	hdrs  amqp.Table
	from  string // "python" (captured now) or "golden" (testdata)
	label string
}

// instance returns the message for task id: a copy of the header table
// with id/root_id replaced; body and the other properties are shared.
func (t *template) instance(id string) amqp.Publishing {
	h := make(amqp.Table, len(t.hdrs))
	for k, v := range t.hdrs {
		h[k] = v
	}
	h["id"] = id
	h["root_id"] = id
	p := t.pub
	p.Headers = h
	p.CorrelationId = id
	return p
}

// newID returns a random UUID4 string, as Celery's uuid().
func newID() string { return protocol.NewUUID() }

func randSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// captureScript makes Python Celery 5.7 send the four benchmark messages
// to a throwaway queue; the bench then reads them back byte for byte.
const captureScript = `
import os, sys
from celery import Celery
app = Celery("bench", broker=os.environ["CELERY_BROKER_URL"], backend=os.environ["CELERY_RESULT_BACKEND"])
q = sys.argv[1]
app.send_task("gocelery.noop", args=[], kwargs={}, queue=q)
app.send_task("gocelery.noop", args=[], kwargs={}, queue=q, ignore_result=True)
app.send_task("gocelery.sleep", args=[0.02], kwargs={}, queue=q)
app.send_task("gocelery.noop", args=[], kwargs={}, queue=q, countdown=600)
`

var templateNames = []string{"noop", "noop_ignore", "sleep", "noop_countdown"}

// captureTemplates runs send_task once per message kind from Python and
// gets the messages back from the broker.
func (b *bench) captureTemplates() (map[string]*template, error) {
	q := "bench-capture-" + randSuffix()
	if err := b.declareQueue(q); err != nil {
		return nil, err
	}
	defer b.deleteQueue(q)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.python, "-c", captureScript, q)
	cmd.Env = append(os.Environ(), "CELERY_BROKER_URL="+b.brokerURL, "CELERY_RESULT_BACKEND="+b.redisURL)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("python send_task: %v: %s", err, out)
	}
	ch, err := b.conn.Channel()
	if err != nil {
		return nil, err
	}
	defer ch.Close()
	out := map[string]*template{}
	for _, name := range templateNames {
		var d amqp.Delivery
		var ok bool
		for i := 0; i < 100 && !ok; i++ {
			d, ok, err = ch.Get(q, true)
			if err != nil {
				return nil, err
			}
			if !ok {
				time.Sleep(20 * time.Millisecond)
			}
		}
		if !ok {
			return nil, fmt.Errorf("captured message %s not found in %s", name, q)
		}
		out[name] = templateOf(name, &d, "python send_task (captured at start)")
	}
	return out, nil
}

func templateOf(name string, d *amqp.Delivery, from string) *template {
	return &template{
		name: name,
		from: from,
		hdrs: d.Headers,
		pub: amqp.Publishing{
			ContentType:     d.ContentType,
			ContentEncoding: d.ContentEncoding,
			DeliveryMode:    d.DeliveryMode,
			Priority:        d.Priority,
			ReplyTo:         d.ReplyTo,
			Expiration:      d.Expiration,
			Body:            d.Body,
		},
	}
}

// goldenTemplates builds the templates from testdata/golden when Python
// cannot be run: v2_json_basic (send_task of gocelery.add) with the task
// name, body and reprs switched to the benchmark tasks, as Celery writes
// them for args [] / [0.02] and kwargs {}.
func goldenTemplates(root string) (map[string]*template, error) {
	raw, err := os.ReadFile(filepath.Join(root, "testdata/golden/v2_json_basic.json"))
	if err != nil {
		return nil, err
	}
	var g struct {
		Properties map[string]any `json:"properties"`
		Headers    map[string]any `json:"headers"`
		Body       string         `json:"body_base64"`
	}
	if err := json.Unmarshal(raw, &g); err != nil {
		return nil, err
	}
	embed := `{"callbacks": null, "errbacks": null, "chain": null, "chord": null}`
	mk := func(name, task, args, argsrepr string, ignore bool, eta any) *template {
		h := amqp.Table{}
		for k, v := range g.Headers {
			switch x := v.(type) {
			case float64:
				h[k] = int32(x)
			case []any:
				h[k] = x
			case map[string]any:
				h[k] = amqp.Table(x)
			default:
				h[k] = v
			}
		}
		h["task"] = task
		h["argsrepr"] = argsrepr
		h["ignore_result"] = ignore
		h["eta"] = eta
		return &template{name: name, from: "testdata/golden/v2_json_basic.json (edited)", hdrs: h, pub: amqp.Publishing{
			ContentType:     "application/json",
			ContentEncoding: "utf-8",
			DeliveryMode:    2,
			ReplyTo:         fmt.Sprint(g.Properties["reply_to"]),
			Body:            []byte("[" + args + ", {}, " + embed + "]"),
		}}
	}
	eta := time.Now().UTC().Add(10 * time.Minute).Format("2006-01-02T15:04:05.000000+00:00")
	return map[string]*template{
		"noop":           mk("noop", "gocelery.noop", "[]", "[]", false, nil),
		"noop_ignore":    mk("noop_ignore", "gocelery.noop", "[]", "[]", true, nil),
		"sleep":          mk("sleep", "gocelery.sleep", "[0.02]", "[0.02]", false, nil),
		"noop_countdown": mk("noop_countdown", "gocelery.noop", "[]", "[]", false, eta),
	}, nil
}

func describeTemplate(t *template) string {
	b, _ := json.Marshal(t.hdrs)
	return fmt.Sprintf("%s from %s: headers %s body %s", t.name, t.from, b, base64.StdEncoding.EncodeToString(t.pub.Body))
}

// declareQueue declares the queue as kombu does for -Q name: a durable
// direct exchange of the same name, a durable queue bound by its name.
func (b *bench) declareQueue(q string) error { return b.declareQueueArgs(q, nil) }

// declareQueueArgs declares q with queue arguments (x-queue-type,
// x-max-priority) as the workers will declare it.
func (b *bench) declareQueueArgs(q string, args amqp.Table) error {
	ch, err := b.conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	if err := ch.ExchangeDeclare(q, "direct", true, false, false, false, nil); err != nil {
		return err
	}
	if _, err := ch.QueueDeclare(q, true, false, false, false, args); err != nil {
		return err
	}
	return ch.QueueBind(q, q, q, false, nil)
}

func (b *bench) deleteQueue(q string) {
	ch, err := b.conn.Channel()
	if err != nil {
		return
	}
	defer ch.Close()
	_, _ = ch.QueueDelete(q, false, false, false)
	_ = ch.ExchangeDelete(q, false, false)
}

// publish sends n messages of t to queue q (exchange q, routing key q, as
// send_task(queue=q) does) with publisher confirms collected in windows;
// it returns the task ids.
func (b *bench) publish(q string, t *template, n int) ([]string, error) {
	ch, err := b.conn.Channel()
	if err != nil {
		return nil, err
	}
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		return nil, err
	}
	const window = 2000
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, window))
	ids := make([]string, n)
	ctx := context.Background()
	for start := 0; start < n; start += window {
		end := min(start+window, n)
		for i := start; i < end; i++ {
			ids[i] = newID()
			if err := ch.PublishWithContext(ctx, q, q, true, false, t.instance(ids[i])); err != nil {
				return nil, err
			}
		}
		for i := start; i < end; i++ {
			select {
			case c := <-confirms:
				if !c.Ack {
					return nil, fmt.Errorf("publish: broker nacked message %d", c.DeliveryTag)
				}
			case <-time.After(30 * time.Second):
				return nil, fmt.Errorf("publish: no confirm after 30s")
			}
		}
	}
	return ids, nil
}

// depth is a cheap passive declare: ready messages and consumers.
type depthProbe struct{ ch *amqp.Channel }

func (b *bench) newProbe() (*depthProbe, error) {
	ch, err := b.conn.Channel()
	if err != nil {
		return nil, err
	}
	return &depthProbe{ch}, nil
}

func (p *depthProbe) get(q string) (ready, consumers int, err error) {
	st, err := p.ch.QueueDeclarePassive(q, true, false, false, false, nil)
	return st.Messages, st.Consumers, err
}

func (p *depthProbe) close() { p.ch.Close() }
