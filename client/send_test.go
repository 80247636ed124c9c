package client_test

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/client"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
)

func TestSendDefaults(t *testing.T) {
	c, b := memClient(t, client.Config{})
	r, err := c.SendTask(context.Background(), "proj.add", []any{2, 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sent := published(t, b, r.ID)
	if !routed(sent.Route, "", "celery", "celery") || sent.Queue != "celery" || !sent.Route.ETA.IsZero() {
		t.Errorf("route %+v queue %q: want the default exchange, routing key celery", sent.Route, sent.Queue)
	}
	if n := len(b.Messages("celery")); n != 1 {
		t.Errorf("%d messages in queue celery", n)
	}
	env := sent.Envelope
	h := env.Headers
	if h["task"] != "proj.add" || h["root_id"] != r.ID || h["parent_id"] != nil || h["lang"] != "go" ||
		h["argsrepr"] != "(2, 3)" || h["kwargsrepr"] != "{}" || h["ignore_result"] != false {
		t.Errorf("headers %v", h)
	}
	if o, _ := h["origin"].(string); !strings.HasPrefix(o, "gen") || !strings.Contains(o, "@") {
		t.Errorf("origin %q: want gen<pid>@<host>", o)
	}
	if env.ContentType != "application/json" || env.ContentEncoding != "utf-8" || env.DeliveryMode != 2 ||
		env.CorrelationID != r.ID || env.ReplyTo != c.ID() || env.Priority != 0 || env.Expiration != "" {
		t.Errorf("properties %+v", env)
	}
	if r.Ignored {
		t.Error("result marked ignored")
	}
	// Delay is the same with positional arguments only.
	r2, err := c.Delay(context.Background(), "proj.add", 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if m := decodeMsg(t, published(t, b, r2.ID).Envelope); !equalJSON(t, m.Args, []any{1, 2}) {
		t.Errorf("Delay args %v", m.Args)
	}
}

func TestSendEveryOption(t *testing.T) {
	c, b := memClient(t, client.Config{})
	eta := time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)
	before := time.Now()
	r, err := c.SendTask(context.Background(), "proj.t", []any{"a"}, map[string]any{"k": 1},
		client.TaskID("my-id"), client.ETA(eta), client.Expires(90*time.Second), client.Priority(7),
		client.Queue("q1"), client.TimeLimit(30*time.Second), client.SoftTimeLimit(1500*time.Millisecond),
		client.Retries(2), client.IgnoreResult(), client.Serializer("msgpack"), client.Compression("zlib"),
		client.Headers(map[string]any{"x-tenant": "acme", "n": 3}), client.Headers(map[string]any{"more": true}),
		client.Link(client.S("proj.cb", 1)), client.LinkError(client.SI("proj.eb")), client.Shadow("proj.shadowed"),
		client.ReplyTo("rt"), client.RootID("root"), client.ParentID("parent"))
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != "my-id" || !r.Ignored {
		t.Errorf("result %+v", r)
	}
	sent := published(t, b, "my-id")
	if !routed(sent.Route, "", "q1", "q1") || sent.Route.ETA.IsZero() {
		t.Errorf("route %+v", sent.Route)
	}
	env := sent.Envelope
	if env.ContentType != protocol.ContentTypeMsgpack || env.Headers["compression"] != "application/x-gzip" ||
		env.Priority != 7 || env.Expiration != "90000" || env.ReplyTo != "rt" {
		t.Errorf("properties %+v", env)
	}
	m := decodeMsg(t, env)
	if m.ETA == nil || !m.ETA.Equal(eta) {
		t.Errorf("eta %v", m.ETA)
	}
	if m.Expires == nil || m.Expires.Before(before.Add(89*time.Second)) || m.Expires.After(time.Now().Add(91*time.Second)) {
		t.Errorf("expires %v", m.Expires)
	}
	if m.TimeLimit != (protocol.TimeLimit{Hard: 30, Soft: 1.5}) || m.Retries != 2 || !m.IgnoreResult ||
		m.Shadow != "proj.shadowed" || m.RootID != "root" || m.ParentID != "parent" {
		t.Errorf("message %+v", m)
	}
	if env.Headers["x-tenant"] != "acme" || env.Headers["more"] != true || !equalJSON(t, env.Headers["n"], 3) {
		t.Errorf("user headers not merged: %v", env.Headers)
	}
	if len(m.Callbacks) != 1 || m.Callbacks[0].Task != "proj.cb" || len(m.Errbacks) != 1 || !m.Errbacks[0].Immutable {
		t.Errorf("callbacks %+v errbacks %+v", m.Callbacks, m.Errbacks)
	}
	if !equalJSON(t, m.Args, []any{"a"}) || !equalJSON(t, m.Kwargs, map[string]any{"k": 1}) {
		t.Errorf("args %v kwargs %v", m.Args, m.Kwargs)
	}
	// Ignored results are not waited for.
	if v, err := r.Get(context.Background()); v != nil || err != nil {
		t.Errorf("Get of an ignored result: %v, %v", v, err)
	}
}

func TestSendTimes(t *testing.T) {
	c, b := memClient(t, client.Config{})
	ctx := context.Background()
	before := time.Now()
	// countdown wins over eta, as in Celery; a zero countdown is no countdown.
	r, _ := c.SendTask(ctx, "t", nil, nil, client.Countdown(1500*time.Millisecond), client.ETA(time.Unix(0, 0)))
	m := decodeMsg(t, published(t, b, r.ID).Envelope)
	if m.ETA == nil || m.ETA.Before(before.Add(1499*time.Millisecond)) || m.ETA.After(time.Now().Add(1500*time.Millisecond)) {
		t.Errorf("countdown eta %v", m.ETA)
	}
	if s := published(t, b, r.ID).Envelope.Headers["eta"].(string); !strings.HasSuffix(s, "+00:00") {
		t.Errorf("eta %q is not aware UTC", s)
	}
	r, _ = c.SendTask(ctx, "t", nil, nil, client.Countdown(0))
	if m := decodeMsg(t, published(t, b, r.ID).Envelope); m.ETA != nil {
		t.Errorf("countdown 0 gave eta %v", m.ETA)
	}
	// An expiry already past is sent with expiration "0", as Celery does.
	r, _ = c.SendTask(ctx, "t", nil, nil, client.ExpiresAt(time.Now().Add(-time.Hour)))
	if e := published(t, b, r.ID).Envelope.Expiration; e != "0" {
		t.Errorf("past expiry: expiration %q", e)
	}
	// An ISO string works as Celery's eta/expires strings do (naive = UTC).
	r, _ = c.SendTask(ctx, "t", nil, nil, client.Set("eta", "2031-01-02T03:04:05"))
	if m := decodeMsg(t, published(t, b, r.ID).Envelope); m.ETA == nil || !m.ETA.Equal(time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("eta from string %v", m.ETA)
	}
}

// routed: r goes to exchange by key, and carries the definition of queue.
func routed(r broker.Route, exchange, key, queue string) bool {
	return r.Exchange == exchange && r.RoutingKey == key && r.Queue != nil && r.Queue.Name == queue
}

func TestSendExchangeRouting(t *testing.T) {
	c, b := memClient(t, client.Config{DefaultQueue: "default-q"})
	ctx := context.Background()
	// Both exchange and routing key: published there, the queue declared.
	r, err := c.SendTask(ctx, "t", nil, nil, client.Queue("q2"), client.Exchange("q2"), client.RoutingKey("q2"))
	if err != nil {
		t.Fatal(err)
	}
	sent := published(t, b, r.ID)
	if !routed(sent.Route, "q2", "q2", "q2") || sent.Queue != "q2" {
		t.Errorf("route %+v queue %q", sent.Route, sent.Queue)
	}
	// Only one of them: Celery ignores it and publishes to the queue.
	r, _ = c.SendTask(ctx, "t", nil, nil, client.RoutingKey("ignored"))
	if sent := published(t, b, r.ID); !routed(sent.Route, "", "default-q", "default-q") {
		t.Errorf("route %+v", sent.Route)
	}
}

func TestSendErrors(t *testing.T) {
	c, _ := memClient(t, client.Config{})
	ctx := context.Background()
	for name, opts := range map[string][]client.Option{
		"priority":   {client.Priority(300)},
		"serializer": {client.Serializer("pickle")},
		"countdown":  {client.Set("countdown", "soon")},
		"eta":        {client.Set("eta", "tomorrow")},
		"retries":    {client.Retries(-1)},
		"link":       {client.Set("link", 42)},
	} {
		if _, err := c.SendTask(ctx, "t", nil, nil, opts...); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := c.SendTask(ctx, "", nil, nil); err == nil {
		t.Error("empty task name: no error")
	}
	if _, err := client.New(ctx, client.Config{}); err == nil {
		t.Error("New without a broker: no error")
	}
}

// A task sent from inside a running task gets the running task's root and
// id, as Celery's send_task reads current_worker_task.
func TestSendFromTask(t *testing.T) {
	c, b := memClient(t, client.Config{})
	ctx := tasks.WithRequest(context.Background(), &tasks.Request{ID: "parent-id", RootID: "root-id"})
	r, err := c.SendTask(ctx, "child", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := published(t, b, r.ID).Envelope.Headers
	if h["root_id"] != "root-id" || h["parent_id"] != "parent-id" {
		t.Errorf("root %v parent %v", h["root_id"], h["parent_id"])
	}
	// A top-level parent (no root of its own) is the child's root.
	ctx = tasks.WithRequest(context.Background(), &tasks.Request{ID: "top"})
	r, _ = c.SendTask(ctx, "child", nil, nil)
	if h := published(t, b, r.ID).Envelope.Headers; h["root_id"] != "top" || h["parent_id"] != "top" {
		t.Errorf("root %v parent %v", h["root_id"], h["parent_id"])
	}
	// Explicit ids win.
	r, _ = c.SendTask(ctx, "child", nil, nil, client.RootID("r"), client.ParentID("p"))
	if h := published(t, b, r.ID).Envelope.Headers; h["root_id"] != "r" || h["parent_id"] != "p" {
		t.Errorf("root %v parent %v", h["root_id"], h["parent_id"])
	}
}

func TestRevokeMessage(t *testing.T) {
	c, b := memClient(t, client.Config{})
	ctx := context.Background()
	if err := c.AsyncResult("tid").Revoke(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := c.Revoke(ctx, []string{"a", "b"}, client.RevokeOptions{Signal: "SIGKILL", Destination: []string{"w1@h"}}); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	for _, s := range b.Published() {
		if s.Route != (broker.Route{Exchange: "celery.pidbox"}) {
			t.Errorf("route %+v: want the celery.pidbox exchange", s.Route)
		}
		env := s.Envelope
		if env.ContentType != "application/json" || env.DeliveryMode != 2 {
			t.Errorf("properties %+v", env)
		}
		if _, ok := env.Headers["clock"].(int64); !ok {
			t.Errorf("clock header %T", env.Headers["clock"])
		}
		if e, ok := env.Headers["expires"].(float64); !ok || e < float64(time.Now().Unix()) {
			t.Errorf("expires header %v", env.Headers["expires"])
		}
		var body map[string]any
		if err := json.Unmarshal(env.Body, &body); err != nil {
			t.Fatal(err)
		}
		got = append(got, body)
	}
	want := []map[string]any{
		{"method": "revoke", "arguments": map[string]any{"task_id": "tid", "terminate": true, "signal": "SIGTERM"},
			"destination": nil, "pattern": nil, "matcher": nil},
		{"method": "revoke", "arguments": map[string]any{"task_id": []any{"a", "b"}, "terminate": false, "signal": "SIGKILL"},
			"destination": []any{"w1@h"}, "pattern": nil, "matcher": nil},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("control bodies\n got  %v\n want %v", got, want)
	}
}

func TestTypedTask(t *testing.T) {
	c, b := memClient(t, client.Config{})
	add := client.NewTask[int](c, "proj.add", client.Queue("math"))
	r, err := add.Delay(context.Background(), 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	if sent := published(t, b, r.ID); sent.Route.RoutingKey != "math" {
		t.Errorf("route %+v", sent.Route)
	}
	s := add.S(1)
	if s.Task != "proj.add" || s.Options["queue"] != "math" || add.SI().Immutable != true {
		t.Errorf("signature %+v", s)
	}
	// Reading results needs the backend.
	if _, err := r.Get(context.Background()); err == nil {
		t.Error("Get without a backend: no error")
	}
}

// With a topology, a task for a quorum queue behind a topic exchange goes
// through that exchange with its countdown on the route (the transport's
// native delayed delivery), the queue declared as defined; a task without
// a priority gets task_default_priority.
func TestSendTopology(t *testing.T) {
	quorum := broker.Queue{Name: "orders", Exchange: broker.Exchange{Name: "orders", Type: "topic"}, RoutingKey: "orders",
		Arguments: map[string]any{"x-queue-type": "quorum"}}
	c, b := memClient(t, client.Config{DefaultPriority: 3, Topology: broker.Topology{Queues: []broker.Queue{quorum}}})
	r, err := c.SendTask(context.Background(), "t", nil, nil, client.Queue("orders"), client.Countdown(90*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	sent := published(t, b, r.ID)
	if !routed(sent.Route, "orders", "orders", "orders") || time.Until(sent.Route.ETA) < 85*time.Second || sent.Envelope.Priority != 3 {
		t.Errorf("route %+v priority %d", sent.Route, sent.Envelope.Priority)
	}
	if q, ok := b.Declared("orders"); !ok || !q.Quorum() {
		t.Errorf("declared %+v", q)
	}
	strict, _ := memClient(t, client.Config{Topology: broker.Topology{NoCreateMissingQueues: true}})
	if _, err := strict.SendTask(context.Background(), "t", nil, nil, client.Queue("nope")); err == nil {
		t.Error("sent to an undefined queue with task_create_missing_queues off")
	}
}
