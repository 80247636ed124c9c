// Command faultworker is the worker the fault suite (interop/faults) runs:
// gocelery's CLI with two tasks that count every execution per task id in
// a Redis of the suite's own (HINCRBY), so a task run twice or never is
// seen by id afterwards. Python's twin is interop/faults/faults_app.py.
//
//	FAULT_COUNT_REDIS=redis://127.0.0.1:6391/0 faultworker worker -Q faults -c 4
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/celeryworker/gocelery/cli"
	"github.com/celeryworker/gocelery/tasks"
)

// runsKey is the hash of executions: task id -> times run.
const runsKey = "faults:runs"

func main() {
	url := os.Getenv("FAULT_COUNT_REDIS")
	if url == "" {
		fmt.Fprintln(os.Stderr, "faultworker: set FAULT_COUNT_REDIS to the counting Redis URL")
		os.Exit(2)
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		fmt.Fprintf(os.Stderr, "faultworker: FAULT_COUNT_REDIS: %v\n", err)
		os.Exit(2)
	}
	rdb := redis.NewClient(opt)
	work, _ := strconv.Atoi(os.Getenv("FAULT_TASK_MS"))
	count := func(ctx context.Context, i int) (int, error) {
		req, _ := tasks.RequestFromContext(ctx)
		// Counted first: a run the worker starts is a run, whatever follows.
		if err := rdb.HIncrBy(context.Background(), runsKey, req.ID, 1).Err(); err != nil {
			return 0, fmt.Errorf("faultworker: count run of %s: %w", req.ID, err)
		}
		time.Sleep(time.Duration(work) * time.Millisecond)
		return i, nil
	}
	reg := tasks.NewRegistry()
	reg.MustRegister("faults.count", count, tasks.Params("i"))
	reg.MustRegister("faults.count_late", count, tasks.Params("i"), tasks.AcksLate())
	cli.Main(cli.Program{Name: "faultworker", Registry: reg})
}
