package client_test

import (
	"context"
	"errors"
	"math/big"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/client"
	"github.com/celeryworker/gocelery/protocol"
)

// Results are written with backends.Redis.Store, exactly as a worker
// writes them (SETEX + PUBLISH on the key's channel).

func resultClient(t *testing.T) (*client.Client, *backends.Redis) {
	t.Helper()
	rb := newRedis(t)
	c, _ := memClient(t, client.Config{Backend: rb})
	return c, rb
}

func newID(t *testing.T, rb *backends.Redis) string {
	t.Helper()
	id := "gocelery-client-test-" + protocol.NewUUID()
	t.Cleanup(func() { rb.Forget(context.Background(), id) })
	return id
}

func store(t *testing.T, rb *backends.Redis, id, status string, value any, tb string) {
	t.Helper()
	r := &backends.Result{TaskID: id, Status: status, Result: value, Children: []any{}}
	if tb != "" {
		r.Traceback = &tb
	}
	if backends.Ready(status) {
		r.DateDone = time.Now()
	}
	if err := rb.Store(context.Background(), r); err != nil {
		t.Fatal(err)
	}
}

// storeLater stores after d from another goroutine, as a worker would while
// the test waits; it returns a channel closed once stored.
func storeLater(t *testing.T, rb *backends.Redis, d time.Duration, docs ...*backends.Result) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(d)
		for _, r := range docs {
			if err := rb.Store(context.Background(), r); err != nil {
				t.Error(err)
			}
		}
	}()
	return done
}

func TestAsyncResultStates(t *testing.T) {
	c, rb := resultClient(t)
	ctx := testCtx(t, 10*time.Second)
	id := newID(t, rb)
	r := c.AsyncResult(id)

	if s, err := r.State(ctx); err != nil || s != client.StatePending {
		t.Fatalf("state %q, %v: want PENDING", s, err)
	}
	if ready, _ := r.Ready(ctx); ready {
		t.Error("pending result ready")
	}
	store(t, rb, id, "PROGRESS", map[string]any{"current": 3, "total": 10}, "")
	info, err := r.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var p struct{ Current, Total int }
	if err := client.Decode(info, &p); err != nil || p.Current != 3 || p.Total != 10 {
		t.Errorf("PROGRESS info %v → %+v, %v", info, p, err)
	}
	if s, _ := r.State(ctx); s != "PROGRESS" {
		t.Errorf("state %q", s)
	}

	store(t, rb, id, backends.StatusSuccess, map[string]any{"lines": 1, "total_cents": int64(1350)}, "")
	var out struct {
		Lines      int   `json:"lines"`
		TotalCents int64 `json:"total_cents"`
	}
	if err := r.Result(ctx, &out); err != nil || out.Lines != 1 || out.TotalCents != 1350 {
		t.Errorf("result %+v, %v", out, err)
	}
	for name, f := range map[string]func(context.Context) (bool, error){"Ready": r.Ready, "Successful": r.Successful} {
		if ok, err := f(ctx); !ok || err != nil {
			t.Errorf("%s: %v %v", name, ok, err)
		}
	}
	if failed, _ := r.Failed(ctx); failed {
		t.Error("Failed after SUCCESS")
	}
	m, _ := r.Meta(ctx)
	if m.DateDone == nil || time.Since(*m.DateDone) > time.Minute || m.TaskID != id {
		t.Errorf("meta %+v", m)
	}
	if err := r.Forget(ctx); err != nil {
		t.Fatal(err)
	}
	if s, _ := r.State(ctx); s != client.StatePending {
		t.Errorf("state after Forget %q", s)
	}
}

