package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/celeryworker/gocelery/worker"
)

// Defaults when neither a flag nor the environment names one; they are
// Celery's.
const (
	defaultBroker  = "amqp://guest:guest@localhost:5672//"
	defaultBackend = "redis://localhost:6379/0"
)

// workerFlags mirror `celery worker`'s flags and meanings.
type workerFlags struct {
	app, pool                         string
	broker, backend, queues, hostname string
	backendOptions                    map[string]any // result_backend_transport_options
	transportOptions                  string
	level                             zerolog.Level
	logFormat                         string
	logfile, pidfile                  string
	concurrency, prefetch             int
	autoscale                         string
	autoscaleMax, autoscaleMin        int // set when --autoscale is given
	events, trackStarted              bool
	acksLate, rejectOnWorkerLost      bool
	resultExtended                    bool
	withoutGossip, withoutMingle      bool
	withoutHeartbeat                  bool
	optimization                      string
	timeLimit, softTimeLimit          time.Duration
	resultExpires, shutdownTimeout    time.Duration
	heartbeat                         time.Duration // amqp.Params.Heartbeat: 0 default, negative off
	maxTasksPerChild                  int
	maxMemoryPerChild                 int
	maxMessageSize                    int64
	cpuProfile                        string
	metricsAddr                       string

	topoFlags                // queues as Celery's settings define them
	failoverStrategy         string
	delayedDeliveryQueueType string
	queuesGiven              bool // -Q given: else the defined queues
	detach, beat             bool

	// From the global options.
	quiet  bool
	config string
}

// usageError is a command line that cannot run: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

