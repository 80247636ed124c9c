// Command goclient is the Go producer the interop suite drives
// (interop/test_client.py): it sends tasks with gocelery's client package
// and reads results with its AsyncResult, printing JSON for Python to
// check.
//
//	goclient send QUEUE              every conformance task with every option; prints {case: {...ids}}
//	goclient get ID [TIMEOUT]        waits for ID; prints {"id", "state", "result", "exception", "traceback"}
//	goclient state ID                the current state, without waiting (same JSON)
//	goclient chain Q1 Q2             a chain whose steps alternate between the queues
//	goclient chord Q1 Q2 BODYQ       a chord whose header alternates between Q1 and Q2, body on BODYQ
//	goclient group Q1 Q2             a group alternating between the queues; waits and prints the join
//
// The broker and backend come from CELERY_BROKER_URL and
// CELERY_RESULT_BACKEND.
package main

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strconv"
	"time"

	"github.com/celeryworker/gocelery/amqp"
	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/client"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/redisbroker"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "goclient:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) < 2 {
		return errors.New("usage: goclient send|get|state|chain|chord|group ARGS...")
	}
	brokerURL := os.Getenv("CELERY_BROKER_URL")
	if brokerURL == "" {
		brokerURL = "amqp://guest:guest@127.0.0.1:5672//"
	}
	backend := os.Getenv("CELERY_RESULT_BACKEND")
	if backend == "" {
		backend = "redis://127.0.0.1:6379/1"
	}
	// The transport by the URL's scheme, as the gocelery CLI picks it.
	var tr broker.Transport
	var err error
	if redisbroker.Handles(brokerURL) {
		tr, err = redisbroker.NewTransport(redisbroker.Params{URL: brokerURL})
	} else {
		tr, err = amqp.NewTransport(amqp.Params{URL: brokerURL})
	}
	if err != nil {
		return err
	}
	rb, err := backends.NewRedis(backends.RedisParams{URL: backend})
	if err != nil {
		return err
	}
	defer rb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.Config{Broker: tr, Backend: rb})
	if err != nil {
		return err
	}
	defer c.Close()

	switch cmd := args[0]; cmd {
	case "send":
		return send(ctx, c, args[1])
	case "get", "state":
		timeout := 30 * time.Second
		if len(args) > 2 {
			s, err := strconv.ParseFloat(args[2], 64)
			if err != nil {
				return err
			}
			timeout = time.Duration(s * float64(time.Second))
		}
		return get(ctx, c, args[1], cmd == "get", timeout)
	case "chain":
		if len(args) < 3 {
			return errors.New("chain Q1 Q2")
		}
		return chain(ctx, c, args[1], args[2])
	case "chord":
		if len(args) < 4 {
			return errors.New("chord Q1 Q2 BODYQ")
		}
		return chord(ctx, c, args[1], args[2], args[3])
	case "group":
		if len(args) < 3 {
			return errors.New("group Q1 Q2")
		}
		return group(ctx, c, args[1], args[2])
	default:
		return fmt.Errorf("unknown command %q", cmd)
	}
}

func emit(v any) error {
	b, err := protocol.MarshalJSON(v)
	if err != nil {
		return err
	}
	_, err = fmt.Println(string(b))
	return err
}

// A case sends one task; extra names more ids Python should look at (a
// callback's, an errback's).
type sendCase struct {
	name   string
	task   string
	args   []any
	kwargs map[string]any
	opts   []client.Option
	extra  map[string]string
}

