package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/client"
	"github.com/celeryworker/gocelery/internal/redact"
	"github.com/celeryworker/gocelery/protocol"
)

// Exit statuses of the producer commands (call, result, inspect, control,
// status), besides 0 (success) and 2 (usage):
const (
	// exitFailed: the task failed or was revoked, or the broker or backend
	// cannot be used (a message names the flag to fix).
	exitFailed = 1
	// exitNotReady: the task is not finished (result without --wait), or
	// --timeout passed while waiting.
	exitNotReady = 3
	// exitUnavailable: no worker replied to inspect/control/status within
	// the timeout (Celery's EX_UNAVAILABLE, which `celery inspect` uses).
	exitUnavailable = 69
	// exitInterrupted: SIGINT or SIGTERM while waiting.
	exitInterrupted = 130
)

// connectTimeout bounds dialing the broker and reaching the backend: the
// commands fail with a message instead of hanging on an unreachable host.
const connectTimeout = 15 * time.Second

// newTransport builds the broker transport for a URL; tests replace it
// with an in-memory broker.
var newTransport = func(url, options string) (broker.Transport, error) {
	return openTransport(transportParams{url: url, options: options})
}

// connFlags are the broker and backend options every producer command
// takes, as the worker does: the command's flag, else the global option
// before the command, else CELERY_BROKER_URL / CELERY_RESULT_BACKEND, else
// Celery's defaults.
type connFlags struct {
	broker, backend  string
	transportOptions string
}

func addConnFlags(fs *pflag.FlagSet, f *connFlags, backend bool) {
	fs.StringVarP(&f.broker, "broker", "b", "", "broker URL (env CELERY_BROKER_URL; default "+redact.URL(defaultBroker)+")")
	fs.StringVar(&f.transportOptions, "broker-transport-options", "", "Redis broker options as JSON or key=value,... (env "+envTransportOptions+")")
	if backend {
		fs.StringVar(&f.backend, "result-backend", "", "result backend URL (env CELERY_RESULT_BACKEND; default "+defaultBackend+")")
	} else {
		// Accepted so one set of options fits every command.
		fs.StringVar(&f.backend, "result-backend", "", "accepted; this command reads no results")
	}
}

func (f *connFlags) resolve(g *globals) {
	pick := func(flag, global, env, def string) string {
		for _, v := range []string{flag, global, os.Getenv(env)} {
			if v != "" {
				return v
			}
		}
		return def
	}
	if g == nil {
		g = &globals{}
	}
	f.broker = pick(f.broker, g.broker, "CELERY_BROKER_URL", defaultBroker)
	f.transportOptions = pick(f.transportOptions, "", envTransportOptions, "")
	f.backend = pick(f.backend, g.backend, "CELERY_RESULT_BACKEND", defaultBackend)
}

// cmdRun is one run of a producer command: where it writes and what it
// connected to.
type cmdRun struct {
	name           string // "gocelery call", for messages
	stdout, stderr io.Writer
	conn           connFlags
	quiet          bool
	// topo and defaultPriority configure the client (call's queue flags).
	topo            broker.Topology
	defaultPriority int
}

func (p Program) newCmdRun(cmd string, g *globals, stdout, stderr io.Writer) *cmdRun {
	r := &cmdRun{name: p.Name + " " + cmd, stdout: stdout, stderr: stderr}
	if g != nil {
		r.quiet = g.quiet
	}
	return r
}

// failf prints one line on stderr and returns exit status 1.
func (r *cmdRun) failf(format string, a ...any) int {
	msg := fmt.Sprintf(format, a...)
	msg = redact.String(redact.String(msg, r.conn.broker), r.conn.backend)
	fmt.Fprintf(r.stderr, "%s: %s\n", r.name, strings.Join(strings.Fields(msg), " "))
	return exitFailed
}

// usage prints a usage error and returns exit status 2.
func (r *cmdRun) usage(err error) int {
	fmt.Fprintf(r.stderr, "%s: %v\nRun '%s -h' for help.\n", r.name, err, r.name)
	return 2
}

