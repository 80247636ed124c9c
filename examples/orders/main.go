// Command orders is a worker with its own Go tasks, built the way a team
// builds one on gocelery: register the tasks, hand the registry to
// cli.Main, and the program has everything `gocelery worker` has (Celery's
// flags, env vars, signals, log format).
//
//	go run ./examples/orders worker -Q orders -l info
//
// Python then calls the tasks as it calls any Celery task:
//
//	app.send_task("orders.total", kwargs={"lines": [...], "currency": "EUR"}, queue="orders").get()
package main

import (
	"github.com/celeryworker/gocelery/cli"
	"github.com/celeryworker/gocelery/tasks"
)

func main() {
	reg := tasks.NewRegistry()
	reg.MustRegister("orders.total", Total, tasks.Params("lines", "currency"))
	reg.MustRegister("orders.export", Export, tasks.Params("order_ids", "busy_retries"),
		tasks.MaxRetries(5), tasks.AcksLate())
	cli.Main(cli.Program{Name: "orders", Version: "1.0.0", Registry: reg})
}
