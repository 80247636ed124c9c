package tasks_test

import (
	"context"
	"fmt"
	"time"

	"github.com/celeryworker/gocelery/tasks"
)

// A plain Go function becomes a Celery task: arguments bind by position,
// and by name with Params, converted exactly to the declared types.
func ExampleRegistry_Register() {
	reg := tasks.NewRegistry()
	err := reg.Register("proj.add", func(ctx context.Context, x, y int64) (int64, error) {
		return x + y, nil
	}, tasks.Params("x", "y"), tasks.RateLimit("100/m"))
	if err != nil {
		panic(err)
	}
	t, _ := reg.Lookup("proj.add")
	// What the worker does with args [2] and kwargs {"y": 3} from a message.
	v, err := t.Handler.Call(context.Background(), []any{int64(2)}, map[string]any{"y": int64(3)})
	fmt.Println(v, err, t.Options.RateLimit)
	// A wrong type fails as Python would.
	_, err = t.Handler.Call(context.Background(), []any{"2", int64(3)}, nil)
	fmt.Println(err)
	// Output:
	// 5 <nil> 100/m
	// TypeError: proj.add() argument 'x': expected int, got str
}

// A bound task reads its request and retries, as Python's self.retry.
func ExampleRetry() {
	fetch := func(ctx context.Context, url string) (string, error) {
		req, _ := tasks.RequestFromContext(ctx)
		if req.Retries < 2 {
			return "", tasks.Retry(tasks.Countdown(5*time.Second), tasks.Exc(tasks.RuntimeError("%s is busy", url)))
		}
		return "fetched " + url, nil
	}
	ctx := tasks.WithRequest(context.Background(), &tasks.Request{ID: "t1", Retries: 0})
	_, err := fetch(ctx, "https://example.com")
	fmt.Println(err)
	// Output:
	// Retry: RuntimeError: https://example.com is busy
}
