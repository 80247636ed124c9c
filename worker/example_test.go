package worker_test

import (
	"context"
	"fmt"
	"time"

	"github.com/celeryworker/gocelery/broker/brokertest"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
	"github.com/celeryworker/gocelery/worker"
)

// A worker embedded without the command line. The in-memory broker stands
// in for RabbitMQ here; a real program passes amqp.NewTransport(...) and a
// backends.NewRedis(...) result backend.
func ExampleWorker_Run() {
	reg := tasks.NewRegistry()
	done := make(chan int64, 1)
	reg.MustRegister("proj.add", func(ctx context.Context, x, y int64) (int64, error) {
		done <- x + y
		return x + y, nil
	}, tasks.Params("x", "y"))

	b := brokertest.New()
	w, err := worker.New(worker.Config{Broker: b, Registry: reg, Queues: []string{"critical"}, Concurrency: 4})
	if err != nil {
		panic(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- w.Run(ctx) }()
	<-w.Ready()

	// What Python's send_task("proj.add", args=[2, 3], queue="critical") sends.
	b.PublishMessage("critical", &protocol.Message{ID: protocol.NewUUID(), Task: "proj.add", Args: []any{int64(2), int64(3)}})
	fmt.Println("proj.add(2, 3) =", <-done)

	stop() // a warm shutdown, as SIGTERM in the CLI
	select {
	case err := <-stopped:
		fmt.Println("stopped:", err)
	case <-time.After(10 * time.Second):
		fmt.Println("still running")
	}
	// Output:
	// proj.add(2, 3) = 5
	// stopped: <nil>
}
