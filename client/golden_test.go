package client_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/broker/brokertest"
	"github.com/celeryworker/gocelery/client"
	"github.com/celeryworker/gocelery/protocol"
)

// The golden files in ../testdata/golden hold task messages Python Celery
// 5.7 published (interop/capture_golden.py). Each case below makes the
// same call with the Go client, on an in-memory broker, and compares the
// message it publishes with the captured one: every header, every
// property, and the body decoded (Go writes map keys sorted, Python in
// insertion order, so bytes are not compared). What differs by nature is
// allowed: lang ("go", Python writes "py"), and times Celery computed from
// the capture's clock (countdown, relative expires), which are checked
// against this run's clock instead. Origin and reply_to are set to the
// captured ones through Config.

type golden struct {
	Name       string         `json:"name"`
	Properties map[string]any `json:"properties"`
	Headers    map[string]any `json:"headers"`
	BodyBase64 string         `json:"body_base64"`
	Expect     map[string]any `json:"expect"`
}

func readGoldenFile(t *testing.T, name string) *golden {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "testdata", "golden", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var g golden
	if err := dec.Decode(&g); err != nil {
		t.Fatal(err)
	}
	return &g
}

// envelope rebuilds the captured delivery.
func (g *golden) envelope(t *testing.T) *protocol.Envelope {
	b, err := base64.StdEncoding.DecodeString(g.BodyBase64)
	if err != nil {
		t.Fatal(err)
	}
	s := func(k string) string { v, _ := g.Properties[k].(string); return v }
	u8 := func(k string) uint8 {
		n, _ := g.Properties[k].(json.Number)
		i, _ := strconv.Atoi(string(n))
		return uint8(i)
	}
	return &protocol.Envelope{ContentType: s("content_type"), ContentEncoding: s("content_encoding"),
		Headers: g.Headers, CorrelationID: s("correlation_id"), ReplyTo: s("reply_to"),
		DeliveryMode: u8("delivery_mode"), Priority: u8("priority"), Expiration: s("expiration"), Body: b}
}

func (g *golden) str(k string) string { v, _ := g.Expect[k].(string); return v }

