package cli_test

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/celeryworker/gocelery/cli"
	"github.com/celeryworker/gocelery/tasks"
)

func total(ctx context.Context, items []int64) (int64, error) {
	var sum int64
	for _, n := range items {
		sum += n
	}
	return sum, nil
}

// A program's whole main: register the tasks, hand over to Main. It runs
// as `orderworker worker -Q orders -c 8`, `orderworker tasks`, ...
func ExampleMain() {
	reg := tasks.NewRegistry()
	reg.MustRegister("orders.total", total, tasks.Params("items"))
	cli.Main(cli.Program{Name: "orderworker", Version: "1.2.0", Registry: reg})
}

// Run is Main without os.Exit, for tests or a program that does more
// around the worker. Cancelling the context is a warm shutdown.
func ExampleProgram_Run() {
	reg := tasks.NewRegistry()
	reg.MustRegister("orders.total", total, tasks.Params("items"))
	p := cli.Program{Name: "orderworker", Version: "1.2.0", Registry: reg}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGHUP)
	defer stop()
	code := p.Run(ctx, []string{"-A", "proj", "worker", "-Q", "orders", "-l", "info", "-Ofair"}, os.Stdout, os.Stderr)
	fmt.Println("exit status", code)
}

// The tasks command lists what the program serves.
func ExampleProgram_Run_tasks() {
	reg := tasks.NewRegistry()
	reg.MustRegister("orders.total", total, tasks.Params("items"))
	p := cli.Program{Name: "orderworker", Version: "1.2.0", Registry: reg}
	p.Run(context.Background(), []string{"tasks"}, os.Stdout, os.Stderr)
	p.Run(context.Background(), []string{"version"}, os.Stdout, os.Stderr)
	// Output:
	// orders.total
	// orderworker 1.2.0
}
