package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/tasks"
	"github.com/celeryworker/gocelery/tasks/conformance"
	"github.com/celeryworker/gocelery/worker"
)

func newRegistry() (*tasks.Registry, error) {
	reg := tasks.NewRegistry()
	if err := conformance.Register(reg); err != nil {
		return nil, fmt.Errorf("gocelery: register conformance tasks: %w", err)
	}
	return reg, nil
}

// workerFlags mirror `celery worker`'s flags and meanings.
type workerFlags struct {
	broker, backend, queues, hostname, loglevel, logFormat string
	concurrency, prefetch                                  int
	events, trackStarted, resultExtended                   bool
	timeLimit, softTimeLimit                               float64
	resultExpires                                          time.Duration
	shutdownTimeout                                        time.Duration
	cpuProfile                                             string
}

func parseWorkerFlags(args []string, stderr io.Writer) (*workerFlags, error) {
	f := &workerFlags{}
	fs := flag.NewFlagSet("gocelery worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	str := func(p *string, short, long, def, help string) {
		if short != "" {
			fs.StringVar(p, short, def, help)
		}
		fs.StringVar(p, long, def, help)
	}
	env := func(key, def string) string {
		if v := os.Getenv(key); v != "" {
			return v
		}
		return def
	}
	str(&f.broker, "b", "broker", env("CELERY_BROKER_URL", "amqp://guest:guest@localhost:5672//"), "broker URL (env CELERY_BROKER_URL)")
	str(&f.backend, "", "result-backend", env("CELERY_RESULT_BACKEND", "redis://localhost:6379/0"), "result backend URL (env CELERY_RESULT_BACKEND); \"disabled\" stores nothing")
	str(&f.queues, "Q", "queues", "celery", "comma-separated queues to consume")
	str(&f.hostname, "n", "hostname", "celery@%h", "node name; %h, %n, %d are expanded as Celery does")
	str(&f.loglevel, "l", "loglevel", "INFO", "DEBUG, INFO, WARNING, ERROR, CRITICAL")
	fs.StringVar(&f.logFormat, "log-format", "console", "console (Celery-like lines) or json")
	fs.IntVar(&f.concurrency, "c", runtime.NumCPU(), "number of tasks run at once")
	fs.IntVar(&f.concurrency, "concurrency", runtime.NumCPU(), "number of tasks run at once")
	fs.IntVar(&f.prefetch, "prefetch-multiplier", 4, "prefetch = concurrency × this; 0 = unlimited")
	fs.BoolVar(&f.events, "E", false, "send task events for monitors such as Flower")
	fs.BoolVar(&f.events, "task-events", false, "send task events for monitors such as Flower")
	fs.BoolVar(&f.trackStarted, "track-started", false, "store STARTED before running each task")
	fs.BoolVar(&f.resultExtended, "result-extended", false, "store name, args, kwargs, worker, retries and queue with results")
	fs.Float64Var(&f.timeLimit, "time-limit", 0, "hard time limit in seconds for tasks that set none")
	fs.Float64Var(&f.softTimeLimit, "soft-time-limit", 0, "soft time limit in seconds for tasks that set none")
	fs.DurationVar(&f.resultExpires, "result-expires", 24*time.Hour, "how long results are kept (0 = forever)")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile (pprof) to this file until the worker stops")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 0, "how long a graceful shutdown waits for running tasks (0 = until they finish)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if f.concurrency < 1 {
		return nil, fmt.Errorf("-c/--concurrency must be at least 1, got %d", f.concurrency)
	}
	if f.prefetch < 0 {
		return nil, fmt.Errorf("--prefetch-multiplier must be >= 0, got %d", f.prefetch)
	}
	return f, nil
}

