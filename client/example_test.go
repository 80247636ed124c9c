package client_test

import (
	"context"
	"fmt"
	"time"

	"github.com/celeryworker/gocelery/broker/brokertest"
	"github.com/celeryworker/gocelery/client"
)

// Sending a task with options. The in-memory broker stands in for
// RabbitMQ; a real program passes amqp.NewTransport(...) and a
// backends.NewRedis(...) result backend, then calls r.Get(ctx).
func ExampleClient_SendTask() {
	b := brokertest.New()
	c, err := client.New(context.Background(), client.Config{Broker: b})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	_, err = c.SendTask(context.Background(), "orders.total",
		[]any{[]map[string]any{{"sku": "tea", "qty": 3, "price_cents": 450}}, "eur"}, nil,
		client.Queue("orders"), client.Countdown(10*time.Second), client.Expires(time.Hour),
		client.Link(client.S("orders.notify", "sales@example.com")))
	if err != nil {
		panic(err)
	}
	sent := b.Published()[0]
	fmt.Println(sent.Queue, sent.Envelope.Headers["task"], sent.Envelope.Headers["argsrepr"])
	// Output: orders orders.total ([{'price_cents': 450, 'qty': 3, 'sku': 'tea'}], 'eur')
}

// A chord built in Go: the same dicts a Python producer writes, so the
// header and the body can run on Go or Python workers.
func ExampleChord() {
	ch := client.Chord(
		[]*client.Signature{client.S("gocelery.add", 1, 1), client.S("gocelery.add", 2, 2).Set(client.Queue("py-workers"))},
		client.S("gocelery.xsum"))
	v := ch.Value()
	fmt.Println(v["task"], v["subtask_type"], len(ch.Tasks()), ch.Body().Task)
	// Output: celery.chord chord 2 gocelery.xsum
}