func workerFlagSet(name string, f *workerFlags) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name+" worker", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.SortFlags = false
	f.level, f.logFormat, f.optimization = zerolog.InfoLevel, "console", "default"
	f.resultExpires = 24 * time.Hour
	env := func(key, def string) string {
		if v := os.Getenv(key); v != "" {
			return v
		}
		return def
	}
	fs.StringVarP(&f.broker, "broker", "b", env("CELERY_BROKER_URL", defaultBroker), "broker URL (env CELERY_BROKER_URL)")
	fs.StringVar(&f.transportOptions, "broker-transport-options", env(envTransportOptions, ""), "kombu transport options of a redis:// broker, as JSON ({\"visibility_timeout\": 43200}) or key=value,... (env "+envTransportOptions+")")
	fs.StringVar(&f.backend, "result-backend", env("CELERY_RESULT_BACKEND", defaultBackend), "result backend URL (env CELERY_RESULT_BACKEND); \"disabled\" stores nothing")
	fs.Var(optionsValue{&f.backendOptions}, "result-backend-transport-options", "JSON object of Celery's result_backend_transport_options, e.g. '{\"master_name\": \"mymaster\"}' for sentinel:// (env CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS)")
	fs.StringVarP(&f.queues, "queues", "Q", "celery", "comma-separated queues to consume")
	fs.StringVarP(&f.hostname, "hostname", "n", "celery@%h", "node name; %h, %n, %d are expanded as Celery does")
	fs.VarP(&levelValue{&f.level}, "loglevel", "l", "DEBUG, INFO, WARNING, ERROR, CRITICAL or FATAL (any case)")
	fs.Var(choiceValue{&f.logFormat, []string{"console", "json"}}, "log-format", "console (Celery's log lines) or json")
	fs.StringVarP(&f.logfile, "logfile", "f", "", "append logs to this file instead of stderr (%n, %h, %d, %p, %i, %I expanded as Celery does)")
	fs.StringVar(&f.pidfile, "pidfile", "", "write the process id here; refuse to start if it names a running process (expanded like --logfile)")
	fs.IntVarP(&f.concurrency, "concurrency", "c", runtime.NumCPU(), "number of tasks run at once")
	fs.StringVar(&f.autoscale, "autoscale", "", "MAX,MIN: run between MIN and MAX tasks at once as load requires")
	fs.IntVar(&f.prefetch, "prefetch-multiplier", 4, "prefetch = concurrency × this; 0 = unlimited")
	f.maxMessageSize = worker.DefaultMaxMessageSize
	fs.Var(&sizeValue{&f.maxMessageSize}, "max-message-size", "larger messages are rejected with a FAILURE naming the limit: bytes, or with KiB, MiB, GiB (env CELERY_MAX_MESSAGE_SIZE); 0 = no limit")
	fs.BoolVarP(&f.events, "task-events", "E", false, "send task events for monitors such as Flower")
	fs.BoolVar(&f.withoutHeartbeat, "without-heartbeat", false, "send no worker-heartbeat events")
	fs.Var(&secondsValue{&f.heartbeat, true}, "heartbeat-interval", "AMQP connection heartbeat in seconds (0 = off; default 60)")
	fs.BoolVar(&f.trackStarted, "track-started", false, "store STARTED before running each task")
	// Celery reads these settings from its config; here from the
	// environment, a task's own option winning over both.
	envBool := func(key string) bool {
		v, err := strconv.ParseBool(os.Getenv(key))
		return err == nil && v
	}
	fs.BoolVar(&f.acksLate, "task-acks-late", envBool("CELERY_TASK_ACKS_LATE"), "acknowledge tasks after their result is stored, not before they run, unless the task says otherwise (env CELERY_TASK_ACKS_LATE)")
	fs.BoolVar(&f.rejectOnWorkerLost, "task-reject-on-worker-lost", envBool("CELERY_TASK_REJECT_ON_WORKER_LOST"), "requeue an acks_late task cut off by --shutdown-timeout instead of failing it with WorkerLostError (env CELERY_TASK_REJECT_ON_WORKER_LOST)")
	fs.BoolVar(&f.resultExtended, "result-extended", false, "store name, args, kwargs, worker, retries and queue with results")
	fs.Var(&secondsValue{&f.timeLimit, false}, "time-limit", "hard time limit in seconds for tasks that set none")
	fs.Var(&secondsValue{&f.softTimeLimit, false}, "soft-time-limit", "soft time limit in seconds for tasks that set none")
	fs.Var(&secondsValue{&f.resultExpires, false}, "result-expires", "seconds (or a Go duration such as 24h) results are kept; 0 = forever")
	fs.Var(&secondsValue{&f.shutdownTimeout, false}, "shutdown-timeout", "seconds (or a Go duration) a warm shutdown waits for running tasks; 0 = until they finish")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile (pprof) to this file until the worker stops")
	fs.StringVar(&f.metricsAddr, "metrics-addr", env("GOCELERY_METRICS_ADDR", ""), "serve Prometheus /metrics, /healthz and /readyz on HOST:PORT (env GOCELERY_METRICS_ADDR)")
	f.topoFlags.register(fs)
	f.failoverStrategy, f.delayedDeliveryQueueType = "round-robin", "quorum"
	fs.Var(f.envChoice(&f.failoverStrategy, "CELERY_BROKER_FAILOVER_STRATEGY", "round-robin", "shuffle"), "broker-failover-strategy", "order of the URLs of a ';'-separated --broker list (env CELERY_BROKER_FAILOVER_STRATEGY)")
	fs.Var(f.envChoice(&f.delayedDeliveryQueueType, "CELERY_BROKER_NATIVE_DELAYED_DELIVERY_QUEUE_TYPE", "quorum", "classic"), "broker-native-delayed-delivery-queue-type", "type of the delay level queues declared when quorum queues are served (env CELERY_BROKER_NATIVE_DELAYED_DELIVERY_QUEUE_TYPE)")
	// Accepted so Celery command lines run; what they mean here is logged.
	fs.StringVarP(&f.app, "app", "A", "", "accepted: the tasks are this program's own registry")
	fs.StringVarP(&f.pool, "pool", "P", "", "accepted: the pool is always goroutines, -c bounds them")
	fs.VarP(choiceValue{&f.optimization, []string{"default", "fair"}}, "optimization", "O", "default or fair: accepted; dispatch is always fair (a free runner takes the next message)")
	fs.BoolVar(&f.withoutGossip, "without-gossip", false, "accepted; there is no gossip")
	fs.BoolVar(&f.withoutMingle, "without-mingle", false, "accepted; there is no mingle")
	fs.IntVar(&f.maxTasksPerChild, "max-tasks-per-child", 0, "accepted; there are no child processes to recycle")
	fs.IntVar(&f.maxMemoryPerChild, "max-memory-per-child", 0, "accepted (KiB); there are no child processes to recycle")
	fs.BoolVarP(&f.detach, "detach", "D", false, "refused: run under systemd, supervisord or a container runtime")
	fs.BoolVarP(&f.beat, "beat", "B", false, "refused: beat is not served; run celery beat beside the worker")
	return fs
}