func send(ctx context.Context, c *client.Client, queue string) error {
	big53 := new(big.Int).Add(new(big.Int).Lsh(big.NewInt(1), 53), big.NewInt(1))
	echoArgs := []any{"héllo ✓ 日本", 1.5, nil, true, []any{1, "x"}, map[string]any{"k": map[string]any{"n": []any{}}}, big53}
	echoKw := map[string]any{"u": "日本", "n": nil}
	cbID, ignoredCbID, ebID := protocol.NewUUID(), protocol.NewUUID(), protocol.NewUUID()
	cases := []sendCase{
		{name: "add", task: "gocelery.add", args: []any{2, 3}},
		{name: "add_kwargs", task: "gocelery.add", kwargs: map[string]any{"x": 40, "y": 2}},
		{name: "add_bigint", task: "gocelery.add", args: []any{big53, 2}},
		{name: "echo", task: "gocelery.echo", args: echoArgs, kwargs: echoKw},
		{name: "msgpack", task: "gocelery.echo", args: echoArgs, kwargs: echoKw, opts: []client.Option{client.Serializer("msgpack")}},
		{name: "zlib", task: "gocelery.echo", args: echoArgs, kwargs: echoKw, opts: []client.Option{client.Compression("zlib")}},
		{name: "msgpack_zlib", task: "gocelery.echo", args: echoArgs, kwargs: echoKw,
			opts: []client.Option{client.Serializer("msgpack"), client.Compression("zlib")}},
		{name: "headers", task: "gocelery.echo", args: []any{"h"}, opts: []client.Option{client.Headers(map[string]any{"x-tenant": "acme", "x-n": 3})}},
		{name: "shadow", task: "gocelery.add", args: []any{1, 1}, opts: []client.Option{client.Shadow("interop.shadowed")}},
		{name: "priority", task: "gocelery.add", args: []any{3, 4}, opts: []client.Option{client.Priority(5)}},
		{name: "countdown", task: "gocelery.add", args: []any{1, 1}, opts: []client.Option{client.Countdown(time.Second)}},
		{name: "eta", task: "gocelery.add", args: []any{2, 2}, opts: []client.Option{client.ETA(time.Now().Add(time.Second))}},
		{name: "expires", task: "gocelery.add", args: []any{5, 5}, opts: []client.Option{client.Expires(time.Minute)}},
		{name: "expired", task: "gocelery.add", args: []any{1, 1}, opts: []client.Option{client.Countdown(2 * time.Second), client.Expires(time.Second)}},
		{name: "time_limit", task: "gocelery.sleep", args: []any{10}, opts: []client.Option{client.TimeLimit(time.Second)}},
		{name: "soft_time_limit", task: "gocelery.sleep", args: []any{10}, opts: []client.Option{client.SoftTimeLimit(time.Second)}},
		{name: "ignore_result", task: "gocelery.add", args: []any{2, 3}, extra: map[string]string{"callback": ignoredCbID},
			opts: []client.Option{client.IgnoreResult(), client.Link(client.S("gocelery.echo", "cb").Set(client.TaskID(ignoredCbID), client.Queue(queue)))}},
		{name: "link", task: "gocelery.add", args: []any{2, 3}, extra: map[string]string{"callback": cbID},
			opts: []client.Option{client.Link(client.S("gocelery.echo", "cb").Set(client.TaskID(cbID), client.Queue(queue)))}},
		{name: "link_error", task: "gocelery.fail", args: []any{"ValueError", "boom"}, extra: map[string]string{"errback": ebID},
			opts: []client.Option{client.LinkError(client.S("gocelery.limited").Set(client.TaskID(ebID), client.Queue(queue)))}},
		{name: "fail", task: "gocelery.fail", args: []any{"ValueError", "bad input"}},
		{name: "sleep", task: "gocelery.sleep", args: []any{0.1}},
		{name: "flaky", task: "gocelery.flaky", args: []any{1}},
		{name: "progress", task: "gocelery.progress", args: []any{2, 0.05}},
		{name: "xsum", task: "gocelery.xsum", args: []any{[]any{1, 2, 3}}},
		{name: "noop", task: "gocelery.noop"},
		{name: "request", task: "gocelery.request", opts: []client.Option{client.Retries(2)}},
		{name: "limited", task: "gocelery.limited", args: []any{7}},
		{name: "autoretry", task: "gocelery.autoretry", args: []any{1}},
		{name: "exchange", task: "gocelery.add", args: []any{8, 8}, opts: []client.Option{client.Exchange(queue), client.RoutingKey(queue)}},
	}
	out := map[string]any{}
	for _, k := range cases {
		opts := append([]client.Option{client.Queue(queue)}, k.opts...)
		sent := float64(time.Now().UnixNano()) / 1e9
		r, err := c.SendTask(ctx, k.task, k.args, k.kwargs, opts...)
		if err != nil {
			return fmt.Errorf("%s: %w", k.name, err)
		}
		entry := map[string]any{"id": r.ID, "sent_at": sent}
		for n, id := range k.extra {
			entry[n] = id
		}
		out[k.name] = entry
	}
	return emit(out)
}

