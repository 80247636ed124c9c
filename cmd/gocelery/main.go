// Command gocelery runs a Celery-compatible worker written in Go.
//
//	gocelery worker -b amqp://guest:guest@localhost:5672// -Q critical -c 8
package main

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"
)

func main() {
	if os.Getenv("GOGC") == "" {
		// Trade some memory for less GC work per task: measured in
		// docs/performance.md (W1/W2 faster, 10,000 held ETA tasks still
		// well under 64 MiB). GOGC in the environment wins.
		debug.SetGCPercent(200)
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: gocelery <command> [flags]

commands:
  worker    consume Celery task messages and run the registered Go tasks
  tasks     list the registered task names
  version   print the version

Run 'gocelery worker -h' for the worker's flags.
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "worker":
		return runWorker(args[1:], stdout, stderr)
	case "tasks":
		reg, err := newRegistry()
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		for _, n := range reg.Names() {
			fmt.Fprintln(stdout, n)
		}
		return 0
	case "version", "--version":
		fmt.Fprintln(stdout, "gocelery", version)
		return 0
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "gocelery: unknown command %q\n\n%s", args[0], usage)
	return 2
}