func TestGetWaitsOnChannel(t *testing.T) {
	c, rb := resultClient(t)
	ctx := testCtx(t, 10*time.Second)
	id := newID(t, rb)
	stored := storeLater(t, rb, 200*time.Millisecond,
		&backends.Result{TaskID: id, Status: backends.StatusStarted, Result: map[string]any{"pid": 1, "hostname": "w"}},
		&backends.Result{TaskID: id, Status: "PROGRESS", Result: map[string]any{"current": 1}},
		&backends.Result{TaskID: id, Status: backends.StatusSuccess, Result: big.NewInt(0).Lsh(big.NewInt(1), 70), DateDone: time.Now()})
	start := time.Now()
	var mu sync.Mutex
	var states []string
	m, err := c.AsyncResult(id).Wait(ctx, func(m *client.Meta) {
		mu.Lock()
		states = append(states, m.State)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	<-stored
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("Wait returned after %v, before the result was stored", d)
	}
	if !reflect.DeepEqual(states, []string{"STARTED", "PROGRESS"}) {
		t.Errorf("updates %v", states)
	}
	var v *big.Int
	if err := m.Decode(&v); err != nil || v.Cmp(new(big.Int).Lsh(big.NewInt(1), 70)) != 0 {
		t.Errorf("big result %v, %v", v, err)
	}

	// A result stored before Get is found at once.
	id2 := newID(t, rb)
	store(t, rb, id2, backends.StatusSuccess, int64(5), "")
	n, err := client.GetAs[int](ctx, c.AsyncResult(id2))
	if err != nil || n != 5 {
		t.Errorf("GetAs %d, %v", n, err)
	}
}

func TestGetFailure(t *testing.T) {
	c, rb := resultClient(t)
	ctx := testCtx(t, 10*time.Second)
	id := newID(t, rb)
	storeLater(t, rb, 50*time.Millisecond, &backends.Result{TaskID: id, Status: backends.StatusFailure,
		Result:    map[string]any{"exc_type": "ValueError", "exc_module": "builtins", "exc_message": []any{"bad input"}},
		Traceback: ptr("Traceback (most recent call last):\nValueError: bad input\n"), DateDone: time.Now()})
	_, err := c.AsyncResult(id).Get(ctx)
	var te *client.TaskError
	if !errors.As(err, &te) {
		t.Fatalf("Get: %v, want a *TaskError", err)
	}
	if te.Type != "ValueError" || te.Module != "builtins" || te.Message != "bad input" || te.TaskID != id ||
		te.State != "FAILURE" || te.Traceback == "" || err.Error() != "ValueError: bad input" {
		t.Errorf("task error %+v (%q)", te, err)
	}
	if errors.Is(err, client.ErrRevoked) {
		t.Error("a ValueError matches ErrRevoked")
	}
	if tb, _ := c.AsyncResult(id).Traceback(ctx); tb == "" {
		t.Error("no traceback")
	}
	if info, _ := c.AsyncResult(id).Info(ctx); !reflect.DeepEqual(info, te) {
		t.Errorf("info %v", info)
	}

	id2 := newID(t, rb)
	store(t, rb, id2, backends.StatusRevoked, backends.TaskRevoked("terminated").Value(), "")
	_, err = c.AsyncResult(id2).Get(ctx)
	if !errors.Is(err, client.ErrRevoked) || err.Error() != "celery.exceptions.TaskRevokedError: terminated" {
		t.Errorf("revoked: %v", err)
	}
	// KeyError's str() is the repr of its key, as in Python.
	id3 := newID(t, rb)
	store(t, rb, id3, backends.StatusFailure, map[string]any{"exc_type": "KeyError", "exc_module": "builtins", "exc_message": []any{"k"}}, "")
	if _, err := c.AsyncResult(id3).Get(ctx); err == nil || err.Error() != "KeyError: 'k'" {
		t.Errorf("KeyError: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

func TestGetContextEnds(t *testing.T) {
	c, rb := resultClient(t)
	id := newID(t, rb)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := c.AsyncResult(id).Get(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Get on a pending task: %v, want the deadline", err)
	}
}

func TestGroupResult(t *testing.T) {
	c, rb := resultClient(t)
	ctx := testCtx(t, 10*time.Second)
	ids := []string{newID(t, rb), newID(t, rb), newID(t, rb)}
	g := c.GroupResult("gid-"+protocol.NewUUID(), ids...)
	t.Cleanup(func() { rb.ForgetGroup(context.Background(), g.ID) })
	if n, _ := g.CompletedCount(ctx); n != 0 {
		t.Errorf("completed %d", n)
	}
	store(t, rb, ids[1], backends.StatusSuccess, int64(20), "")
	if n, _ := g.CompletedCount(ctx); n != 1 {
		t.Errorf("completed %d", n)
	}
	if ready, _ := g.Ready(ctx); ready {
		t.Error("ready with members pending")
	}
	storeLater(t, rb, 100*time.Millisecond,
		&backends.Result{TaskID: ids[2], Status: backends.StatusSuccess, Result: int64(30), DateDone: time.Now()},
		&backends.Result{TaskID: ids[0], Status: backends.StatusSuccess, Result: int64(10), DateDone: time.Now()})
	var vals []int
	if err := g.JoinInto(ctx, &vals); err != nil || !reflect.DeepEqual(vals, []int{10, 20, 30}) {
		t.Errorf("join %v, %v", vals, err)
	}
	if ok, _ := g.Successful(ctx); !ok {
		t.Error("not successful")
	}

	// Save and restore, as GroupResult.save()/restore().
	if err := g.Save(ctx); err != nil {
		t.Fatal(err)
	}
	back, err := c.RestoreGroup(ctx, g.ID)
	if err != nil || back == nil || !reflect.DeepEqual(back.IDs(), ids) {
		t.Fatalf("restored %v, %v", back, err)
	}

	// A failed member makes Join return its error, in group order.
	// (A stored SUCCESS is never overwritten: use a fresh member.)
	ids[1] = newID(t, rb)
	store(t, rb, ids[1], backends.StatusFailure, map[string]any{"exc_type": "TypeError", "exc_module": "builtins", "exc_message": []any{"no"}}, "")
	g2 := c.GroupResult(g.ID, ids...)
	_, err = g2.Join(ctx)
	var te *client.TaskError
	if !errors.As(err, &te) || te.TaskID != ids[1] || te.Type != "TypeError" {
		t.Errorf("join with a failure: %v", err)
	}
	if failed, _ := g2.Failed(ctx); !failed {
		t.Error("Failed false")
	}
	if err := g2.Forget(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := rb.Client().Exists(ctx, rb.Key(ids[0]), rb.GroupKey(g.ID)).Result(); n != 0 {
		t.Errorf("%d keys left after Forget", n)
	}
}

func TestChildren(t *testing.T) {
	c, rb := resultClient(t)
	ctx := testCtx(t, 10*time.Second)
	id := newID(t, rb)
	r := &backends.Result{TaskID: id, Status: backends.StatusSuccess, Result: nil, DateDone: time.Now(),
		Children: []any{
			[]any{[]any{"child-1", nil}, nil},
			[]any{[]any{"g-1", nil}, []any{[]any{[]any{"m-1", nil}, nil}, []any{[]any{"m-2", nil}, nil}}},
		}}
	if err := rb.Store(ctx, r); err != nil {
		t.Fatal(err)
	}
	kids, err := c.AsyncResult(id).Children(ctx)
	if err != nil || len(kids) != 2 {
		t.Fatalf("children %v, %v", kids, err)
	}
	if a, ok := kids[0].(*client.AsyncResult); !ok || a.ID != "child-1" {
		t.Errorf("child 0 %v", kids[0])
	}
	if g, ok := kids[1].(*client.GroupResult); !ok || g.ID != "g-1" || !reflect.DeepEqual(g.IDs(), []string{"m-1", "m-2"}) {
		t.Errorf("child 1 %v", kids[1])
	}
}

func TestParseMeta(t *testing.T) {
	// Python's documents: extended fields, a date_done with an offset.
	doc := `{"status": "SUCCESS", "result": {"__type__": "datetime", "__value__": "2024-01-02T03:04:05+00:00"}, "traceback": null, "children": [], "date_done": "2026-11-23T22:40:09.631096+01:00", "name": "proj.add", "args": [2, 2], "kwargs": {}, "worker": "w1@vm", "retries": 1, "queue": "celery", "task_id": "x"}`
	m, err := client.ParseMeta([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "proj.add" || m.Worker != "w1@vm" || m.Retries != 1 || m.Queue != "celery" || m.DateDone == nil ||
		!m.DateDone.Equal(time.Date(2026, 11, 23, 21, 40, 9, 631096000, time.UTC)) {
		t.Errorf("meta %+v", m)
	}
	var when time.Time
	if err := m.Decode(&when); err != nil || !when.Equal(time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("datetime result %v, %v", when, err)
	}
	// result_serializer = "msgpack".
	raw, _ := protocol.MarshalMsgpack(map[string]any{"status": "SUCCESS", "result": int64(4), "task_id": "y"})
	m, err = client.ParseMeta(raw)
	if err != nil || m.State != "SUCCESS" || m.Result != int64(4) {
		t.Errorf("msgpack meta %+v, %v", m, err)
	}
}
