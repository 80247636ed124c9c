package cli

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
)

func TestCompileArguments(t *testing.T) {
	for _, c := range []struct {
		cmd, method string
		args        []string
		want        map[string]any
	}{
		{"inspect", "ping", nil, map[string]any{}},
		{"inspect", "registered", nil, map[string]any{"taskinfoitems": []any{}}},
		{"inspect", "registered", []string{"rate_limit", "time_limit"}, map[string]any{"taskinfoitems": []any{"rate_limit", "time_limit"}}},
		{"inspect", "query_task", []string{"a", "b"}, map[string]any{"ids": []any{"a", "b"}}},
		{"inspect", "conf", []string{"yes"}, map[string]any{"with_defaults": true}},
		{"inspect", "memdump", []string{"5"}, map[string]any{"samples": int64(5)}},
		{"control", "revoke", []string{"id1", "id2"}, map[string]any{"task_id": []any{"id1", "id2"}}},
		{"control", "terminate", []string{"SIGKILL", "id1"}, map[string]any{"signal": "SIGKILL", "task_id": []any{"id1"}}},
		{"control", "rate_limit", []string{"t.x", "10/s"}, map[string]any{"task_name": "t.x", "rate_limit": "10/s"}},
		{"control", "time_limit", []string{"t.x", "5", "10.5"}, map[string]any{"task_name": "t.x", "soft": 5.0, "hard": 10.5}},
		{"control", "time_limit", []string{"t.x", "5"}, map[string]any{"task_name": "t.x", "soft": 5.0}},
		{"control", "add_consumer", []string{"q", "ex", "topic", "rk"}, map[string]any{"queue": "q", "exchange": "ex", "exchange_type": "topic", "routing_key": "rk"}},
		{"control", "cancel_consumer", []string{"q"}, map[string]any{"queue": "q"}},
		{"control", "pool_grow", nil, map[string]any{}},
		{"control", "autoscale", []string{"10", "2"}, map[string]any{"max": int64(10), "min": int64(2)}},
		{"control", "revoke_by_stamped_headers", []string{"k=v"}, map[string]any{"headers": []any{"k=v"}}},
	} {
		_, method, got, _, err := parseRemote("gocelery", c.cmd, append([]string{c.method}, c.args...))
		if err != nil || method != c.method || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s %s %q: %v, %#v; want %#v", c.cmd, c.method, c.args, err, got, c.want)
		}
	}
}

func TestRemoteUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"inspect"}, "missing the COMMAND"},
		{[]string{"inspect", "bogus"}, `command "bogus" not recognized; inspect commands: active, active_queues`},
		{[]string{"inspect", "revoke", "x"}, `command "revoke" not recognized`},
		{[]string{"control", "ping"}, `command "ping" not recognized`},
		{[]string{"inspect", "ping", "extra"}, `ping takes no arguments, got "extra"`},
		{[]string{"inspect", "memdump", "many"}, `memdump: samples "many": not an integer`},
		{[]string{"inspect", "conf", "maybe"}, "not a boolean"},
		{[]string{"control", "revoke"}, "revoke needs at least one value"},
		{[]string{"control", "terminate", "SIGTERM"}, "terminate needs at least one value"},
		{[]string{"control", "rate_limit", "t.x"}, "rate_limit needs rate_limit (usage: rate_limit <task_name> <rate_limit"},
		{[]string{"control", "time_limit", "t.x", "soon"}, `time_limit: soft "soon": not a number`},
		{[]string{"control", "cancel_consumer", "a", "b"}, `cancel_consumer: unexpected argument "b" (usage: cancel_consumer <queue>)`},
		{[]string{"inspect", "ping", "-t", "0"}, "--timeout"},
		{[]string{"inspect", "ping", "--nope"}, "--nope"},
		{[]string{"status", "x"}, `unexpected argument "x"`},
	} {
		code, out, errb := run(t, producer, c.args...)
		if code != 2 || out != "" || !strings.Contains(errb, c.want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2 and %q", c.args, code, out, errb, c.want)
		}
	}
	for _, cmd := range []string{"inspect", "control"} {
		code, out, _ := run(t, producer, cmd, "--list")
		hasPing := strings.Contains(out, "ping ")
		if code != 0 || hasPing != (cmd == "inspect") || !strings.Contains(out, "registered") && cmd == "inspect" {
			t.Errorf("%s --list: exit %d, %q", cmd, code, out)
		}
		code, out, _ = run(t, producer, "help", cmd)
		if code != 0 || !strings.Contains(out, "usage: gocelery [global options] "+cmd+" COMMAND") || !strings.Contains(out, "--destination") {
			t.Errorf("help %s: exit %d, %q", cmd, code, out)
		}
	}
}

