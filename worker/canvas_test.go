package worker_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/broker/brokertest"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
	"github.com/celeryworker/gocelery/worker"
)

// canvasRegistry: t.add(x, y), t.mul(x, y), t.sum(list), t.fail (raises
// ValueError('no')) and t.record (records its args, returns them).
func canvasRegistry(runs *runLog) *tasks.Registry {
	reg := tasks.NewRegistry()
	reg.MustRegister("t.add", func(_ context.Context, x, y int64) (int64, error) { return x + y, nil })
	reg.MustRegister("t.mul", func(_ context.Context, x, y int64) (int64, error) { return x * y, nil })
	reg.MustRegister("t.sum", func(_ context.Context, xs []int64) (int64, error) {
		var s int64
		for _, x := range xs {
			s += x
		}
		return s, nil
	})
	reg.MustRegister("t.fail", func(context.Context) (any, error) { return nil, tasks.ValueError("no") })
	reg.MustRegister("t.record", func(ctx context.Context, args []any, _ map[string]any) (any, error) {
		runs.add(ctx)
		return args, nil
	})
	return reg
}

// sig builds a signature with a frozen task id.
func sig(task, id string, args ...any) protocol.Signature {
	if args == nil {
		args = []any{}
	}
	return protocol.Signature{Task: task, Args: args, Options: map[string]any{"task_id": id}}
}