// parseWorkerFlags parses the worker's command line; g supplies the global
// options given before the command. Errors are *usageError or
// pflag.ErrHelp.
func parseWorkerFlags(name string, g *globals, args []string) (*workerFlags, error) {
	f := &workerFlags{}
	fs := workerFlagSet(name, f)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, err
		}
		return nil, &usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected argument %q", fs.Arg(0))
	}
	if v := os.Getenv("CELERY_MAX_MESSAGE_SIZE"); v != "" && !fs.Changed("max-message-size") {
		if err := (&sizeValue{&f.maxMessageSize}).Set(v); err != nil {
			return nil, usagef("CELERY_MAX_MESSAGE_SIZE=%q: %v", v, err)
		}
	}
	if g == nil {
		g = &globals{}
	}
	// A worker flag wins over the same option given before the command.
	if g.broker != "" && !fs.Changed("broker") {
		f.broker = g.broker
	}
	if g.backend != "" && !fs.Changed("result-backend") {
		f.backend = g.backend
	}
	if g.app != "" && !fs.Changed("app") {
		f.app = g.app
	}
	f.quiet, f.config = g.quiet, g.config
	if !fs.Changed("result-backend-transport-options") {
		m, err := envOptions("CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS")
		if err != nil {
			return nil, err
		}
		f.backendOptions = m
	}

	if f.detach {
		return nil, usagef("-D/--detach is not supported: run %s in the foreground under systemd, supervisord or a container runtime, which keep it running and collect its logs", name)
	}
	if f.beat {
		return nil, usagef("-B/--beat is not supported: %s does not run periodic tasks; run `celery beat` as its own process", name)
	}
	if f.concurrency < 1 {
		return nil, usagef("-c/--concurrency must be at least 1, got %d", f.concurrency)
	}
	if err := f.topoFlags.check(); err != nil {
		return nil, err
	}
	if f.prefetch < 0 {
		return nil, usagef("--prefetch-multiplier must be >= 0, got %d", f.prefetch)
	}
	if len(splitList(f.queues)) == 0 {
		return nil, usagef("-Q/--queues names no queue")
	}
	f.queuesGiven = fs.Changed("queues")
	if f.autoscale != "" {
		hi, lo, err := parseAutoscale(f.autoscale)
		if err != nil {
			return nil, usagef("--autoscale %q: %v", f.autoscale, err)
		}
		f.autoscaleMax, f.autoscaleMin = hi, lo
	}
	if f.maxTasksPerChild < 0 || f.maxMemoryPerChild < 0 {
		return nil, usagef("--max-tasks-per-child and --max-memory-per-child must be >= 0")
	}
	if f.metricsAddr != "" {
		if _, _, err := net.SplitHostPort(f.metricsAddr); err != nil {
			return nil, usagef("--metrics-addr %q: want HOST:PORT, e.g. 0.0.0.0:9808 or :9808", f.metricsAddr)
		}
	}
	// Check the expansions now so a typo is a usage error, not a failure
	// after connecting.
	for _, c := range []struct{ flag, val string }{{"-f/--logfile", f.logfile}, {"--pidfile", f.pidfile}} {
		if _, err := nodeFormat(c.val, "celery@localhost"); err != nil {
			return nil, usagef("%s: %v", c.flag, err)
		}
	}
	return f, nil
}

// parseAutoscale reads Celery's --autoscale: "MAX,MIN" or "MAX" (MIN 0).
// Like Celery it takes the larger number as the maximum whatever the order.
func parseAutoscale(s string) (hi, lo int, err error) {
	parts := strings.Split(s, ",")
	if len(parts) > 2 {
		return 0, 0, errors.New("want MAX,MIN or MAX")
	}
	n := make([]int, 2)
	for i, p := range parts {
		if n[i], err = strconv.Atoi(strings.TrimSpace(p)); err != nil || n[i] < 0 {
			return 0, 0, fmt.Errorf("%q is not a count (want MAX,MIN or MAX)", p)
		}
	}
	hi, lo = n[0], n[1]
	if hi < lo {
		hi, lo = lo, hi
	}
	if hi < 1 {
		return 0, 0, errors.New("the maximum must be at least 1")
	}
	return hi, lo, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// secondsValue is a duration written as Celery writes it, in seconds
// ("3600", "2.5"), or as a Go duration ("24h") as earlier versions of this
// CLI took it.
type secondsValue struct {
	d *time.Duration
	// zeroOff: an explicit 0 means "off", stored as -1 (--heartbeat-interval);
	// the flag's absence leaves 0, the transport's default.
	zeroOff bool
}

func (v *secondsValue) String() string {
	if v.d == nil || *v.d == 0 {
		return "0"
	}
	if *v.d < 0 {
		return "0"
	}
	return strconv.FormatFloat(v.d.Seconds(), 'f', -1, 64)
}

func (v *secondsValue) Set(s string) error {
	var d time.Duration
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		d = time.Duration(f * float64(time.Second))
	} else if d, err = time.ParseDuration(s); err != nil {
		return fmt.Errorf("want seconds (3600, 2.5) or a duration (1h30m)")
	}
	if d < 0 {
		return fmt.Errorf("must not be negative")
	}
	if d == 0 && v.zeroOff {
		d = -1
	}
	*v.d = d
	return nil
}

func (v *secondsValue) Type() string { return "seconds" }

// levelValue is a log level in Celery's names, any case.
type levelValue struct{ l *zerolog.Level }

