package client_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/broker/brokertest"
	"github.com/celeryworker/gocelery/client"
	"github.com/celeryworker/gocelery/protocol"
)

func names(sigs []protocol.Signature) []string {
	out := make([]string, len(sigs))
	for i, s := range sigs {
		out[i] = s.Task
	}
	return out
}

func onlyMessage(t *testing.T, b *brokertest.Broker) *protocol.Message {
	t.Helper()
	p := b.Published()
	if len(p) != 1 {
		t.Fatalf("%d messages published, want 1", len(p))
	}
	return decodeMsg(t, p[0].Envelope)
}

func TestChainSplicesAndFreezes(t *testing.T) {
	c, b := memClient(t, client.Config{})
	ch := client.Chain(client.S("a", 1), client.Chain(client.S("b"), client.SI("c", 9)), client.S("d"))
	r, err := c.Apply(context.Background(), ch, client.Queue("q"),
		client.LinkError(client.S("eb")), client.Link(client.S("cb")))
	if err != nil {
		t.Fatal(err)
	}
	if ch.Tasks()[0].ID() != "" {
		t.Error("Apply changed the caller's signature")
	}
	m := onlyMessage(t, b)
	if m.Task != "a" || !equalJSON(t, m.Args, []any{1}) {
		t.Fatalf("first message %s%v", m.Task, m.Args)
	}
	// Wire order: the next step last.
	if got := names(m.Chain); !reflect.DeepEqual(got, []string{"d", "c", "b"}) {
		t.Errorf("chain %v", got)
	}
	// The chain's result is the last step's; parents lead back to the first.
	var ids []string
	for p := r; p != nil; p = p.Parent {
		ids = append(ids, p.ID)
	}
	want := []string{m.Chain[0].TaskID(), m.Chain[1].TaskID(), m.Chain[2].TaskID(), m.ID}
	if !reflect.DeepEqual(ids, want) {
		t.Errorf("result parents %v, want %v", ids, want)
	}
	for _, s := range m.Chain {
		if s.TaskID() == "" || s.Options["reply_to"] != c.ID() {
			t.Errorf("step %s not frozen: %v", s.Task, s.Options)
		}
		// link_error is copied onto every step; queue only on the first.
		if l, _ := s.Options["link_error"].([]any); len(l) != 1 {
			t.Errorf("step %s link_error %v", s.Task, s.Options["link_error"])
		}
		if _, ok := s.Options["queue"]; ok {
			t.Errorf("step %s got the chain's queue (Celery gives it to the first task only)", s.Task)
		}
	}
	if len(m.Errbacks) != 1 || m.Errbacks[0].Task != "eb" {
		t.Errorf("first step errbacks %v", m.Errbacks)
	}
	// link goes to the last step.
	if l, _ := m.Chain[0].Options["link"].([]any); len(l) != 1 || len(m.Callbacks) != 0 {
		t.Errorf("link on %v / first %v", m.Chain[0].Options["link"], m.Callbacks)
	}
	if !m.Chain[1].Immutable {
		t.Error("si step lost immutable")
	}
	if p := b.Published()[0]; p.Route.RoutingKey != "q" {
		t.Errorf("route %+v", p.Route)
	}
}

func TestGroupApply(t *testing.T) {
	c, b := memClient(t, client.Config{})
	g := client.Group(client.S("a", 1).Set(client.Queue("own")), client.Group(client.S("b", 2), client.SI("c")))
	if _, err := c.Apply(context.Background(), g); err == nil {
		t.Error("Apply of a group: no error")
	}
	gr, err := c.ApplyGroup(context.Background(), g, client.TaskID("gid"), client.Priority(3))
	if err != nil {
		t.Fatal(err)
	}
	if gr.ID != "gid" || len(gr.Results) != 3 {
		t.Fatalf("group result %s %v", gr.ID, gr.IDs())
	}
	p := b.Published()
	if len(p) != 3 {
		t.Fatalf("%d messages", len(p))
	}
	for i, s := range p {
		m := decodeMsg(t, s.Envelope)
		if m.Group != "gid" || m.GroupIndex == nil || *m.GroupIndex != i || m.ID != gr.Results[i].ID || m.Priority != 3 {
			t.Errorf("member %d: group %q index %v id %s priority %d", i, m.Group, m.GroupIndex, m.ID, m.Priority)
		}
		if m.RootID != m.ID || m.ParentID != "" {
			t.Errorf("member %d: root %s parent %s", i, m.RootID, m.ParentID)
		}
	}
	if p[0].Route.RoutingKey != "own" || p[1].Route.RoutingKey != "celery" {
		t.Errorf("routes %+v %+v", p[0].Route, p[1].Route)
	}
	// A one-member group is still a group; in a chain it is its member.
	if g, err := c.ApplyGroup(context.Background(), client.Group(client.S("solo"))); err != nil || len(g.Results) != 1 {
		t.Fatalf("one-member group: %v", err)
	}
	if r, err := c.Apply(context.Background(), client.Chain(client.S("x"), client.Group(client.S("solo")))); err != nil || r == nil {
		t.Fatalf("chain ending in a one-member group: %v", err)
	}
}