// outcome is what Python reads: state, result, exception.
func outcome(m *client.Meta) map[string]any {
	o := map[string]any{"id": m.TaskID, "state": m.State, "result": nil, "exception": nil, "traceback": nil}
	if e := m.Exception(); e != nil {
		args := e.Args
		if args == nil {
			args = []any{}
		}
		o["exception"] = map[string]any{"type": e.Type, "module": e.Module, "message": e.Message, "args": args, "error": e.Error()}
	} else {
		o["result"] = m.Result
	}
	if m.Traceback != "" {
		o["traceback"] = m.Traceback
	}
	if m.DateDone != nil {
		o["date_done"] = float64(m.DateDone.UnixNano()) / 1e9
	}
	return o
}

func get(ctx context.Context, c *client.Client, id string, wait bool, timeout time.Duration) error {
	r := c.AsyncResult(id)
	if !wait {
		m, err := r.Meta(ctx)
		if err != nil {
			return err
		}
		return emit(outcome(m))
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Get is what a Go caller uses: it returns the value or a *TaskError.
	v, err := r.Get(ctx)
	var te *client.TaskError
	switch {
	case err == nil:
	case errors.As(err, &te):
	default:
		return err
	}
	m, err := r.Meta(ctx)
	if err != nil {
		return err
	}
	o := outcome(m)
	if te != nil {
		o["get_error"] = te.Error()
		o["is_revoked"] = errors.Is(te, client.ErrRevoked)
	} else {
		o["get_value"] = v
	}
	return emit(o)
}

func chain(ctx context.Context, c *client.Client, q1, q2 string) error {
	steps := []*client.Signature{
		client.S("gocelery.add", 1, 2).Set(client.Queue(q1)),
		client.S("gocelery.add", 3).Set(client.Queue(q2)),
		client.S("gocelery.add", 4).Set(client.Queue(q1)),
		client.S("gocelery.echo", "end").Set(client.Queue(q2)),
	}
	r, err := c.Apply(ctx, client.Chain(steps...))
	if err != nil {
		return err
	}
	var ids []any
	for p := r; p != nil; p = p.Parent {
		ids = append([]any{p.ID}, ids...)
	}
	return emit(map[string]any{"id": r.ID, "ids": ids})
}

func chord(ctx context.Context, c *client.Client, q1, q2, bodyQ string) error {
	var header []*client.Signature
	for i := range 8 {
		q := q1
		if i%2 == 1 {
			q = q2
		}
		header = append(header, client.S("gocelery.add", i, 1).Set(client.Queue(q)))
	}
	r, err := c.Apply(ctx, client.Chord(header, client.S("gocelery.xsum").Set(client.Queue(bodyQ))))
	if err != nil {
		return err
	}
	members := make([]any, len(r.Header.Results))
	for i, m := range r.Header.Results {
		members[i] = m.ID
	}
	return emit(map[string]any{"id": r.ID, "group": r.Header.ID, "members": members})
}

func group(ctx context.Context, c *client.Client, q1, q2 string) error {
	var members []*client.Signature
	for i := range 6 {
		q := q1
		if i%2 == 1 {
			q = q2
		}
		members = append(members, client.S("gocelery.add", i, i).Set(client.Queue(q)))
	}
	g, err := c.ApplyGroup(ctx, client.Group(members...))
	if err != nil {
		return err
	}
	vals, err := g.Join(ctx)
	if err != nil {
		return err
	}
	n, err := g.CompletedCount(ctx)
	if err != nil {
		return err
	}
	ids := make([]any, len(g.Results))
	for i, m := range g.Results {
		ids[i] = m.ID
	}
	return emit(map[string]any{"id": g.ID, "ids": ids, "join": vals, "completed": int64(n)})
}
