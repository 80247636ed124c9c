package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/internal/redact"
	"github.com/celeryworker/gocelery/metrics"
	"github.com/celeryworker/gocelery/worker"
)

// Where each misconfigured setting is fixed, for the one line a failed
// start ends with.
const (
	fixBroker           = "-b/--broker (CELERY_BROKER_URL)"
	fixTransportOptions = "--broker-transport-options (" + envTransportOptions + ")"
	fixBackend          = "--result-backend (CELERY_RESULT_BACKEND)"
)

// session is one run of the worker command.
type session struct {
	p      Program
	f      *workerFlags
	log    zerolog.Logger
	stderr io.Writer
	// toFile: logs go to --logfile, so a fatal error is also printed on
	// stderr for whoever started the program.
	toFile bool
}

func (p Program) runWorker(ctx context.Context, g *globals, args []string, stdout, stderr io.Writer) int {
	f, err := parseWorkerFlags(p.Name, g, args)
	if errors.Is(err, pflag.ErrHelp) {
		fmt.Fprint(stdout, p.workerUsage())
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s worker: %v\n", p.Name, err)
		return 2
	}
	if p.Registry == nil {
		fmt.Fprintf(stderr, "%s worker: %v\n", p.Name, errNoRegistry)
		return 1
	}
	host, _ := os.Hostname()
	// The worker expands the node name the same way; the expanded name is
	// needed first for the --logfile and --pidfile paths.
	node := worker.ExpandNodeName(f.hostname, host)

	dest := stderr
	if f.logfile != "" {
		path, _ := nodeFormat(f.logfile, node) // checked by parseWorkerFlags
		lf, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o666)
		if err != nil {
			fmt.Fprintf(stderr, "%s worker: -f/--logfile: %v\n", p.Name, err)
			return 1
		}
		defer lf.Close()
		dest = lf
	}
	out := zerolog.SyncWriter(dest)
	log, err := buildLogger(out, f.level, f.logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "%s worker: %v\n", p.Name, err)
		return 2
	}
	s := &session{p: p, f: f, log: log, stderr: stderr, toFile: f.logfile != ""}

	// Signals are caught from here on, before the banner: a signal during
	// startup waits in the channel and stops the worker as soon as it runs
	// instead of killing the process mid-way (pid file left behind).
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT)
	defer signal.Stop(sigs)

	if f.pidfile != "" {
		path, _ := nodeFormat(f.pidfile, node)
		pf, stale, err := acquirePidfile(path)
		if err != nil {
			return s.fail(err.Error())
		}
		defer pf.release()
		if stale != "" {
			log.Warn().Msgf("--pidfile %s: replaced a %s pid file", pf.path, stale)
		}
	}

	if f.cpuProfile != "" {
		stop, err := startCPUProfile(f.cpuProfile)
		if err != nil {
			return s.fail(err.Error())
		}
		defer stop()
	}

	// The metrics server starts first, so a port in use ends the start
	// before anything connects; it serves until the worker has stopped.
	var mtr *metrics.Metrics
	if f.metricsAddr != "" {
		mtr = metrics.New()
		srv, err := metrics.Listen(f.metricsAddr, mtr.Handler())
		if err != nil {
			return s.fail(fmt.Sprintf("--metrics-addr %s: cannot serve metrics: %v", f.metricsAddr, err))
		}
		defer s.stopMetrics(srv)
		log.Info().Msgf("metrics on http://%s/metrics (health: /healthz, /readyz)", srv.Addr())
	}

	var backend worker.ResultBackend
	if f.backend != "" && f.backend != "disabled" {
		expires := f.resultExpires
		if expires == 0 {
			expires = -1 // never expire
		}
		rb, err := backends.NewRedis(backends.RedisParams{URL: f.backend, Expires: expires, Extended: f.resultExtended, TransportOptions: f.backendOptions})
		if err != nil {
			return s.fail(fmt.Sprintf("cannot use the result backend%s: %s; fix %s", s.urlUnlessQuoted(f.backend, err), s.redactErr(err), fixBackend))
		}
		defer rb.Close()
		if w := rb.Warning(); w != "" {
			log.Warn().Msg(w)
		}
		backend = rb
	}
	topo, err := f.topology()
	if err != nil {
		return s.fail(err.Error())
	}
	transport, err := openTransport(transportParams{url: f.broker, options: f.transportOptions, heartbeat: f.heartbeat, failover: f.failoverStrategy})
	if err != nil {
		fix := fixBroker
		if strings.Contains(err.Error(), "transport option") {
			fix = fixTransportOptions
		}
		return s.fail(fmt.Sprintf("cannot use the broker%s: %s; fix %s", s.urlUnlessQuoted(f.broker, err), s.redactErr(err), fix))
	}
	for _, note := range transportNotes(transport) {
		log.Info().Msg(note)
	}

	conc, minConc := f.concurrency, 0
	if f.autoscaleMax > 0 {
		// Celery's autoscaler may go down to 0 processes; a worker with no
		// runner would take no work, so 1 is the floor.
		conc, minConc = f.autoscaleMax, max(f.autoscaleMin, 1)
	}
	prefetch := f.prefetch
	if prefetch == 0 {
		prefetch = -1 // the worker's "unlimited"; its 0 means Celery's default
	}
	var queues []string
	if f.queuesGiven {
		queues = splitList(f.queues)
	}
	cfg := worker.Config{
		Broker:                   transport,
		Queues:                   queues,
		Topology:                 topo,
		DefaultPriority:          f.defaultPriority,
		DelayedDeliveryQueueType: f.delayedDeliveryQueueType,
		Concurrency:              conc,
		MinConcurrency:           minConc,
		PrefetchMultiplier:       prefetch,
		MaxMessageSize:           maxMessageSize(f.maxMessageSize),
		NodeName:                 f.hostname,
		TimeLimit:                f.timeLimit,
		SoftTimeLimit:            f.softTimeLimit,
		TrackStarted:             f.trackStarted,
		TaskAcksLate:             f.acksLate,
		TaskRejectOnWorkerLost:   f.rejectOnWorkerLost,
		ResultExtended:           f.resultExtended,
		TaskEvents:               f.events,
		WithoutHeartbeat:         f.withoutHeartbeat,
		ShutdownTimeout:          f.shutdownTimeout,
		Registry:                 p.Registry,
		Backend:                  backend,
		Logger:                   &s.log,
	}
	if mtr != nil {
		cfg.Observer = mtr
	}
	w, err := worker.New(cfg)
	if err != nil {
		return s.fail(s.explain(err))
	}
	if mtr != nil {
		mtr.Attach(w)
	}
	if !f.quiet {
		s.banner(out, w.NodeName(), conc, minConc)
	}
	s.logNotes(conc)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopSignals := s.handleSignals(runCtx, cancel, w, sigs)
	err = w.Run(runCtx)
	stopSignals()
	if err != nil {
		return s.fail(s.explain(err))
	}
	return 0
}