func runWorker(args []string, stdout, stderr io.Writer) int {
	f, err := parseWorkerFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "gocelery worker:", err)
		return 2
	}
	log, err := newLogger(stderr, f.loglevel, f.logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "gocelery worker:", err)
		return 2
	}
	reg, err := newRegistry()
	if err != nil {
		log.Error().Err(err).Msg("startup failed")
		return 1
	}
	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			log.Error().Err(err).Msg("--cpuprofile")
			return 2
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			log.Error().Err(err).Msg("--cpuprofile")
			return 2
		}
		defer func() {
			pprof.StopCPUProfile()
			pf.Close()
		}()
	}
	var store worker.ResultStore
	if f.backend != "" && f.backend != "disabled" {
		expires := f.resultExpires
		if expires == 0 {
			expires = -1 // no expiry
		}
		rb, err := backends.NewRedis(backends.RedisParams{URL: f.backend, Expires: expires, Extended: f.resultExtended})
		if err != nil {
			log.Error().Err(err).Msg("result backend")
			return 1
		}
		defer rb.Close()
		store = rb
	}
	prefetch := f.prefetch
	if prefetch == 0 {
		prefetch = -1
	}
	w, err := worker.New(worker.Config{
		BrokerURL:          f.broker,
		Queues:             splitList(f.queues),
		Concurrency:        f.concurrency,
		PrefetchMultiplier: prefetch,
		NodeName:           f.hostname,
		TimeLimit:          seconds(f.timeLimit),
		SoftTimeLimit:      seconds(f.softTimeLimit),
		TrackStarted:       f.trackStarted,
		ResultExtended:     f.resultExtended,
		TaskEvents:         f.events,
		Registry:           reg,
		Backend:            store,
		Logger:             &log,
	})
	if err != nil {
		log.Error().Err(err).Msg("startup failed")
		return 1
	}
	log.Info().Msgf("gocelery %s: node %s, broker %s, queues %s, concurrency %d, tasks: %s",
		version, w.NodeName(), redactURL(f.broker), f.queues, f.concurrency, strings.Join(reg.Names(), ", "))

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT)
	go func() {
		sig := <-sigs
		if sig == syscall.SIGQUIT {
			log.Warn().Msg("cold shutdown (SIGQUIT): closing now; unacknowledged messages go back to the queue")
			w.Close()
			return
		}
		log.Info().Msgf("worker: Warm shutdown (%s): no new tasks; waiting for running tasks", sig)
		ctx := context.Background()
		if f.shutdownTimeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, f.shutdownTimeout)
			defer cancel()
		}
		go func() {
			// A second signal turns the warm shutdown cold, as in Celery.
			<-sigs
			log.Warn().Msg("cold shutdown: closing now")
			w.Close()
		}()
		if err := w.Shutdown(ctx); err != nil {
			log.Error().Err(err).Msg("shutdown")
		}
	}()
	if err := w.Run(); err != nil {
		log.Error().Err(err).Msg("worker stopped")
		return 1
	}
	log.Info().Msg("worker stopped")
	return 0
}

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func newLogger(w io.Writer, level, format string) (zerolog.Logger, error) {
	lvl, err := parseLevel(level)
	if err != nil {
		return zerolog.Logger{}, err
	}
	// Millisecond timestamps, as Celery's console format shows them.
	zerolog.TimeFieldFormat = time.RFC3339Nano
	switch format {
	case "json":
		return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
	case "console", "":
		return zerolog.New(consoleWriter(w)).Level(lvl).With().Timestamp().Logger(), nil
	}
	return zerolog.Logger{}, fmt.Errorf("--log-format must be console or json, got %q", format)
}

func parseLevel(s string) (zerolog.Level, error) {
	switch strings.ToUpper(s) {
	case "DEBUG":
		return zerolog.DebugLevel, nil
	case "INFO", "":
		return zerolog.InfoLevel, nil
	case "WARNING", "WARN":
		return zerolog.WarnLevel, nil
	case "ERROR":
		return zerolog.ErrorLevel, nil
	case "CRITICAL", "FATAL":
		return zerolog.FatalLevel, nil
	}
	return zerolog.NoLevel, fmt.Errorf("unknown log level %q (want DEBUG, INFO, WARNING, ERROR or CRITICAL)", s)
}

// consoleWriter prints Celery's default worker log format:
// [2026-11-24 10:00:00,123: INFO/MainProcess] message
func consoleWriter(w io.Writer) zerolog.ConsoleWriter {
	cw := zerolog.ConsoleWriter{Out: w, NoColor: true, TimeFormat: "2006-01-02 15:04:05,000"}
	cw.PartsOrder = []string{zerolog.TimestampFieldName, zerolog.LevelFieldName, zerolog.MessageFieldName}
	cw.FormatTimestamp = func(i any) string {
		s, _ := i.(string)
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return "[" + s + ":"
		}
		return "[" + t.Format("2006-01-02 15:04:05,000") + ":"
	}
	cw.FormatLevel = func(i any) string {
		s, _ := i.(string)
		switch s {
		case "warn":
			s = "warning"
		case "fatal":
			s = "critical"
		}
		return strings.ToUpper(s) + "/MainProcess]"
	}
	// Lines a task logs itself read as Celery's worker_task_log_format:
	// "name[id]: message".
	cw.FormatPrepare = func(evt map[string]any) error {
		if evt["task_log"] == true {
			evt[zerolog.MessageFieldName] = fmt.Sprintf("%v[%v]: %v", evt["task"], evt["id"], evt[zerolog.MessageFieldName])
		}
		return nil
	}
	// Task name and id are already in the message text.
	cw.FieldsExclude = []string{"task", "id", "runtime", "task_log"}
	return cw
}

func redactURL(raw string) string {
	if i := strings.Index(raw, "@"); i >= 0 {
		if j := strings.Index(raw, "://"); j >= 0 && j < i {
			creds := raw[j+3 : i]
			if k := strings.IndexByte(creds, ':'); k >= 0 {
				return raw[:j+3] + creds[:k] + ":**@" + raw[i+1:]
			}
		}
	}
	return raw
}