// The human output is `celery inspect`'s, byte for byte.
func TestFormatReply(t *testing.T) {
	for _, c := range []struct {
		v    any
		want string
	}{
		{map[string]any{"ok": "pong"}, "->  w@h: OK\n        pong\n"},
		{map[string]any{"error": "KeyError('nope')"}, "->  w@h: ERROR\n        KeyError('nope')\n"},
		{[]any{"gocelery.add", "gocelery.limited [rate_limit=5/s]"}, "->  w@h: OK\n    * gocelery.add\n    * gocelery.limited [rate_limit=5/s]\n"},
		{[]any{}, "->  w@h: OK\n    - empty -\n"},
		{[]any{map[string]any{"id": "x", "args": []any{json.Number("1")}}}, "->  w@h: OK\n    * {'args': [1], 'id': 'x'}\n"},
		{map[string]any{"clock": json.Number("12")}, "->  w@h: OK\n    {\n        \"clock\": 12\n    }\n"},
		{map[string]any{"b": map[string]any{}, "a": []any{}}, "->  w@h: OK\n    {\n        \"a\": [],\n        \"b\": {}\n    }\n"},
		{map[string]any{"ok": []any{"x"}}, "->  w@h: OK\n        * x\n"},
		{nil, "->  w@h: OK\n    None\n"},
	} {
		if got := formatReply(client.ControlReply{Node: "w@h", Value: c.v}, true, false); got != c.want {
			t.Errorf("%#v:\n got %q\nwant %q", c.v, got, c.want)
		}
	}
	if got := formatReply(client.ControlReply{Node: "w@h", Value: map[string]any{"ok": "pong"}}, false, false); got != "->  w@h: OK\n" {
		t.Errorf("status: %q", got)
	}
	if got := formatReply(client.ControlReply{Node: "w@h", Value: map[string]any{"ok": "pong"}}, true, true); got != " w@h: OK\n        pong\n" {
		t.Errorf("quiet: %q", got)
	}
}

// inspect and control against a running worker (in memory): the replies,
// the human and JSON output, and the exit statuses.
func TestInspectAndControl(t *testing.T) {
	b := memBroker(t)
	node := memWorker(t, b, "qi", nil)

	code, out, errb := run(t, producer, "inspect", "ping", "-d", node)
	if want := "->  " + node + ": OK\n        pong\n\n1 node online.\n"; code != 0 || out != want {
		t.Errorf("ping: exit %d, stderr %q\n got %q\nwant %q", code, errb, out, want)
	}
	code, out, _ = run(t, producer, "inspect", "ping", "-d", node, "--json")
	if want := `{"` + node + `": {"ok": "pong"}}` + "\n"; code != 0 || out != want {
		t.Errorf("ping --json: exit %d, %q", code, out)
	}
	// -q (a global option) drops the arrows and the count, as in Celery.
	code, out, _ = run(t, producer, "-q", "inspect", "ping", "-d", node)
	if want := " " + node + ": OK\n        pong\n"; code != 0 || out != want {
		t.Errorf("-q ping: exit %d, %q", code, out)
	}
	code, out, _ = run(t, producer, "inspect", "registered", "-d", node)
	if code != 0 || !strings.Contains(out, "    * gocelery.add\n") || !strings.Contains(out, "    * gocelery.limited [rate_limit=5/s]\n") {
		t.Errorf("registered: exit %d, %q", code, out)
	}
	code, out, _ = run(t, producer, "inspect", "stats", "--json", "-d", node)
	var stats map[string]map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &stats) != nil || stats[node]["pool"] == nil {
		t.Errorf("stats: exit %d, %q", code, out)
	}
	code, out, _ = run(t, producer, "inspect", "active_queues", "-d", node)
	if code != 0 || !strings.Contains(out, "'name': 'qi'") {
		t.Errorf("active_queues: exit %d, %q", code, out)
	}
	code, out, _ = run(t, producer, "control", "rate_limit", "gocelery.limited", "10/s", "-d", node)
	if want := "->  " + node + ": OK\n        new rate limit set successfully\n"; code != 0 || out != want {
		t.Errorf("rate_limit: exit %d, %q", code, out)
	}
	code, out, _ = run(t, producer, "inspect", "registered", "-d", node)
	if !strings.Contains(out, "gocelery.limited [rate_limit=10/s]") {
		t.Errorf("registered after rate_limit: %q", out)
	}
	code, out, _ = run(t, producer, "control", "rate_limit", "no.such.task", "1/s", "-d", node)
	if code != 0 || !strings.Contains(out, ": ERROR\n") {
		t.Errorf("rate_limit unknown task: exit %d, %q", code, out)
	}
	code, out, _ = run(t, producer, "control", "revoke", "some-id", "-d", node)
	if code != 0 || !strings.Contains(out, "tasks {'some-id'} flagged as revoked") {
		t.Errorf("revoke: exit %d, %q", code, out)
	}
	code, out, _ = run(t, producer, "inspect", "revoked", "-d", node)
	if code != 0 || !strings.Contains(out, "    * some-id\n") {
		t.Errorf("revoked: exit %d, %q", code, out)
	}
	code, out, _ = run(t, producer, "status")
	if want := "->  " + node + ": OK\n\n1 node online.\n"; code != 0 || out != want {
		t.Errorf("status: exit %d, %q", code, out)
	}
	// A -d naming no worker: nobody replies within -t, exit 69.
	start := time.Now()
	code, out, errb = run(t, producer, "inspect", "ping", "-d", "nobody@nowhere", "-t", "0.2")
	if code != exitUnavailable || out != "" || !strings.Contains(errb, "no nodes replied within 200ms") {
		t.Errorf("no reply: exit %d, stdout %q, stderr %q", code, out, errb)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 5*time.Second {
		t.Errorf("no reply took %v", d)
	}
	code, out, _ = run(t, producer, "control", "shutdown", "-d", "nobody@nowhere")
	if code != 0 || !strings.Contains(out, "shutdown sent to nobody@nowhere") {
		t.Errorf("shutdown: exit %d, %q", code, out)
	}
}