// maxMessageSize turns the flag's "0: no limit" into the library's
// negative (its 0 means the default).
func maxMessageSize(n int64) int {
	if n == 0 {
		return -1
	}
	return int(min(n, math.MaxInt))
}

// stopMetrics stops the metrics server, waiting a little for scrapes in
// progress.
func (s *session) stopMetrics(srv *metrics.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		s.log.Warn().Err(err).Msg("--metrics-addr: metrics server")
	}
}

// handleSignals turns SIGTERM/SIGINT into a warm shutdown (cancel: the
// worker stops taking work and waits for running tasks, bounded by
// --shutdown-timeout) and a second signal, or SIGQUIT, into a cold one
// (Close: unacknowledged messages go back to the broker), as Celery does.
// A cancelled ctx counts as the first signal. The returned func stops the
// handling.
func (s *session) handleSignals(ctx context.Context, cancel context.CancelFunc, w *worker.Worker, sigs <-chan os.Signal) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		warm := false
		ctxDone := ctx.Done()
		for {
			select {
			case <-done:
				return
			case <-ctxDone:
				warm, ctxDone = true, nil
			case sig := <-sigs:
				if sig == syscall.SIGQUIT || warm {
					s.log.Warn().Msgf("worker: Cold shutdown (%s): closing now; unacknowledged messages go back to the queue", sigName(sig))
					if err := w.Close(); err != nil {
						s.log.Warn().Err(err).Msg("cold shutdown")
					}
					warm, ctxDone = true, nil
					continue
				}
				warm, ctxDone = true, nil
				s.log.Info().Msgf("worker: Warm shutdown (%s): no new tasks; waiting for running tasks (a second signal stops at once)", sigName(sig))
				cancel()
			}
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}

func sigName(sig os.Signal) string {
	switch sig {
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGQUIT:
		return "SIGQUIT"
	}
	return sig.String()
}

// explain turns an error from the worker into the line that says what is
// wrong and which flag fixes it.
func (s *session) explain(err error) string {
	var ce *worker.ConfigError
	if !errors.As(err, &ce) {
		return "worker stopped: " + s.redactErr(err)
	}
	switch ce.Setting {
	case "broker_url":
		return fmt.Sprintf("cannot use the broker%s: %s; fix %s", s.urlUnlessQuoted(s.f.broker, ce.Err), s.redactErr(ce.Err), fixBroker)
	case "result_backend":
		return fmt.Sprintf("cannot use the result backend%s: %s; fix %s", s.urlUnlessQuoted(s.f.backend, ce.Err), s.redactErr(ce.Err), fixBackend)
	case "queues":
		return "-Q/--queues: the queue exists with other arguments or type; declare it the same way or delete it (" + s.redactErr(ce.Err) + "); --queues-file and the --task-*-queue-type, --task-*-exchange-type and --task-queue-max-priority flags say how it is declared"
	}
	return fmt.Sprintf("misconfigured %s: %s", ce.Setting, s.redactErr(ce.Err))
}