// TestCanvas: chain steps, link callbacks and errbacks are published with
// the parent's result (or the failed id) as first argument, and run.
func TestCanvas(t *testing.T) {
	t.Parallel()
	immutable := sig("t.record", "cb", "only")
	immutable.Immutable = true
	group := protocol.Signature{Task: "celery.group", SubtaskType: "group",
		Kwargs:  map[string]any{"tasks": []any{sig("t.add", "g0", int64(100)).Value(), sig("t.add", "g1", int64(200)).Value()}},
		Options: map[string]any{"task_id": "grp"}}
	chord := protocol.Signature{Task: "celery.chord", SubtaskType: "chord",
		Kwargs: map[string]any{
			"header": []any{sig("t.add", "h0", int64(10)).Value(), sig("t.add", "h1", int64(20)).Value()},
			"body":   sig("t.sum", "cbody").Value(),
		},
		Options: map[string]any{"task_id": "chordgrp"}}
	nested := protocol.Signature{Task: "celery.chain", SubtaskType: "chain",
		Kwargs: map[string]any{"tasks": []any{sig("t.add", "n1", int64(1)).Value(), sig("t.mul", "n2", int64(10)).Value()}}}

	type sent struct {
		id, args, parent string
		group            string
	}
	type stored struct {
		id, status string
		value      string // SUCCESS result as JSON, or the FAILURE exc_type
	}
	for _, tc := range []struct {
		name      string
		msg       *protocol.Message
		published []sent   // messages the worker publishes (in any order)
		results   []stored // documents stored in the end
		children  string   // the head task's children, as JSON
	}{
		{
			name: "chain",
			msg: &protocol.Message{ID: "a", Task: "t.add", Args: []any{int64(2), int64(3)},
				Chain: []protocol.Signature{sig("t.mul", "c", int64(2)), sig("t.add", "b", int64(10))}},
			published: []sent{{id: "b", args: "[5,10]", parent: "a"}, {id: "c", args: "[15,2]", parent: "b"}},
			results:   []stored{{"a", "SUCCESS", "5"}, {"b", "SUCCESS", "15"}, {"c", "SUCCESS", "30"}},
			children:  `[[["b",null],null]]`,
		},
		{
			name: "link",
			msg: &protocol.Message{ID: "a", Task: "t.add", Args: []any{int64(2), int64(3)},
				Callbacks: []protocol.Signature{sig("t.record", "cb", "x")}},
			published: []sent{{id: "cb", args: `[5,"x"]`, parent: "a"}},
			results:   []stored{{"a", "SUCCESS", "5"}, {"cb", "SUCCESS", `[5,"x"]`}},
			children:  `[[["cb",null],null]]`,
		},
		{
			name: "immutable link",
			msg: &protocol.Message{ID: "a", Task: "t.add", Args: []any{int64(2), int64(3)},
				Callbacks: []protocol.Signature{immutable}},
			published: []sent{{id: "cb", args: `["only"]`, parent: "a"}},
			results:   []stored{{"a", "SUCCESS", "5"}, {"cb", "SUCCESS", `["only"]`}},
		},
		{
			name: "errback",
			msg: &protocol.Message{ID: "a", Task: "t.fail",
				Callbacks: []protocol.Signature{sig("t.record", "cb")},
				Errbacks:  []protocol.Signature{sig("t.record", "eb")}},
			published: []sent{{id: "eb", args: `["a"]`, parent: "a"}},
			results:   []stored{{"a", "FAILURE", "ValueError"}, {"eb", "SUCCESS", `["a"]`}},
		},
		{
			name: "failure fails the rest of the chain",
			msg: &protocol.Message{ID: "a", Task: "t.fail",
				Chain: []protocol.Signature{sig("t.add", "c", int64(1)), sig("t.add", "b", int64(1))}},
			results: []stored{{"a", "FAILURE", "ValueError"}, {"b", "FAILURE", "ValueError"}, {"c", "FAILURE", "ValueError"}},
		},
		{
			name: "group step",
			msg: &protocol.Message{ID: "a", Task: "t.add", Args: []any{int64(1), int64(2)},
				Chain: []protocol.Signature{group}},
			published: []sent{{id: "g0", args: "[3,100]", parent: "a", group: "grp"}, {id: "g1", args: "[3,200]", parent: "a", group: "grp"}},
			results:   []stored{{"a", "SUCCESS", "3"}, {"g0", "SUCCESS", "103"}, {"g1", "SUCCESS", "203"}},
			children:  `[[["grp",null],null]]`,
		},
		{
			name: "chord step",
			msg: &protocol.Message{ID: "a", Task: "t.add", Args: []any{int64(1), int64(2)},
				Chain: []protocol.Signature{chord}},
			published: []sent{{id: "h0", args: "[3,10]", parent: "a", group: "chordgrp"}, {id: "h1", args: "[3,20]", parent: "a", group: "chordgrp"},
				{id: "cbody", args: "[[13,23]]", group: "chordgrp"}},
			results:  []stored{{"a", "SUCCESS", "3"}, {"h0", "SUCCESS", "13"}, {"h1", "SUCCESS", "23"}, {"cbody", "SUCCESS", "36"}},
			children: `[[["cbody",null],null]]`,
		},
		{
			name: "nested chain step",
			msg: &protocol.Message{ID: "a", Task: "t.add", Args: []any{int64(1), int64(2)},
				Chain: []protocol.Signature{sig("t.add", "after", int64(5)), nested}},
			published: []sent{{id: "n1", args: "[3,1]", parent: "a"}, {id: "n2", args: "[4,10]", parent: "n1"}, {id: "after", args: "[40,5]", parent: "n2"}},
			results:   []stored{{"n1", "SUCCESS", "4"}, {"n2", "SUCCESS", "40"}, {"after", "SUCCESS", "45"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runs := newRunLog()
			f := startWorker(t, canvasRegistry(runs), worker.Config{Concurrency: 2})
			f.send(tc.msg)
			for _, r := range tc.results {
				doc := f.result(r.id, r.status)
				got := asJSON(doc["result"])
				if r.status == backends.StatusFailure {
					got, _ = exc(doc)
				}
				if got != r.value {
					t.Errorf("%s: %s %s, want %s", r.id, r.status, got, r.value)
				}
			}
			if tc.children != "" {
				if got := asJSON(f.be.Doc(tc.msg.ID)["children"]); got != tc.children {
					t.Errorf("children %s, want %s", got, tc.children)
				}
			}
			all := f.b.Published()
			if len(all) != len(tc.published) {
				var ids []string
				for _, s := range all {
					ids = append(ids, s.Envelope.Headers["id"].(string))
				}
				t.Fatalf("published %v, want %d messages", ids, len(tc.published))
			}
			for _, want := range tc.published {
				m := sentByID(t, f.b, want.id)
				if m == nil {
					t.Errorf("%s not published", want.id)
					continue
				}
				if got := asJSON(m.Args); got != want.args {
					t.Errorf("%s published with args %s, want %s", want.id, got, want.args)
				}
				if want.parent != "" && m.ParentID != want.parent {
					t.Errorf("%s parent %q, want %q", want.id, m.ParentID, want.parent)
				}
				if m.RootID != tc.msg.ID {
					t.Errorf("%s root %q, want %q", want.id, m.RootID, tc.msg.ID)
				}
				if m.Group != want.group {
					t.Errorf("%s group %q, want %q", want.id, m.Group, want.group)
				}
			}
		})
	}
}

// TestChord: the header part that completes the chord publishes the body
// with the results in header order, once; a failed part fails the body
// with ChordError and sends the body's errbacks.
func TestChord(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		failing int // index of a failing header task, -1 for none
	}{{"success", -1}, {"a part fails", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runs := newRunLog()
			f := startWorker(t, canvasRegistry(runs), worker.Config{Concurrency: 3})
			body := sig("t.sum", "body")
			body.Options["link_error"] = []any{sig("t.record", "ceb").Value()}
			if err := f.be.SetChordSize(context.Background(), "g", 3); err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				m := &protocol.Message{ID: "h" + string(rune('0'+i)), Task: "t.add", Args: []any{int64(i + 1), int64(i + 1)},
					Group: "g", GroupIndex: ptr(i), Chord: &body}
				if i == tc.failing {
					m.Task, m.Args = "t.fail", nil
				}
				f.send(m)
			}
			if tc.failing < 0 {
				doc := f.result("body", backends.StatusSuccess)
				if asJSON(doc["result"]) != "12" {
					t.Fatalf("body result %v", doc["result"])
				}
				sent := f.b.Published()
				if len(sent) != 1 {
					t.Fatalf("%d messages published, want the body once", len(sent))
				}
				m := decodeSent(t, sent[0])
				if m.ID != "body" || asJSON(m.Args) != "[[2,4,6]]" || m.Group != "g" {
					t.Fatalf("body message %s args %s group %q", m.ID, asJSON(m.Args), m.Group)
				}
				// The part that fired the body cleans up after publishing it.
				brokertest.WaitFor(t, patience, func() bool { return slices.Equal(f.be.Cleaned(), []string{"g"}) }, "the chord counters cleaned up")
				return
			}
			doc := f.result("body", backends.StatusFailure)
			typ, msg := exc(doc)
			if typ != "ChordError" || !strings.Contains(msg, "Dependency h1 raised ValueError('no')") {
				t.Fatalf("body stored %s(%q)", typ, msg)
			}
			f.result("ceb", backends.StatusSuccess)
			if m := sentByID(t, f.b, "ceb"); m == nil || asJSON(m.Args) != `["body"]` {
				t.Fatalf("chord errback %+v", m)
			}
			if sentByID(t, f.b, "body") != nil {
				t.Fatal("the body was published despite a failed part")
			}
		})
	}
}

