package client

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
)

// SendTask sends the task name with args and kwargs, as Celery's
// app.send_task / task.apply_async do, and returns its result handle. The
// message is protocol v2 exactly as Celery 5.7 writes it, published with
// publisher confirms: SendTask returns once the broker has taken it.
//
// Called from inside a running task (ctx carries tasks.RequestFromContext),
// the new task's root_id and parent_id are the running task's root and id,
// as in Celery.
func (c *Client) SendTask(ctx context.Context, name string, args []any, kwargs map[string]any, opts ...Option) (*AsyncResult, error) {
	return c.send(ctx, name, args, kwargs, collect(opts))
}

// Delay is SendTask with positional arguments only: c.Delay(ctx, "add", 2, 3).
func (c *Client) Delay(ctx context.Context, name string, args ...any) (*AsyncResult, error) {
	return c.send(ctx, name, args, nil, map[string]any{})
}

// message builds the task message and its route from Celery options, as
// send_task and as_task_v2 do. It is the one place options become wire
// fields.
func (c *Client) message(ctx context.Context, name string, args []any, kwargs map[string]any, o map[string]any, now time.Time) (*protocol.Message, protocol.EncodeOptions, broker.Route, error) {
	var enc protocol.EncodeOptions
	var route broker.Route
	fail := func(format string, a ...any) (*protocol.Message, protocol.EncodeOptions, broker.Route, error) {
		return nil, enc, route, fmt.Errorf("client: send %s: "+format, append([]any{name}, a...)...)
	}
	if name == "" {
		return fail("no task name")
	}
	id := str(o["task_id"])
	if id == "" {
		id = protocol.NewUUID()
	}
	if args == nil {
		args = []any{}
	}
	m := &protocol.Message{
		ID:       id,
		Task:     name,
		Args:     args,
		Kwargs:   kwargs,
		Origin:   c.cfg.Origin,
		ReplyTo:  str(o["reply_to"]),
		RootID:   str(o["root_id"]),
		ParentID: str(o["parent_id"]),
		Shadow:   str(o["shadow"]),
		Group:    str(o["group_id"]),
	}
	if m.ReplyTo == "" {
		m.ReplyTo = c.cfg.ID
	}
	if m.RootID == "" || m.ParentID == "" {
		if req, ok := tasks.RequestFromContext(ctx); ok {
			if m.RootID == "" {
				m.RootID = req.RootID
				if m.RootID == "" {
					m.RootID = req.ID
				}
			}
			if m.ParentID == "" {
				m.ParentID = req.ID
			}
		}
	}
	if v, ok := o["group_index"]; ok && v != nil {
		i, ok := toInt(v)
		if !ok {
			return fail("group_index %v is not an integer", v)
		}
		gi := int(i)
		m.GroupIndex = &gi
	}
	if v, ok := o["retries"]; ok && v != nil {
		n, ok := toInt(v)
		if !ok || n < 0 {
			return fail("retries %v is not a count", v)
		}
		m.Retries = int(n)
	}
	if b, ok := o["ignore_result"].(bool); ok {
		m.IgnoreResult = b
	}

	// Times: countdown wins over eta, as in as_task_v2; expires is a
	// number of seconds or a time, and also becomes the AMQP expiration
	// property in milliseconds (0 when already past).
	if v := o["countdown"]; v != nil && !isZero(v) {
		s, ok := toFloat(v)
		if !ok || math.IsNaN(s) || math.IsInf(s, 0) {
			return fail("countdown %v is not a number of seconds", v)
		}
		eta := now.Add(secondsDuration(s))
		m.ETA = &eta
	} else if v := o["eta"]; v != nil {
		t, err := toTime(v)
		if err != nil {
			return fail("eta: %v", err)
		}
		m.ETA = &t
	}
	if v := o["expires"]; v != nil {
		var exp time.Time
		var left float64
		if s, ok := toFloat(v); ok {
			if math.IsNaN(s) || math.IsInf(s, 0) {
				return fail("expires %v is not a number of seconds", v)
			}
			exp, left = now.Add(secondsDuration(s)), s
		} else {
			t, err := toTime(v)
			if err != nil {
				return fail("expires: %v", err)
			}
			exp, left = t, t.Sub(now).Seconds()
		}
		m.Expires = &exp
		if left < 0 {
			left = 0
		}
		m.Expiration = strconv.FormatInt(int64(left*1000), 10)
	}
	if v := o["priority"]; v != nil {
		p, ok := toInt(v)
		if !ok || p < 0 || p > 255 {
			return fail("priority %v is not within 0..255", v)
		}
		m.Priority = uint8(p)
	} else if c.cfg.DefaultPriority > 0 {
		m.Priority = uint8(c.cfg.DefaultPriority)
	}
	for _, k := range []string{"time_limit", "soft_time_limit"} {
		if v := o[k]; v != nil {
			s, ok := toFloat(v)
			if !ok || s < 0 || math.IsNaN(s) || math.IsInf(s, 0) {
				return fail("%s %v is not a number of seconds", k, v)
			}
			if k == "time_limit" {
				m.TimeLimit.Hard = s
			} else {
				m.TimeLimit.Soft = s
			}
		}
	}
	if h, ok := o["headers"].(map[string]any); ok && len(h) > 0 {
		m.Headers = maps.Clone(h)
	}
	// argsrepr/kwargsrepr: the protocol renders plain values as Python's
	// repr(); typed Go values (structs, typed slices and maps) are shown
	// as the dicts and lists Python will see.
	if !isPlain(args, 0) {
		m.ArgsRepr = tupleRepr(asPlain(args).([]any))
	}
	if !isPlain(kwargs, 0) {
		m.KwargsRepr = limitRepr(protocol.PyRepr(asPlain(kwargs)))
	}
	var err error
	if m.Callbacks, err = wireSignatures(o["link"]); err != nil {
		return fail("link: %v", err)
	}
	if m.Errbacks, err = wireSignatures(o["link_error"]); err != nil {
		return fail("link_error: %v", err)
	}
	if m.Chain, err = wireSignatures(o["chain"]); err != nil {
		return fail("chain: %v", err)
	}
	if v := o["chord"]; v != nil {
		s, err := wireSignature(v)
		if err != nil {
			return fail("chord: %v", err)
		}
		m.Chord = &s
	}

	enc.Serializer = c.cfg.Serializer
	if s := str(o["serializer"]); s != "" {
		enc.Serializer = s
	}
	if _, _, err := protocol.ContentType(enc.Serializer); err != nil {
		return fail("%v", err)
	}
	enc.Compression = c.cfg.Compression
	if s := str(o["compression"]); s != "" {
		enc.Compression = s
	}

	// Routing, as Celery's send_task_message (broker.RouteTo): the queue
	// is declared as the topology defines it before publishing, and a
	// countdown/ETA for a quorum queue goes through native delayed
	// delivery.
	queue := str(o["queue"])
	if queue == "" {
		queue = c.cfg.DefaultQueue
	}
	q, err := c.cfg.Topology.Lookup(queue)
	if err != nil {
		return fail("%v", err)
	}
	route = broker.RouteTo(q, str(o["exchange"]), str(o["routing_key"]), m.ETA)
	return m, enc, route, nil
}