// urlUnlessQuoted is " URL" (redacted) unless the error text already
// quotes it, so the line names the URL once.
func urlUnlessQuoted(url string, err error) string {
	red := redact.URL(url)
	if text := redact.String(err.Error(), url); strings.Contains(text, red) || strings.Contains(text, redact.String(red, url)) {
		return ""
	}
	return " " + red
}

// connectBroker dials the broker for the client.
func (r *cmdRun) connectBroker(ctx context.Context, rb *backends.Redis) (*client.Client, int) {
	tr, err := newTransport(r.conn.broker, r.conn.transportOptions)
	if err != nil {
		return nil, r.failf("cannot use the broker%s: %v; fix %s", urlUnlessQuoted(r.conn.broker, err), err, fixBroker)
	}
	dctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	c, err := client.New(dctx, client.Config{Broker: tr, Backend: rb, Name: r.name, Topology: r.topo, DefaultPriority: r.defaultPriority})
	if err != nil {
		return nil, r.failf("cannot connect to the broker%s: %v; fix %s", urlUnlessQuoted(r.conn.broker, err), err, fixBroker)
	}
	return c, 0
}

// connectBackend connects to the result backend and checks it answers
// (and takes the password). go-redis's own log lines (one per failed dial)
// are silenced for the process: the command's one line says what failed.
func (r *cmdRun) connectBackend(ctx context.Context) (*backends.Redis, int) {
	redis.SetLogger(quietRedis{})
	if r.conn.backend == "disabled" {
		return nil, r.failf("--result-backend is disabled: results cannot be read; fix %s", fixBackend)
	}
	topts, err := envOptions("CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS")
	if err != nil {
		return nil, r.failf("%v", err)
	}
	rb, err := backends.NewRedis(backends.RedisParams{URL: r.conn.backend, TransportOptions: topts})
	if err != nil {
		return nil, r.failf("cannot use the result backend%s: %v; fix %s", urlUnlessQuoted(r.conn.backend, err), err, fixBackend)
	}
	pctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if err := rb.Ping(pctx); err != nil {
		rb.Close()
		return nil, r.failf("cannot use the result backend%s: %v; fix %s", urlUnlessQuoted(r.conn.backend, err), err, fixBackend)
	}
	return rb, 0
}

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// interruptible returns a context cancelled by SIGINT or SIGTERM, for the
// commands that wait.
func interruptible(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}

// callFlags are `celery call`'s options, plus waiting for the result.
type callFlags struct {
	conn                connFlags
	topo                topoFlags // how the queue is declared before sending
	args, kwargs        string
	eta, expires        string
	countdown           float64
	serializer          string
	queue, exchange     string
	routingKey          string
	priority            int
	wait                bool
	timeout             time.Duration
	json, traceback     bool
	timeLimit, softTime time.Duration
}

func callFlagSet(name string, f *callFlags) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name+" call", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.SortFlags = false
	f.serializer = "json"
	fs.StringVarP(&f.args, "args", "a", "[]", "positional arguments, a JSON array")
	fs.StringVarP(&f.kwargs, "kwargs", "k", "{}", "keyword arguments, a JSON object")
	fs.Float64Var(&f.countdown, "countdown", 0, "run no earlier than this many seconds from now")
	fs.StringVar(&f.eta, "eta", "", "run no earlier than this ISO 8601 time (naive means UTC)")
	fs.StringVar(&f.expires, "expires", "", "seconds from now, or an ISO 8601 time, after which the task is not run (REVOKED)")
	fs.Var(choiceValue{&f.serializer, []string{"json", "msgpack"}}, "serializer", "message body serializer")
	fs.StringVar(&f.queue, "queue", "", "queue to send to (default celery)")
	fs.StringVar(&f.exchange, "exchange", "", "exchange to publish to (with --routing-key)")
	fs.StringVar(&f.routingKey, "routing-key", "", "routing key (with --exchange)")
	fs.IntVar(&f.priority, "priority", 0, "message priority 0..255 (queues declared with x-max-priority)")
	fs.Var(&secondsValue{&f.timeLimit, false}, "time-limit", "hard time limit of this call, in seconds")
	fs.Var(&secondsValue{&f.softTime, false}, "soft-time-limit", "soft time limit of this call, in seconds")
	fs.BoolVar(&f.wait, "wait", false, "wait for the result and print it; the exit status is the outcome")
	fs.Var(&secondsValue{&f.timeout, false}, "timeout", "with --wait: give up after this many seconds (exit 3); 0 = wait forever")
	fs.BoolVar(&f.json, "json", false, "print JSON: {\"task_id\": ...}, then with --wait one result document per state")
	fs.BoolVar(&f.traceback, "traceback", false, "with --wait: print the stored traceback of a failure")
	addConnFlags(fs, &f.conn, true)
	f.topo.register(fs)
	return fs
}

