// Package cli is the command line of a gocelery worker program: the
// `worker`, `tasks`, `version` and `help` commands, the producer commands
// `call`, `result`, `inspect`, `control` and `status` (Celery's, speaking
// to Go and Python workers alike), `celery worker`'s flags
// and global options (so a Celery command line runs unchanged but for the
// program name), the startup banner, Celery's log format, signals, pid and
// log files, and the mapping of startup failures to an exit status and one
// line that names the flag to fix.
//
// A program that serves its own tasks is a registry and one call:
//
//	func main() {
//		reg := tasks.NewRegistry()
//		reg.MustRegister("orders.total", total, tasks.Params("items"))
//		cli.Main(cli.Program{Name: "orderworker", Version: "1.2.0", Registry: reg})
//	}
//
// The worker itself (consuming, running, recording) is package worker; cli
// only turns a command line into a worker.Config and runs it.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/spf13/pflag"

	"github.com/celeryworker/gocelery/tasks"
)

// Program describes a worker program: what it is called and which tasks it
// serves.
type Program struct {
	// Name is the program name in usage, banner and logs (default: base
	// name of os.Args[0]).
	Name string
	// Version is shown by `version` and in the banner (default "dev").
	Version string
	// Registry holds the tasks this program serves (required for `worker`
	// and `tasks`).
	Registry *tasks.Registry
}

// Main runs the program with os.Args[1:], os.Stdout and os.Stderr and exits
// with its status. Unless GOGC is set in the environment it sets the GC
// target to 200%, which trades some memory for less GC work per task
// (measured in docs/performance.md). SIGTERM/SIGINT start a warm shutdown,
// a second signal or SIGQUIT a cold one.
func Main(p Program) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(200)
	}
	os.Exit(p.Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// Run runs one command line (without the program name) and returns the
// exit status: 0 success, 1 a failure at run time (unreachable
// configuration, a pid file in use, ...), 2 a usage error. Cancelling ctx
// starts a warm shutdown of a running worker, as SIGTERM does. While the
// worker runs, Run also handles SIGTERM, SIGINT and SIGQUIT for the process.
func (p Program) Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	p = p.withDefaults()
	g, rest, err := parseGlobals(p.Name, args)
	if errors.Is(err, pflag.ErrHelp) {
		fmt.Fprint(stdout, p.usage())
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n\n%s", p.Name, err, p.usage())
		return 2
	}
	if g.version {
		fmt.Fprintln(stdout, p.Name, p.Version)
		return 0
	}
	if len(rest) == 0 {
		fmt.Fprint(stderr, p.usage())
		return 2
	}
	if g.workdir != "" {
		// Celery changes directory before anything else, so relative
		// --logfile and --pidfile paths are relative to --workdir.
		if err := os.Chdir(g.workdir); err != nil {
			fmt.Fprintf(stderr, "%s: --workdir: %v\n", p.Name, err)
			return 1
		}
	}
	cmd, cargs := rest[0], rest[1:]
	switch cmd {
	case "worker":
		return p.runWorker(ctx, g, cargs, stdout, stderr)
	case "tasks":
		return p.listTasks(cargs, stdout, stderr)
	case "call":
		return p.runCall(ctx, g, cargs, stdout, stderr)
	case "result":
		return p.runResult(ctx, g, cargs, stdout, stderr)
	case "inspect", "control", "status":
		return p.runRemote(ctx, cmd, g, cargs, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, p.Name, p.Version)
		return 0
	case "help":
		if len(cargs) > 0 {
			switch cargs[0] {
			case "worker":
				fmt.Fprint(stdout, p.workerUsage())
				return 0
			case "call":
				fmt.Fprint(stdout, p.callUsage())
				return 0
			case "result":
				fmt.Fprint(stdout, p.resultUsage())
				return 0
			case "inspect", "control", "status":
				fmt.Fprint(stdout, p.remoteUsage(cargs[0]))
				return 0
			}
		}
		fmt.Fprint(stdout, p.usage())
		return 0
	}
	fmt.Fprintf(stderr, "%s: unknown command %q\n\n%s", p.Name, cmd, p.usage())
	return 2
}

func (p Program) withDefaults() Program {
	if p.Name == "" {
		p.Name = "gocelery"
		if len(os.Args) > 0 && os.Args[0] != "" {
			p.Name = filepath.Base(os.Args[0])
		}
	}
	if p.Version == "" {
		p.Version = "dev"
	}
	return p
}

func (p Program) listTasks(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		if args[0] == "-h" || args[0] == "--help" {
			fmt.Fprintf(stdout, "usage: %s tasks\n\nLists the registered task names, one per line.\n", p.Name)
			return 0
		}
		fmt.Fprintf(stderr, "%s tasks: unexpected argument %q\n", p.Name, args[0])
		return 2
	}
	if p.Registry == nil {
		fmt.Fprintf(stderr, "%s: %v\n", p.Name, errNoRegistry)
		return 1
	}
	for _, n := range p.Registry.Names() {
		fmt.Fprintln(stdout, n)
	}
	return 0
}

var errNoRegistry = errors.New("cli.Program.Registry is nil: the program must register the tasks it serves")

// globals are the options Celery takes before the command
// (`celery -A proj -b URL worker ...`). The worker takes them as defaults
// for its own flags of the same names.
type globals struct {
	app, broker, backend string
	workdir, config      string
	quiet, noColor       bool
	version              bool
}

func globalFlagSet(name string, g *globals) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	// Stop at the command name: what follows belongs to the command.
	fs.SetInterspersed(false)
	fs.SortFlags = false
	fs.StringVarP(&g.app, "app", "A", "", "Celery app (accepted; the tasks are this program's registry)")
	fs.StringVarP(&g.broker, "broker", "b", "", "broker URL (env CELERY_BROKER_URL)")
	fs.StringVar(&g.backend, "result-backend", "", "result backend URL (env CELERY_RESULT_BACKEND)")
	fs.StringVar(&g.workdir, "workdir", "", "change to this directory first")
	fs.StringVar(&g.config, "config", "", "Celery config module (ignored: configuration is by flags and environment)")
	fs.BoolVarP(&g.quiet, "quiet", "q", false, "no startup banner; inspect/status print no arrows and no node count")
	fs.BoolVarP(&g.noColor, "no-color", "C", false, "accepted; output is never colored")
	fs.BoolVar(&g.version, "version", false, "print the version")
	return fs
}

func parseGlobals(name string, args []string) (*globals, []string, error) {
	g := &globals{}
	fs := globalFlagSet(name, g)
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	return g, fs.Args(), nil
}

func (p Program) usage() string {
	var b strings.Builder
	fmt.Fprintf(&b, `usage: %[1]s [global options] <command> [flags]

commands:
  worker    consume Celery task messages and run the registered Go tasks
  tasks     list the registered task names
  call      send a task by name (to Go or Python workers); --wait for its result
  result    print a task's state and result from the result backend
  inspect   ask the workers (ping, active, registered, stats, ...), as 'celery inspect'
  control   steer the workers (revoke, rate_limit, add_consumer, ...), as 'celery control'
  status    list the workers that answer a ping
  version   print the version
  help      this text; 'help COMMAND' for a command's flags

global options (before the command, as in 'celery -A proj worker'):
`, p.Name)
	b.WriteString(globalFlagSet(p.Name, &globals{}).FlagUsages())
	fmt.Fprintf(&b, "\nRun '%s COMMAND -h' for a command's flags.\n", p.Name)
	return b.String()
}