// send publishes one task message for the options o.
func (c *Client) send(ctx context.Context, name string, args []any, kwargs map[string]any, o map[string]any) (*AsyncResult, error) {
	m, enc, route, err := c.message(ctx, name, args, kwargs, o, time.Now().UTC())
	if err != nil {
		return nil, err
	}
	env, err := protocol.Encode(m, enc)
	if err != nil {
		return nil, fmt.Errorf("client: send %s: %w", name, err)
	}
	if err := c.publish(ctx, route, env, nil); err != nil {
		return nil, err
	}
	if req, ok := tasks.RequestFromContext(ctx); ok {
		// Recorded in the running task's result as Celery records
		// request.children.
		req.AddChild([]any{[]any{m.ID, nil}, nil})
	}
	r := c.AsyncResult(m.ID)
	r.Ignored = m.IgnoreResult
	return r, nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func isZero(v any) bool {
	f, ok := toFloat(v)
	return ok && f == 0
}

func secondsDuration(s float64) time.Duration {
	return time.Duration(math.Round(s * float64(time.Second)))
}

// toInt reads an integer option: what protocol.Int takes, and also a
// uint or a whole float64 (options given from Go code).
func toInt(v any) (int64, bool) {
	switch x := v.(type) {
	case uint:
		return int64(x), x <= math.MaxInt64
	case float64:
		return int64(x), x == math.Trunc(x)
	}
	return protocol.Int(v)
}

func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case float32:
		return float64(x), true
	case time.Duration:
		return x.Seconds(), true
	case interface{ Float64() (float64, error) }: // json.Number
		f, err := x.Float64()
		return f, err == nil
	}
	if n, ok := toInt(v); ok {
		return float64(n), true
	}
	return 0, false
}

// toTime reads a time option: a time.Time, a kombu datetime, or an ISO
// 8601 string (naive means UTC, as Celery reads it).
func toTime(v any) (time.Time, error) {
	switch x := v.(type) {
	case time.Time:
		return x, nil
	case *time.Time:
		if x != nil {
			return *x, nil
		}
	case protocol.DateTime:
		return x.Time, nil
	case string:
		t, _, err := protocol.ParseTime(x)
		return t, err
	}
	return time.Time{}, fmt.Errorf("%v (%T) is not a time", v, v)
}

// isPlain reports whether v holds only values protocol.PyRepr renders as
// Python would (the decoded value model).
func isPlain(v any, depth int) bool {
	if depth > 100 {
		return false
	}
	switch x := v.(type) {
	case nil, bool, string, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64,
		float32, float64, json.Number, *big.Int, []byte:
		return true
	case []any:
		for _, e := range x {
			if !isPlain(e, depth+1) {
				return false
			}
		}
		return true
	case map[string]any:
		for _, e := range x {
			if !isPlain(e, depth+1) {
				return false
			}
		}
		return true
	}
	return false
}

// asPlain is v as the receiving side decodes it.
func asPlain(v any) any {
	raw, err := protocol.MarshalJSON(v)
	if err != nil {
		return v
	}
	p, err := protocol.DecodeJSON(raw)
	if err != nil {
		return v
	}
	return p
}

// tupleRepr is repr(tuple(args)), cut as Celery cuts argsrepr.
func tupleRepr(args []any) string {
	var b strings.Builder
	b.WriteByte('(')
	for i, a := range args {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(protocol.PyRepr(a))
	}
	if len(args) == 1 {
		b.WriteByte(',')
	}
	b.WriteByte(')')
	return limitRepr(b.String())
}

func limitRepr(s string) string {
	const max = 1024
	if len(s) <= max {
		return s
	}
	return s[:max-3] + "..."
}