// The request is kombu's: method, arguments, destination, pattern,
// matcher, ticket and reply_to in a JSON body, clock and expires headers;
// replies with another ticket are not counted; with -d the call ends as
// soon as every node named has replied.
func TestControlRequestShape(t *testing.T) {
	b := memBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := b.Dial(ctx, broker.DialParams{Name: "fake worker"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	reqs, err := conn.ConsumeControl(ctx, "fake@node")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan map[string]any, 1)
	go func() {
		env := <-reqs
		body, _ := protocol.DecodeJSON(env.Body)
		m, _ := body.(map[string]any)
		m["headers"] = env.Headers
		got <- m
		rt, _ := m["reply_to"].(map[string]any)
		ex, _ := rt["exchange"].(string)
		key, _ := rt["routing_key"].(string)
		reply := func(ticket, text string) {
			raw, _ := protocol.MarshalJSON(map[string]any{"fake@node": map[string]any{"ok": text}})
			_ = conn.PublishReply(ctx, ex, key, &protocol.Envelope{ContentType: "application/json", ContentEncoding: "utf-8",
				Headers: map[string]any{"ticket": ticket, "clock": int64(1)}, Body: raw})
		}
		reply("another-ticket", "not mine")
		reply(m["ticket"].(string), "rate limit disabled successfully")
	}()
	start := time.Now()
	code, out, errb := run(t, producer, "control", "rate_limit", "t.x", "0", "-d", "fake@node", "-t", "5", "--json")
	if code != 0 || out != `{"fake@node": {"ok": "rate limit disabled successfully"}}`+"\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errb)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v: the call should end when the one destination has replied", d)
	}
	m := <-got
	h, _ := m["headers"].(map[string]any)
	delete(m, "headers")
	ticket, _ := m["ticket"].(string)
	rt, _ := m["reply_to"].(map[string]any)
	if len(ticket) != 36 || rt["exchange"] != "reply.celery.pidbox" || len(rt["routing_key"].(string)) != 36 {
		t.Errorf("ticket %q reply_to %v", ticket, rt)
	}
	delete(m, "ticket")
	delete(m, "reply_to")
	want := map[string]any{"method": "rate_limit", "arguments": map[string]any{"task_name": "t.x", "rate_limit": "0"},
		"destination": []any{"fake@node"}, "pattern": nil, "matcher": nil}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("body\n got %#v\nwant %#v", m, want)
	}
	if _, ok := h["clock"].(int64); !ok {
		t.Errorf("clock header %#v", h["clock"])
	}
	exp, _ := h["expires"].(float64)
	if now := float64(time.Now().UnixNano()) / 1e9; exp < now-1 || exp > now+10 {
		t.Errorf("expires header %v (now %v)", exp, now)
	}
}