func TestChordNeedsBackend(t *testing.T) {
	c, b := memClient(t, client.Config{})
	_, err := c.Apply(context.Background(), client.Chord([]*client.Signature{client.S("a")}, client.S("body")))
	if !errors.Is(err, client.ErrNoBackend) {
		t.Errorf("chord without backend: %v", err)
	}
	_, err = c.Apply(context.Background(), client.Chain(client.S("x"), client.Group(client.S("a"), client.S("b")), client.S("y")))
	if !errors.Is(err, client.ErrNoBackend) {
		t.Errorf("group | step without backend: %v", err)
	}
	if n := len(b.Published()); n != 0 {
		t.Errorf("%d messages published before the error", n)
	}
	// An empty header runs the body at once with [], no counters needed.
	r, err := c.Apply(context.Background(), client.Chord(nil, client.S("body", "x")))
	if err != nil {
		t.Fatal(err)
	}
	m := onlyMessage(t, b)
	if m.ID != r.ID || !equalJSON(t, m.Args, []any{[]any{}, "x"}) {
		t.Errorf("empty chord body %s %v", m.ID, m.Args)
	}
}

func TestChord(t *testing.T) {
	rb := newRedis(t)
	c, b := memClient(t, client.Config{Backend: rb})
	ctx := testCtx(t, 10*time.Second)
	header := []*client.Signature{client.S("add", 1, 1), client.Chain(client.S("add", 2, 2), client.S("add", 1)), client.S("add", 3, 3)}
	r, err := c.Apply(ctx, client.Chord(header, client.S("xsum", "tail")), client.Queue("cq"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Header == nil || len(r.Header.Results) != 3 {
		t.Fatalf("chord result %+v", r)
	}
	gid := r.Header.ID
	t.Cleanup(func() { rb.ChordCleanup(context.Background(), gid) })
	size, err := rb.Client().Get(ctx, rb.GroupKey(gid)+".s").Result()
	if err != nil || size != "3" {
		t.Errorf("chord size %q, %v: want 3", size, err)
	}
	p := b.Published()
	if len(p) != 3 {
		t.Fatalf("%d messages", len(p))
	}
	for i, s := range p {
		m := decodeMsg(t, s.Envelope)
		if s.Route.RoutingKey != "cq" {
			t.Errorf("member %d route %+v", i, s.Route)
		}
		if i == 1 {
			// The chain member's first step carries the chain; its last
			// step has the chord, group and index.
			if m.Chord != nil || len(m.Chain) != 1 {
				t.Errorf("chain member: chord %v chain %v", m.Chord, m.Chain)
				continue
			}
			last := m.Chain[0]
			if last.Options["group_id"] != gid || last.Options["chord"] == nil || !equalJSON(t, last.Options["group_index"], 1) {
				t.Errorf("chain member's last step options %v", last.Options)
			}
			if last.TaskID() != r.Header.Results[1].ID {
				t.Errorf("group result %d is %s, want the chain's last step %s", i, r.Header.Results[1].ID, last.TaskID())
			}
			continue
		}
		if m.Group != gid || m.GroupIndex == nil || *m.GroupIndex != i || m.Chord == nil {
			t.Errorf("member %d: group %q index %v chord %v", i, m.Group, m.GroupIndex, m.Chord)
			continue
		}
		if m.Chord.Task != "xsum" || m.Chord.TaskID() != r.ID || m.Chord.Options["group_id"] != gid || m.Chord.Options["queue"] != "cq" {
			t.Errorf("member %d chord body %+v", i, m.Chord)
		}
		if !equalJSON(t, m.Chord.Args, []any{"tail"}) {
			t.Errorf("body args %v", m.Chord.Args)
		}
	}
}

// group | step inside a chain becomes a chord whose body is the step.
func TestChainGroupBecomesChord(t *testing.T) {
	rb := newRedis(t)
	c, b := memClient(t, client.Config{Backend: rb})
	ctx := testCtx(t, 10*time.Second)
	r, err := c.Apply(ctx, client.Chain(client.S("a"), client.Group(client.S("b"), client.S("c")), client.S("d").Set(client.TaskID("d-id"))))
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != "d-id" || r.Header == nil || len(r.Header.Results) != 2 || r.Parent == nil {
		t.Fatalf("result %+v", r)
	}
	t.Cleanup(func() { rb.ChordCleanup(context.Background(), r.Header.ID) })
	m := onlyMessage(t, b)
	if m.Task != "a" || len(m.Chain) != 1 || m.Chain[0].SubtaskType != "chord" {
		t.Fatalf("first message %s chain %+v", m.Task, m.Chain)
	}
	s, err := client.SignatureFromValue(m.Chain[0].Value())
	if err != nil {
		t.Fatal(err)
	}
	if s.Body() == nil || s.Body().ID() != "d-id" || len(s.Tasks()) != 2 || s.ID() != "d-id" {
		t.Errorf("chord step %+v", m.Chain[0])
	}
	if r.Parent.ID != m.ID {
		t.Errorf("chord's parent %s, want the first step %s", r.Parent.ID, m.ID)
	}
	// A chain ending in a group has a group result.
	if _, err := c.Apply(ctx, client.Chain(client.S("a"), client.Group(client.S("b"), client.S("c")))); err == nil {
		t.Error("Apply of a chain ending in a group: no error")
	}
	gr, err := c.ApplyGroup(ctx, client.Chain(client.S("a"), client.Group(client.S("b"), client.S("c"))))
	if err != nil {
		t.Fatal(err)
	}
	last := decodeMsg(t, b.Published()[1].Envelope)
	if last.Chain[0].SubtaskType != "group" || last.Chain[0].TaskID() != gr.ID || len(gr.Results) != 2 {
		t.Errorf("group step %+v, result %s %v", last.Chain[0], gr.ID, gr.IDs())
	}
}

func TestSignatureValueRoundTrip(t *testing.T) {
	ch := client.Chord([]*client.Signature{client.S("a", 1), client.SI("b")},
		client.S("c").WithKwargs(map[string]any{"k": "v"}).Set(client.Queue("q"), client.Link(client.S("cb"))))
	for _, s := range []*client.Signature{
		client.S("t", 1, "x").Set(client.Countdown(5 * time.Second)),
		client.Chain(client.S("a"), client.S("b")),
		client.Group(client.S("a"), client.S("b")),
		ch,
	} {
		v := s.Value()
		back, err := client.SignatureFromValue(v)
		if err != nil {
			t.Fatalf("%s: %v", s.Task, err)
		}
		if !equalJSON(t, back.Value(), v) {
			t.Errorf("%s: round trip\n got  %v\n want %v", s.Task, back.Value(), v)
		}
	}
	v := ch.Value()
	if v["subtask_type"] != "chord" || v["task"] != "celery.chord" {
		t.Errorf("chord dict %v", v)
	}
	kw := v["kwargs"].(map[string]any)
	if h := kw["header"].(map[string]any); h["subtask_type"] != "group" || len(h["kwargs"].(map[string]any)["tasks"].([]any)) != 2 {
		t.Errorf("chord header %v", h)
	}
	body := kw["body"].(map[string]any)
	if l := body["options"].(map[string]any)["link"].([]any); l[0].(map[string]any)["task"] != "cb" {
		t.Errorf("link inside options not a dict: %v", l)
	}
	if s := client.S("t").Set(client.Countdown(1500 * time.Millisecond)); s.Options["countdown"] != 1.5 {
		t.Errorf("countdown option %v", s.Options["countdown"])
	}
	if s := client.S("t").Set(client.Countdown(2 * time.Second)); s.Options["countdown"] != int64(2) {
		t.Errorf("countdown option %v", s.Options["countdown"])
	}
}

func TestApplyRejectsBadCanvas(t *testing.T) {
	c, b := memClient(t, client.Config{})
	ctx := context.Background()
	for name, s := range map[string]*client.Signature{
		"nil step":     client.Chain(client.S("a"), nil),
		"nil member":   client.Group(client.S("a"), nil),
		"no name":      client.S(""),
		"no body":      client.Chord([]*client.Signature{client.S("a")}, nil),
		"empty chain":  client.Chain(),
		"nil in chord": client.Chord([]*client.Signature{nil}, client.S("b")),
	} {
		if _, err := c.Apply(ctx, s); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := c.Apply(ctx, nil); err == nil {
		t.Error("nil: no error")
	}
	if n := len(b.Published()); n != 0 {
		t.Errorf("%d messages published", n)
	}
}