func (v *levelValue) String() string {
	if v.l == nil {
		return "INFO"
	}
	return levelName(*v.l)
}

func (v *levelValue) Set(s string) error {
	l, err := parseLevel(s)
	if err != nil {
		return err
	}
	*v.l = l
	return nil
}

func (v *levelValue) Type() string { return "level" }

// envChoice is a choice flag whose default the environment variable key
// may set; an invalid value there becomes a usage error.
func (f *topoFlags) envChoice(s *string, key string, choices ...string) choiceValue {
	v := choiceValue{s, choices}
	if e := os.Getenv(key); e != "" {
		if err := v.Set(e); err != nil {
			f.badEnv(key, e, err)
		}
	}
	return v
}

func (f *topoFlags) envInt(key string, def int) int {
	e := os.Getenv(key)
	if e == "" {
		return def
	}
	n, err := strconv.Atoi(e)
	if err != nil {
		f.badEnv(key, e, errors.New("want an integer"))
		return def
	}
	return n
}

func (f *topoFlags) envBool(key string, def bool) bool {
	e := os.Getenv(key)
	if e == "" {
		return def
	}
	b, err := strconv.ParseBool(e)
	if err != nil {
		f.badEnv(key, e, errors.New("want true or false"))
		return def
	}
	return b
}

func (f *topoFlags) badEnv(key, val string, err error) {
	if f.envErr == nil {
		f.envErr = fmt.Errorf("%s=%q: %v", key, val, err)
	}
}

// choiceValue is a string restricted to a few values.
type choiceValue struct {
	s       *string
	choices []string
}

func (v choiceValue) String() string {
	if v.s == nil {
		return ""
	}
	return *v.s
}

func (v choiceValue) Set(s string) error {
	for _, c := range v.choices {
		if strings.EqualFold(s, c) {
			*v.s = c
			return nil
		}
	}
	return fmt.Errorf("want %s", strings.Join(v.choices, " or "))
}

func (v choiceValue) Type() string { return strings.Join(v.choices, "|") }

func (p Program) workerUsage() string {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: %s [global options] worker [flags]\n\nThe flags are `celery worker`'s:\n", p.Name)
	b.WriteString(workerFlagSet(p.Name, &workerFlags{}).FlagUsages())
	return b.String()
}

// optionsValue is a flag holding a JSON object, as Celery's
// *_transport_options settings are dicts: --result-backend-transport-options
// '{"master_name": "mymaster"}'.
type optionsValue struct{ m *map[string]any }

func (v optionsValue) String() string {
	if v.m == nil || *v.m == nil {
		return ""
	}
	b, _ := json.Marshal(*v.m)
	return string(b)
}

func (v optionsValue) Set(s string) error {
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil || m == nil {
		return fmt.Errorf("want a JSON object such as '{\"master_name\": \"mymaster\"}'")
	}
	*v.m = m
	return nil
}

func (v optionsValue) Type() string { return "json" }

// envOptions reads a JSON object from an environment variable (nil when
// unset); a malformed value is a usage error naming the variable.
func envOptions(key string) (map[string]any, error) {
	s := os.Getenv(key)
	if s == "" {
		return nil, nil
	}
	var m map[string]any
	if err := (optionsValue{&m}).Set(s); err != nil {
		return nil, usagef("%s: %v", key, err)
	}
	return m, nil
}

// sizeValue is a size in bytes: a number, optionally with a KiB, MiB or GiB
// suffix (KB, MB, GB and K, M, G mean the same powers of 1024).
type sizeValue struct{ n *int64 }

func (v *sizeValue) String() string {
	if v.n == nil {
		return "0"
	}
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"GiB", 30}, {"MiB", 20}, {"KiB", 10}} {
		if *v.n > 0 && *v.n%(1<<u.shift) == 0 {
			return strconv.FormatInt(*v.n>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatInt(*v.n, 10)
}

func (v *sizeValue) Set(s string) error {
	num, shift := splitSizeUnit(strings.TrimSpace(s))
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)>>shift {
		return fmt.Errorf("want a size in bytes such as 67108864 or 64MiB, got %q", s)
	}
	*v.n = n << shift
	return nil
}

func (v *sizeValue) Type() string { return "size" }

// splitSizeUnit splits "64MiB" into "64" and 20.
func splitSizeUnit(s string) (num string, shift uint) {
	upper := strings.ToUpper(s)
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"GIB", 30}, {"GB", 30}, {"G", 30}, {"MIB", 20}, {"MB", 20}, {"M", 20}, {"KIB", 10}, {"KB", 10}, {"K", 10}, {"B", 0}} {
		if strings.HasSuffix(upper, u.suffix) {
			return strings.TrimSpace(s[:len(s)-len(u.suffix)]), u.shift
		}
	}
	return s, 0
}