func (p Program) callUsage() string {
	var b strings.Builder
	fmt.Fprintf(&b, `usage: %[1]s [global options] call NAME [flags]

Sends the task NAME (to a Go or a Python worker), as 'celery call' and
app.send_task do, and prints its id. With --wait it then waits for the
result (the Redis channel, no polling), prints it, and exits with the outcome:
0 SUCCESS, 1 FAILURE or REVOKED (the Python exception is printed, e.g.
"ValueError: boom"), 3 --timeout passed; 1 also when the broker or backend
cannot be used, 2 for a usage error.

flags:
`, p.Name)
	b.WriteString(callFlagSet(p.Name, &callFlags{}).FlagUsages())
	return b.String()
}

// parseCall parses call's command line into the task name, its arguments
// and the send options.
func parseCall(name string, args []string) (f *callFlags, task string, targs []any, tkwargs map[string]any, opts []client.Option, err error) {
	f = &callFlags{}
	fs := callFlagSet(name, f)
	if err = fs.Parse(args); err != nil {
		return
	}
	if fs.NArg() == 0 {
		err = usagef("missing the task NAME")
		return
	}
	if fs.NArg() > 1 {
		err = usagef("unexpected argument %q (arguments go in --args '[...]' and --kwargs '{...}')", fs.Arg(1))
		return
	}
	task = fs.Arg(0)
	if err = f.topo.check(); err != nil {
		return
	}
	if targs, tkwargs, err = parseTaskArgs(f.args, f.kwargs); err != nil {
		return
	}
	if fs.Changed("countdown") {
		if f.countdown < 0 || f.countdown != f.countdown {
			err = usagef("--countdown must be a number of seconds >= 0")
			return
		}
		opts = append(opts, client.Countdown(time.Duration(f.countdown*float64(time.Second))))
	}
	if f.eta != "" {
		t, _, perr := protocol.ParseTime(f.eta)
		if perr != nil {
			err = usagef("--eta %q: want an ISO 8601 time such as 2030-01-02T03:04:05+00:00", f.eta)
			return
		}
		opts = append(opts, client.ETA(t))
	}
	if f.expires != "" {
		if s, perr := strconv.ParseFloat(f.expires, 64); perr == nil {
			if s != s || s < 0 {
				err = usagef("--expires must be seconds >= 0 or an ISO 8601 time")
				return
			}
			opts = append(opts, client.Set("expires", s))
		} else if t, _, perr := protocol.ParseTime(f.expires); perr == nil {
			opts = append(opts, client.ExpiresAt(t))
		} else {
			err = usagef("--expires %q: want seconds (60, 2.5) or an ISO 8601 time", f.expires)
			return
		}
	}
	if fs.Changed("priority") {
		if f.priority < 0 || f.priority > 255 {
			err = usagef("--priority must be within 0..255, got %d", f.priority)
			return
		}
		opts = append(opts, client.Priority(f.priority))
	}
	if (f.exchange == "") != (f.routingKey == "") {
		err = usagef("--exchange and --routing-key go together (without both the task goes to --queue)")
		return
	}
	if f.queue != "" {
		opts = append(opts, client.Queue(f.queue))
	}
	if f.exchange != "" {
		opts = append(opts, client.Exchange(f.exchange), client.RoutingKey(f.routingKey))
	}
	opts = append(opts, client.Serializer(f.serializer))
	if f.timeLimit > 0 {
		opts = append(opts, client.TimeLimit(f.timeLimit))
	}
	if f.softTime > 0 {
		opts = append(opts, client.SoftTimeLimit(f.softTime))
	}
	if !f.wait && (fs.Changed("timeout") || f.traceback) {
		err = usagef("--timeout and --traceback go with --wait")
		return
	}
	return
}