func (g *golden) strs(k string) []string {
	var out []string
	l, _ := g.Expect[k].([]any)
	for _, e := range l {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}

// goldenClient is a client configured with the capture's origin and
// reply_to, on an in-memory broker.
func goldenClient(t *testing.T, g *golden, cfg client.Config) (*client.Client, *brokertest.Broker) {
	cfg.Origin, _ = g.Headers["origin"].(string)
	cfg.ID, _ = g.Properties["reply_to"].(string)
	return memClient(t, cfg)
}

func fixedID(n int) string { return fmt.Sprintf("601de000-0000-4000-8000-%012x", n) }

type goldenCase struct {
	file string
	// send makes the call; it returns the id of the message to compare.
	send func(ctx context.Context, t *testing.T, c *client.Client, g *golden) string
	// relative lists headers Celery computed from its clock: name -> the
	// offset from now it must have here.
	relative map[string]time.Duration
	// relExpiration: the expiration property is relative to the capture's
	// clock; check it against expires - now instead.
	relExpiration bool
	// noRepr: Python's saferepr abbreviates deep values and keeps kwargs
	// in insertion order; argsrepr/kwargsrepr are then only checked to be
	// set.
	noRepr bool
	// needsRedis: the case sends a chord.
	needsRedis bool
}

func args(t *testing.T, g *golden) ([]any, map[string]any) {
	b := body(t, g.envelope(t))
	kw, _ := b[1].(map[string]any)
	return b[0].([]any), kw
}

var goldenCases = []goldenCase{
	{file: "v2_json_basic", send: func(ctx context.Context, t *testing.T, c *client.Client, g *golden) string {
		return sendOrFail(ctx, t, c, "gocelery.add", []any{2, 3}, nil, client.TaskID(g.str("id")))
	}},
	{file: "v2_json_kwargs", send: func(ctx context.Context, t *testing.T, c *client.Client, g *golden) string {
		return sendOrFail(ctx, t, c, "gocelery.add", nil, map[string]any{"x": 40, "y": 2}, client.TaskID(g.str("id")))
	}},
	{file: "v2_json_every_type", noRepr: true, send: func(ctx context.Context, t *testing.T, c *client.Client, g *golden) string {
		a, kw := args(t, g)
		return sendOrFail(ctx, t, c, "gocelery.echo", a, kw, client.TaskID(g.str("id")))
	}},
	{file: "v2_msgpack", noRepr: true, send: func(ctx context.Context, t *testing.T, c *client.Client, g *golden) string {
		a, kw := args(t, g)
		return sendOrFail(ctx, t, c, "gocelery.echo", a, kw, client.TaskID(g.str("id")), client.Serializer("msgpack"))
	}},
	{file: "v2_json_zlib", send: compressed("zlib")},
	{file: "v2_json_gzip", send: compressed("gzip")},
	{file: "v2_msgpack_zlib", send: func(ctx context.Context, t *testing.T, c *client.Client, g *golden) string {
		return sendOrFail(ctx, t, c, "gocelery.echo", []any{1, "two", 3.5}, map[string]any{"k": nil},
			client.TaskID(g.str("id")), client.Serializer("msgpack"), client.Compression("zlib"))
	}},
	{file: "v2_countdown", relative: map[string]time.Duration{"eta": 60 * time.Second},
		send: func(ctx context.Context, t *testing.T, c *client.Client, g *golden) string {
			return sendOrFail(ctx, t, c, "gocelery.add", []any{1, 2}, nil, client.TaskID(g.str("id")), client.Countdown(60*time.Second))
		}},
	{file: "v2_eta_offset", send: func(ctx context.Context, t *testing.T, c *client.Client, g *golden) string {
		return sendOrFail(ctx, t, c, "gocelery.add", []any{1, 2}, nil, client.TaskID(g.str("id")), client.ETA(goldenETA))
	}},
	{file: "v2_expires", relative: map[string]time.Duration{"expires": 120 * time.Second},
		send: func(ctx context.Context, t *testing.T, c *client.Client, g *golden) string {
			return sendOrFail(ctx, t, c, "gocelery.add", []any{1, 2}, nil, client.TaskID(g.str("id")), client.Expires(120*time.Second))
		}},
	{file: "v2_eta_expires_datetimes", relExpiration: true, send: func(ctx context.Context, t *testing.T, c *client.Client, g *golden) string {
		expires := time.Date(2031, 3, 1, 12, 0, 0, 0, time.FixedZone("", -7*3600))
		return sendOrFail(ctx, t, c, "gocelery.add", []any{5, 6}, nil, client.TaskID(g.str("id")),
			client.ETA(goldenETA), client.ExpiresAt(expires))
	}},
	{file: "v2_timelimit", send: func(ctx context.Context, t *testing.T, c *client.Client, g *golden) string {
		return sendOrFail(ctx, t, c, "gocelery.add", []any{1, 2}, nil, client.TaskID(g.str("id")),
			client.TimeLimit(10*time.Second), client.SoftTimeLimit(5*time.Second))
	}},
	{file: "v2_timelimit_soft_only", send: func(ctx context.Context, t *testing.T, c *client.Client, g *golden) string {
		return sendOrFail(ctx, t, c, "gocelery.add", []any{1, 2}, nil, client.TaskID(g.str("id")), client.SoftTimeLimit(2500*time.Millisecond))
	}},
	{file: "v2_priority", send: func(ctx context.Context, t *testing.T, c *client.Client, g *golden) string {
		return sendOrFail(ctx, t, c, "gocelery.add", []any{1, 2}, nil, client.TaskID(g.str("id")), client.Priority(5))
	}},
	{file: "v2_ignore_result", send: func(ctx context.Context, t *testing.T, c *client.Client, g *golden) string {
		return sendOrFail(ctx, t, c, "gocelery.add", []any{1, 2}, nil, client.TaskID(g.str("id")), client.IgnoreResult())
	}},
	{file: "v2_link", send: func(ctx context.Context, t *testing.T, c *client.Client, g *golden) string {
		return sendOrFail(ctx, t, c, "gocelery.add", []any{2, 3}, nil, client.TaskID(g.str("id")),
			client.Link(client.S("gocelery.echo", "cb").Set(client.TaskID(g.strs("callback_ids")[0]))),
			client.LinkError(client.S("gocelery.on_error").Set(client.TaskID(g.strs("errback_ids")[0]))))
	}},
	{file: "v2_link_many", send: func(ctx context.Context, t *testing.T, c *client.Client, g *golden) string {
		return sendOrFail(ctx, t, c, "gocelery.add", []any{2, 3}, nil, client.TaskID(g.str("id")),
			client.Link(client.S("gocelery.echo", "a"), client.S("gocelery.mul", 10)),
			client.LinkError(client.S("gocelery.on_error"), client.SI("gocelery.echo", "err")))
	}},
	{file: "v2_chain", send: func(ctx context.Context, t *testing.T, c *client.Client, g *golden) string {
		ids := g.strs("chain_ids") // wire order: last step first
		ch := client.Chain(
			client.S("gocelery.add", 1, 2).Set(client.TaskID(g.str("id"))),
			client.S("gocelery.add", 3).Set(client.TaskID(ids[1])),
			client.S("gocelery.add", 4).Set(client.TaskID(ids[0])))
		r, err := c.Apply(ctx, ch, client.Queue("golden"))
		if err != nil {
			t.Fatal(err)
		}
		if r.ID != ids[0] || r.Parent == nil || r.Parent.ID != ids[1] || r.Parent.Parent == nil || r.Parent.Parent.ID != g.str("id") {
			t.Errorf("chain result %v: want the last step's id with parents back to the first", r.ID)
		}
		return g.str("id")
	}},
	{file: "v2_chain_distinct", send: func(ctx context.Context, t *testing.T, c *client.Client, g *golden) string {
		ids := g.strs("chain_ids")
		ch := client.Chain(
			client.S("gocelery.add", 1, 2).Set(client.TaskID(g.str("id"))),
			client.S("gocelery.mul", 3).Set(client.TaskID(ids[2])),
			client.S("gocelery.echo").Set(client.TaskID(ids[1])),
			client.SI("gocelery.xsum", []any{1, 2}).Set(client.TaskID(ids[0])))
		if _, err := c.Apply(ctx, ch, client.Queue("golden")); err != nil {
			t.Fatal(err)
		}
		return g.str("id")
	}},
	{file: "v2_group_member", send: groupCase},
	{file: "v2_group_member0", send: groupCase},
	{file: "v2_chord_member", needsRedis: true, send: func(ctx context.Context, t *testing.T, c *client.Client, g *golden) string {
		b := body(t, g.envelope(t))
		chordOpts := b[2].(map[string]any)["chord"].(map[string]any)["options"].(map[string]any)
		ch := client.Chord([]*client.Signature{
			client.S("gocelery.add", 1, 1).Set(client.TaskID(g.str("id"))),
			client.S("gocelery.add", 2, 2).Set(client.TaskID(fixedID(302))),
		}, client.S("gocelery.xsum").Set(client.TaskID(g.str("chord_id"))))
		r, err := c.Apply(ctx, ch, client.Queue(chordOpts["queue"].(string)))
		if err != nil {
			t.Fatal(err)
		}
		if r.ID != g.str("chord_id") || r.Header == nil || len(r.Header.Results) != 2 {
			t.Fatalf("chord result %+v: want the body's id and the header group", r)
		}
		t.Cleanup(func() { c.Backend().ChordCleanup(context.Background(), r.Header.ID) })
		return g.str("id")
	}},
}

var goldenETA = time.Date(2031, 2, 3, 4, 5, 6, 789012000, time.FixedZone("", 5*3600+30*60))

func sendOrFail(ctx context.Context, t *testing.T, c *client.Client, name string, a []any, kw map[string]any, opts ...client.Option) string {
	t.Helper()
	r, err := c.SendTask(ctx, name, a, kw, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return r.ID
}

func compressed(comp string) func(ctx context.Context, t *testing.T, c *client.Client, g *golden) string {
	return func(ctx context.Context, t *testing.T, c *client.Client, g *golden) string {
		n, _ := new(big.Int).SetString("18446744073709551621", 10)
		x := make([]any, 20)
		for i := range x {
			x[i] = "x"
		}
		return sendOrFail(ctx, t, c, "gocelery.echo", []any{"compressed", n, x}, map[string]any{"unicode": "日本"},
			client.TaskID(g.str("id")), client.Compression(comp))
	}
}

func groupCase(ctx context.Context, t *testing.T, c *client.Client, g *golden) string {
	gid := g.Headers["group"].(string)
	gr, err := c.ApplyGroup(ctx, client.Group(
		client.S("gocelery.add", 1, 1).Set(client.TaskID(fixedID(201))),
		client.S("gocelery.add", 2, 2).Set(client.TaskID(fixedID(202)))),
		client.TaskID(gid), client.Queue("golden"))
	if err != nil {
		t.Fatal(err)
	}
	if gr.ID != gid || !reflect.DeepEqual(gr.IDs(), []string{fixedID(201), fixedID(202)}) {
		t.Errorf("group result %s %v", gr.ID, gr.IDs())
	}
	return g.str("id")
}

func TestGoldenMessages(t *testing.T) {
	for _, gc := range goldenCases {
		t.Run(gc.file, func(t *testing.T) {
			g := readGoldenFile(t, gc.file)
			var cfg client.Config
			if gc.needsRedis {
				cfg.Backend = newRedis(t)
			}
			c, b := goldenClient(t, g, cfg)
			ctx := testCtx(t, 10*time.Second)
			before := time.Now()
			id := gc.send(ctx, t, c, g)
			after := time.Now()
			sent := published(t, b, id)
			compareGolden(t, gc, g, sent.Envelope, before, after)
			if sent.Route.Exchange != "" || sent.Route.RoutingKey == "" {
				t.Errorf("route %+v: want the default exchange and the queue's name", sent.Route)
			}
		})
	}
}

// Go's standard library reads bzip2 but cannot write it: the client says so.
func TestGoldenBzip2Refused(t *testing.T) {
	c, _ := memClient(t, client.Config{})
	_, err := c.SendTask(context.Background(), "gocelery.echo", []any{1}, nil, client.Compression("bzip2"))
	if !errors.Is(err, protocol.ErrUnknownCompression) {
		t.Fatalf("bzip2: %v, want ErrUnknownCompression", err)
	}
}

func compareGolden(t *testing.T, gc goldenCase, g *golden, env *protocol.Envelope, before, after time.Time) {
	t.Helper()
	want := g.envelope(t)
	// The chord's group id is random in the capture and here.
	ids := map[string]string{}
	if gw, _ := want.Headers["group"].(string); gw != "" && gc.needsRedis {
		ids[gw], _ = env.Headers["group"].(string)
	}

	// Headers.
	for k := range want.Headers {
		if _, ok := env.Headers[k]; !ok {
			t.Errorf("header %q missing (Python sends %v)", k, want.Headers[k])
		}
	}
	for k, got := range env.Headers {
		w, ok := want.Headers[k]
		switch {
		case !ok:
			t.Errorf("header %q = %v: Python sends no such header", k, got)
		case k == "lang":
			if got != "go" || w != "py" {
				t.Errorf("lang %v (Python %v)", got, w)
			}
		case k == "group" && len(ids) > 0:
			if s, _ := got.(string); s == "" {
				t.Errorf("chord member has no group")
			}
		case gc.relative[k] != 0:
			s, _ := got.(string)
			tm, _, err := protocol.ParseTime(s)
			d := gc.relative[k]
			if err != nil || tm.Before(before.Add(d-time.Second)) || tm.After(after.Add(d+time.Second)) {
				t.Errorf("header %s = %v: want now + %v", k, got, d)
			}
			if !strings.HasSuffix(s, "+00:00") {
				t.Errorf("header %s = %q: want an aware UTC time as Celery writes", k, s)
			}
		case gc.noRepr && (k == "argsrepr" || k == "kwargsrepr"):
			if s, _ := got.(string); s == "" {
				t.Errorf("header %s is empty", k)
			}
		default:
			if !equalJSON(t, got, w) {
				t.Errorf("header %s = %#v, Python sends %#v", k, viaJSON(t, got), w)
			}
		}
	}

	// Properties.
	check := func(name string, got, w any) {
		if !reflect.DeepEqual(got, w) {
			t.Errorf("property %s = %#v, Python sends %#v", name, got, w)
		}
	}
	check("content_type", env.ContentType, want.ContentType)
	check("content_encoding", env.ContentEncoding, want.ContentEncoding)
	check("correlation_id", env.CorrelationID, want.CorrelationID)
	check("reply_to", env.ReplyTo, want.ReplyTo)
	check("delivery_mode", env.DeliveryMode, want.DeliveryMode)
	check("priority", env.Priority, want.Priority)
	if gc.relExpiration {
		exp, _, _ := protocol.ParseTime(want.Headers["expires"].(string))
		ms, err := strconv.ParseInt(env.Expiration, 10, 64)
		lo, hi := exp.Sub(after).Milliseconds()-1000, exp.Sub(before).Milliseconds()+1000
		if err != nil || ms < lo || ms > hi {
			t.Errorf("expiration %q: want expires - now in ms (%d..%d)", env.Expiration, lo, hi)
		}
	} else {
		check("expiration", env.Expiration, want.Expiration)
	}

	// Body: the same values, decoded.
	gotBody, wantBody := body(t, env), body(t, want)
	wantBody = replaceStrings(wantBody, ids).([]any)
	if !reflect.DeepEqual(gotBody, wantBody) {
		for i, part := range []string{"args", "kwargs", "embed"} {
			if !reflect.DeepEqual(gotBody[i], wantBody[i]) {
				t.Errorf("body %s:\n got  %s\n want %s", part, protocol.PyRepr(gotBody[i]), protocol.PyRepr(wantBody[i]))
			}
		}
	}
	// And the Go worker's decoder reads it as it reads Python's message.
	m, wm := decodeMsg(t, env), decodeMsg(t, want)
	if m.ID != wm.ID || m.Task != wm.Task || m.RootID != wm.RootID || m.Retries != wm.Retries {
		t.Errorf("decoded %+v, want %+v", m, wm)
	}
}

func replaceStrings(v any, m map[string]string) any {
	if len(m) == 0 {
		return v
	}
	switch x := v.(type) {
	case string:
		if r, ok := m[x]; ok {
			return r
		}
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = replaceStrings(e, m)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = replaceStrings(e, m)
		}
		return out
	}
	return v
}
