// Command gocelery runs a Celery-compatible worker written in Go, serving
// the conformance task set (package tasks/conformance). Its command line is
// package cli's: `celery worker` flags, unchanged but for the program name.
//
//	gocelery worker -b amqp://guest:guest@localhost:5672// -Q critical -c 8
package main

import (
	"fmt"
	"os"

	"github.com/celeryworker/gocelery/cli"
	"github.com/celeryworker/gocelery/tasks"
	"github.com/celeryworker/gocelery/tasks/conformance"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	p, err := program()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gocelery:", err)
		os.Exit(1)
	}
	cli.Main(p)
}

func program() (cli.Program, error) {
	reg := tasks.NewRegistry()
	if err := conformance.Register(reg); err != nil {
		return cli.Program{}, fmt.Errorf("register conformance tasks: %w", err)
	}
	return cli.Program{Name: "gocelery", Version: version, Registry: reg}, nil
}
