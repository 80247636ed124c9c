// Command profworker is the gocelery worker (package cli serving the
// conformance tasks, as cmd/gocelery does) plus --memprofile FILE, a heap
// profile written when the worker stops, and --trace FILE, an execution
// trace of the whole run, for gocelery-bench -profile. --cpuprofile and
// every other flag are cli's.
//
//	profworker worker -b URL --result-backend URL -Q q -c 16 --cpuprofile w1.pprof --memprofile heap.pprof --trace w1.trace
package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"strings"

	"github.com/celeryworker/gocelery/cli"
	"github.com/celeryworker/gocelery/tasks"
	"github.com/celeryworker/gocelery/tasks/conformance"
)

func main() {
	if os.Getenv("GOGC") == "" {
		// What cli.Main sets, so the profiles show the GC work gocelery does.
		debug.SetGCPercent(200)
	}
	args, memprofile := takeFlag(os.Args[1:], "--memprofile")
	args, tracefile := takeFlag(args, "--trace")
	stopTrace := func() {}
	if tracefile != "" {
		var err error
		if stopTrace, err = startTrace(tracefile); err != nil {
			fmt.Fprintln(os.Stderr, "profworker: --trace:", err)
			os.Exit(1)
		}
	}
	reg := tasks.NewRegistry()
	if err := conformance.Register(reg); err != nil {
		fmt.Fprintln(os.Stderr, "profworker:", err)
		os.Exit(1)
	}
	code := cli.Program{Name: "profworker", Registry: reg}.Run(context.Background(), args, os.Stdout, os.Stderr)
	stopTrace()
	if memprofile != "" {
		if err := writeHeapProfile(memprofile); err != nil {
			fmt.Fprintln(os.Stderr, "profworker: --memprofile:", err)
		}
	}
	os.Exit(code)
}

// takeFlag removes "name VALUE" or "name=VALUE" from args, which cli does
// not know, and returns its value.
func takeFlag(args []string, name string) (rest []string, value string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == name && i+1 < len(args):
			value = args[i+1]
			i++
		case strings.HasPrefix(a, name+"="):
			value = strings.TrimPrefix(a, name+"=")
		default:
			rest = append(rest, a)
		}
	}
	return rest, value
}

// startTrace starts an execution trace into path; the returned func stops
// it and closes the file.
func startTrace(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := trace.Start(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		trace.Stop()
		if err := f.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "profworker: --trace:", err)
		}
	}, nil
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
