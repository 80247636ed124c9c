package backends_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/protocol"
)

func storeAfter(t *testing.T, rb *backends.Redis, d time.Duration, rs ...*backends.Result) {
	go func() {
		time.Sleep(d)
		for _, r := range rs {
			if err := rb.Store(context.Background(), r); err != nil {
				t.Error(err)
			}
		}
	}()
}

func TestWaitReadyStoredBefore(t *testing.T) {
	rb := newBackend(t, backends.RedisParams{})
	ctx := testCtx(t)
	id := newTaskID(t, rb)
	if err := rb.Store(ctx, result(id, backends.StatusSuccess, int64(4))); err != nil {
		t.Fatal(err)
	}
	docs, err := rb.WaitReady(ctx, []string{id}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := backends.DocStatus(docs[0]); s != backends.StatusSuccess {
		t.Errorf("doc %s", docs[0])
	}
}

func TestWaitReadyPublished(t *testing.T) {
	rb := newBackend(t, backends.RedisParams{})
	ctx := testCtx(t)
	a, b := newTaskID(t, rb), newTaskID(t, rb)
	storeAfter(t, rb, 100*time.Millisecond,
		result(a, backends.StatusStarted, map[string]any{"pid": int64(1)}),
		result(a, backends.StatusRetry, nil),
		result(b, backends.StatusFailure, backends.TaskRevoked("x").Value()),
		result(a, "PROGRESS", map[string]any{"current": int64(1)}),
		result(a, backends.StatusSuccess, int64(1)))
	var updates []string
	start := time.Now()
	// Duplicates get the same document.
	docs, err := rb.WaitReady(ctx, []string{a, b, a}, func(id string, doc []byte) {
		s, _ := backends.DocStatus(doc)
		updates = append(updates, id[len(id)-4:]+":"+s)
	})
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 80*time.Millisecond {
		t.Error("returned before anything was stored")
	}
	want := []string{a[len(a)-4:] + ":STARTED", a[len(a)-4:] + ":RETRY", a[len(a)-4:] + ":PROGRESS"}
	if fmt.Sprint(updates) != fmt.Sprint(want) {
		t.Errorf("updates %v, want %v", updates, want)
	}
	for i, want := range []string{"SUCCESS", "FAILURE", "SUCCESS"} {
		if s, _ := backends.DocStatus(docs[i]); s != want {
			t.Errorf("doc %d: %s", i, docs[i])
		}
	}
}

func TestWaitReadyContext(t *testing.T) {
	rb := newBackend(t, backends.RedisParams{})
	id := newTaskID(t, rb)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := rb.WaitReady(ctx, []string{id}, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("returned %v after the deadline", d)
	}
	if docs, err := rb.WaitReady(context.Background(), nil, nil); err != nil || len(docs) != 0 {
		t.Errorf("no ids: %v %v", docs, err)
	}
}

// The subscription's connection is killed while waiting; the result
// stored meanwhile is still found (read again after resubscribing).
func TestWaitReadySurvivesLostConnection(t *testing.T) {
	name := "gocelery-wait-test-" + protocol.NewUUID()[:8]
	rb := newBackend(t, backends.RedisParams{URL: testRedisURL + "?client_name=" + name})
	admin := newBackend(t, backends.RedisParams{})
	ctx := testCtx(t)
	id := newTaskID(t, rb)
	done := make(chan error, 1)
	go func() {
		_, err := rb.WaitReady(ctx, []string{id}, nil)
		done <- err
	}()
	// Find the subscribed connection and kill it.
	var killed bool
	for deadline := time.Now().Add(5 * time.Second); !killed && time.Now().Before(deadline); {
		list, err := admin.Client().ClientList(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(list, "\n") {
			if strings.Contains(line, "name="+name+" ") && strings.Contains(line, " sub=1 ") {
				for _, f := range strings.Fields(line) {
					if strings.HasPrefix(f, "id=") {
						if err := admin.Client().Do(ctx, "CLIENT", "KILL", "ID", strings.TrimPrefix(f, "id=")).Err(); err != nil {
							t.Fatal(err)
						}
						killed = true
					}
				}
			}
		}
		if !killed {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if !killed {
		t.Fatal("the subscription never showed in CLIENT LIST")
	}
	if err := admin.Store(ctx, result(id, backends.StatusSuccess, int64(1))); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitReady did not return after the connection was lost")
	}
}

func TestForgetAndGroups(t *testing.T) {
	rb := newBackend(t, backends.RedisParams{})
	ctx := testCtx(t)
	id := newTaskID(t, rb)
	if err := rb.Store(ctx, result(id, backends.StatusSuccess, int64(1))); err != nil {
		t.Fatal(err)
	}
	if err := rb.Forget(ctx, id); err != nil {
		t.Fatal(err)
	}
	if s := storedStatus(t, rb, id); s != "" {
		t.Errorf("status after Forget %q", s)
	}
	gid := "gocelery-test-group-" + protocol.NewUUID()
	tuple := []any{[]any{gid, nil}, []any{[]any{[]any{"a", nil}, nil}}}
	if err := rb.SaveGroup(ctx, gid, tuple); err != nil {
		t.Fatal(err)
	}
	doc, err := rb.GetGroup(ctx, gid)
	want := `{"result": [["` + gid + `", null], [[["a", null], null]]]}`
	if err != nil || string(doc) != want {
		t.Errorf("group doc %s, %v; want %s", doc, err, want)
	}
	if ttl := rb.Client().TTL(ctx, rb.GroupKey(gid)).Val(); ttl <= 0 {
		t.Errorf("group TTL %v", ttl)
	}
	if err := rb.ForgetGroup(ctx, gid); err != nil {
		t.Fatal(err)
	}
	if doc, _ := rb.GetGroup(ctx, gid); doc != nil {
		t.Errorf("group left: %s", doc)
	}
}

func TestDocStatus(t *testing.T) {
	if s, err := backends.DocStatus([]byte(`{"status": "RETRY", "result": null}`)); err != nil || s != "RETRY" {
		t.Errorf("json: %q %v", s, err)
	}
	raw, _ := protocol.MarshalMsgpack(map[string]any{"status": "SUCCESS"})
	if s, err := backends.DocStatus(raw); err != nil || s != "SUCCESS" {
		t.Errorf("msgpack: %q %v", s, err)
	}
	if _, err := backends.DocStatus([]byte("\xc1garbage")); err == nil {
		t.Error("garbage: no error")
	}
}
