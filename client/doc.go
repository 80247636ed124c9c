// Package client is the producer side of gocelery: it sends tasks to
// Celery workers (gocelery's or Python's) and reads their results, as
// Python's app.send_task, apply_async, AsyncResult and canvas do.
//
//	tr, _ := amqp.NewTransport(amqp.Params{URL: "amqp://guest:guest@localhost:5672//"})
//	rb, _ := backends.NewRedis(backends.RedisParams{URL: "redis://localhost:6379/0"})
//	c, err := client.New(ctx, client.Config{Broker: tr, Backend: rb})
//
//	r, err := c.SendTask(ctx, "gocelery.add", []any{2, 3}, nil, client.Queue("critical"))
//	v, err := r.Get(ctx) // 5, or a *client.TaskError carrying the Python exception
//
//	sum, err := client.Call[int](ctx, c, "gocelery.add", 2, 3)
//
//	res, err := c.Apply(ctx, client.Chord(
//		[]*client.Signature{client.S("gocelery.add", 1, 1), client.S("gocelery.add", 2, 2)},
//		client.S("gocelery.xsum")))
//
// Messages are protocol v2 exactly as Celery 5.7 writes them (the golden
// corpus in testdata/golden is the reference), published with publisher
// confirms and routed as Celery routes them to the queues gocelery serves:
// to the default exchange with the queue's name as routing key, after
// declaring the queue as kombu does (a durable direct exchange named like
// the queue, a durable queue bound by its name). Results are read from
// Celery's Redis result backend; Get waits on the result's channel, never
// polling.
//
// A task sent from inside a running task (its ctx carries
// tasks.RequestFromContext) gets the running task's root_id and its id as
// parent_id, as Celery sets them.
package client