// parseTaskArgs reads --args and --kwargs as kombu JSON (integers exact,
// {"__type__": ...} values understood).
func parseTaskArgs(args, kwargs string) ([]any, map[string]any, error) {
	a, err := protocol.DecodeJSON([]byte(args))
	if err != nil {
		return nil, nil, usagef("--args %q is not JSON: want an array such as '[2, 3]'", args)
	}
	al, ok := a.([]any)
	if !ok {
		return nil, nil, usagef("--args must be a JSON array such as '[2, 3]', got a %s", protocol.PyTypeName(a))
	}
	k, err := protocol.DecodeJSON([]byte(kwargs))
	if err != nil {
		return nil, nil, usagef("--kwargs %q is not JSON: want an object such as '{\"x\": 1}'", kwargs)
	}
	km, ok := k.(map[string]any)
	if !ok {
		return nil, nil, usagef("--kwargs must be a JSON object such as '{\"x\": 1}', got a %s", protocol.PyTypeName(k))
	}
	return al, km, nil
}

func (p Program) runCall(ctx context.Context, g *globals, args []string, stdout, stderr io.Writer) int {
	r := p.newCmdRun("call", g, stdout, stderr)
	f, task, targs, tkwargs, opts, err := parseCall(p.Name, args)
	if errors.Is(err, pflag.ErrHelp) {
		fmt.Fprint(stdout, p.callUsage())
		return 0
	}
	if err != nil {
		return r.usage(err)
	}
	r.conn = f.conn
	r.conn.resolve(g)
	if r.topo, err = f.topo.topology(); err != nil {
		return r.failf("%v", err)
	}
	r.defaultPriority = f.topo.defaultPriority
	ctx, stop := interruptible(ctx)
	defer stop()

	// The backend is checked first, so a wrong one fails before a task is
	// sent whose result nobody could read.
	var rb *backends.Redis
	if f.wait {
		var code int
		if rb, code = r.connectBackend(ctx); rb == nil {
			return code
		}
		defer rb.Close()
	}
	c, code := r.connectBroker(ctx, rb)
	if c == nil {
		return code
	}
	defer c.Close()
	sctx, cancel := context.WithTimeout(ctx, connectTimeout)
	res, err := c.SendTask(sctx, task, targs, tkwargs, opts...)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return exitInterrupted
		}
		if errors.Is(err, broker.ErrMisconfigured) {
			// Connected already: what the broker refuses is where the
			// message goes (a queue or exchange declared otherwise).
			return r.failf("cannot send %s: %v; fix --queue, or --exchange/--routing-key", task, err)
		}
		return r.failf("cannot send %s: %v", task, err)
	}
	if f.json {
		writeJSONLine(stdout, map[string]any{"task_id": res.ID})
	} else {
		fmt.Fprintln(stdout, res.ID)
	}
	if !f.wait {
		return 0
	}
	out := resultOutput{w: stdout, tty: isTerminal(stdout), json: f.json, traceback: f.traceback}
	return r.waitAndPrint(ctx, rb, res.ID, f.timeout, &out)
}

// isTerminal reports whether w is a terminal (a character device), for
// the progress bar.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func writeJSONLine(w io.Writer, v any) {
	raw, err := protocol.MarshalJSON(v)
	if err != nil {
		raw, _ = protocol.MarshalJSON(protocol.PyRepr(v))
	}
	raw = append(raw, '\n')
	_, _ = w.Write(raw)
}