// urlUnlessQuoted is " URL" (redacted) unless err already quotes it, so the
// line names the URL once.
func (s *session) urlUnlessQuoted(url string, err error) string {
	red, text := redact.URL(url), s.redactErr(err)
	// redactErr hides the password wherever it occurs, so with a user name
	// equal to the password (guest:guest) the quoted URL reads ****:****.
	if strings.Contains(text, red) || strings.Contains(text, redact.String(red, url)) {
		return ""
	}
	return " " + red
}

// redactErr is err's text with no password of the broker or backend URL
// in it, whatever the error's author did.
func (s *session) redactErr(err error) string {
	return redact.String(redact.String(err.Error(), s.f.broker), s.f.backend)
}

// fail logs the one line a failed run ends with and returns exit status 1.
// The line is logged even at --loglevel CRITICAL, and printed on stderr as
// well when the logs go to a file.
func (s *session) fail(msg string) int {
	msg = strings.Join(strings.Fields(msg), " ")
	l := s.log.Level(min(s.log.GetLevel(), zerolog.ErrorLevel))
	l.Error().Msg(msg)
	if s.toFile {
		fmt.Fprintf(s.stderr, "%s worker: %s\n", s.p.Name, msg)
	}
	return 1
}

// banner prints Celery's startup summary with this program's name and
// version: raw lines for the console format, one event for JSON so the log
// stays machine-readable.
func (s *session) banner(out io.Writer, node string, conc, minConc int) {
	f, p := s.f, s.p
	results := "disabled"
	if f.backend != "" && f.backend != "disabled" {
		results = redact.URL(f.backend)
	}
	concurrency := fmt.Sprintf("%d (goroutines)", conc)
	if minConc > 0 && minConc < conc {
		concurrency = fmt.Sprintf("{min=%d, max=%d} (goroutines)", minConc, conc)
	}
	events := "OFF (enable -E to monitor tasks in this worker)"
	if f.events {
		events = "ON"
	}
	queues := s.queueLines()
	names := p.Registry.Names()
	if f.logFormat == "json" {
		s.log.Info().Str("program", p.Name).Str("version", p.Version).Str("node", node).
			Str("transport", redact.URL(f.broker)).Str("results", results).
			Str("concurrency", concurrency).Bool("task_events", f.events).
			Strs("queues", queues).Strs("tasks", names).
			Msgf("%s %s starting", p.Name, p.Version)
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n -------------- %s %s %s\n", node, p.Name, p.Version)
	fmt.Fprintf(&b, " .> transport:   %s\n", redact.URL(f.broker))
	fmt.Fprintf(&b, " .> results:     %s\n", results)
	fmt.Fprintf(&b, " .> concurrency: %s\n", concurrency)
	fmt.Fprintf(&b, " .> task events: %s\n", events)
	fmt.Fprintf(&b, " .> queues:      %s\n", strings.Join(queues, ", "))
	b.WriteString("\n[tasks]\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  . %s\n", n)
	}
	b.WriteString("\n")
	_, _ = io.WriteString(out, b.String())
}

// logNotes says once what Celery flags that have no counterpart here mean,
// so a Celery command line runs and nobody wonders what became of them.
func (s *session) logNotes(conc int) {
	f, p := s.f, s.p
	var parts []string
	if f.app != "" {
		parts = append(parts, fmt.Sprintf("-A %s: the tasks are %s's own registry ('%s tasks' lists them)", f.app, p.Name, p.Name))
	}
	if f.pool != "" {
		parts = append(parts, fmt.Sprintf("-P %s: the pool is always goroutines, at most %d tasks at once (-c/--autoscale)", f.pool, conc))
	}
	if len(parts) > 0 {
		s.log.Info().Msg(strings.Join(parts, "; "))
	}
	if f.maxTasksPerChild > 0 || f.maxMemoryPerChild > 0 {
		s.log.Info().Msg("--max-tasks-per-child/--max-memory-per-child have no effect: there are no child processes to recycle; a goroutine holds no state between tasks")
	}
	if f.withoutGossip || f.withoutMingle {
		s.log.Debug().Msg("--without-gossip/--without-mingle: accepted; this worker does neither")
	}
	if f.config != "" {
		s.log.Info().Msgf("--config %s ignored: %s is configured by its flags and CELERY_BROKER_URL/CELERY_RESULT_BACKEND", f.config, p.Name)
	}
}

// startCPUProfile writes a pprof CPU profile to path until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	pf, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(pf); err != nil {
		pf.Close()
		return nil, fmt.Errorf("--cpuprofile %s: %w", path, err)
	}
	return func() {
		pprof.StopCPUProfile()
		pf.Close()
	}, nil
}