// TestChainStepOptions: the options a step's signature carries
// (sig.set(countdown=..., expires=..., priority=..., ...)) reach the
// message the worker sends for it, as Python's worker sends them; a step
// with a countdown is held, not run at once.
func TestChainStepOptions(t *testing.T) {
	t.Parallel()
	runs := newRunLog()
	f := startWorker(t, canvasRegistry(runs), worker.Config{})
	next := sig("t.record", "step")
	next.Options["countdown"] = int64(60)
	next.Options["expires"] = 120.0
	next.Options["priority"] = int64(5)
	next.Options["time_limit"] = int64(30)
	next.Options["soft_time_limit"] = 20.5
	next.Options["shadow"] = "nice name"
	next.Options["headers"] = map[string]any{"tenant": "acme"}
	before := time.Now()
	f.send(&protocol.Message{ID: "first", Task: "t.add", Args: []any{int64(1), int64(2)}, Chain: []protocol.Signature{next}})
	f.result("first", backends.StatusSuccess)
	brokertest.WaitFor(t, patience, func() bool { return len(f.b.Published()) == 1 }, "the step published")
	m := decodeSent(t, f.b.Published()[0])
	if m.ETA == nil || m.ETA.Sub(before) < 59*time.Second || m.ETA.Sub(before) > 61*time.Second+patience {
		t.Errorf("eta %v, want about now+60s", m.ETA)
	}
	if m.Expires == nil || m.Expires.Sub(before) < 119*time.Second {
		t.Errorf("expires %v, want about now+120s", m.Expires)
	}
	if m.Priority != 5 || m.TimeLimit.Hard != 30 || m.TimeLimit.Soft != 20.5 || m.Shadow != "nice name" || m.Headers["tenant"] != "acme" {
		t.Errorf("step message: priority %d, time limits %+v, shadow %q, headers %v", m.Priority, m.TimeLimit, m.Shadow, m.Headers)
	}
	// Held for its countdown, not run.
	brokertest.WaitFor(t, patience, func() bool {
		s, _ := f.control("scheduled", nil).([]any)
		return len(s) == 1
	}, "the step held until its ETA")
	if runs.count("step") != 0 {
		t.Fatal("the step ran before its countdown")
	}
}
