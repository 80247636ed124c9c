package worker_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/tasks"
	"github.com/celeryworker/gocelery/worker"
)

// TestChildrenRecorded: tasks a task sends while it runs (client.SendTask
// calls Request.AddChild) are stored in its result's children, as Celery
// stores request.children, for a success and for a failure.
func TestChildrenRecorded(t *testing.T) {
	t.Parallel()
	reg := tasks.NewRegistry()
	spawn := func(ctx context.Context, fail bool) (string, error) {
		req, _ := tasks.RequestFromContext(ctx)
		req.AddChild([]any{[]any{"child-1", nil}, nil})
		req.AddChild([]any{[]any{"child-2", nil}, nil})
		if fail {
			return "", tasks.ValueError("after spawning")
		}
		return "spawned", nil
	}
	reg.MustRegister("t.spawn", spawn, tasks.Params("fail"))
	f := startWorker(t, reg, worker.Config{})
	f.publish("ok", "t.spawn", false)
	f.publish("bad", "t.spawn", true)
	want := "[[[child-1 <nil>] <nil>] [[child-2 <nil>] <nil>]]"
	for id, status := range map[string]string{"ok": backends.StatusSuccess, "bad": backends.StatusFailure} {
		doc := f.result(id, status)
		if got := fmt.Sprint(doc["children"]); got != want {
			t.Errorf("%s: children %s, want %s", id, got, want)
		}
	}
}
