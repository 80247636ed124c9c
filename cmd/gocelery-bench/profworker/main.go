// Command profworker is the gocelery worker (same packages and defaults as
// cmd/gocelery's `worker`, WARNING-level console logging) with a CPU
// profile written on shutdown, for gocelery-bench -profile. It accepts the
// subset of `gocelery worker` flags the bench passes, plus --cpuprofile and
// --memprofile.
//
//	profworker worker -b URL --result-backend URL -Q q -c 16 --cpuprofile w1.pprof
package main

import (
	"context"
	"flag"
	"fmt"
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

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "worker" {
		args = args[1:]
	}
	fs := flag.NewFlagSet("profworker", flag.ExitOnError)
	broker := fs.String("b", "amqp://guest:guest@127.0.0.1:5672//", "broker")
	backend := fs.String("result-backend", "redis://127.0.0.1:6379/0", "result backend")
	queues := fs.String("Q", "celery", "queues")
	conc := fs.Int("c", runtime.NumCPU(), "concurrency")
	prefetch := fs.Int("prefetch-multiplier", 4, "prefetch multiplier")
	node := fs.String("n", "prof@%h", "node name")
	_ = fs.String("l", "WARNING", "log level (always WARNING)")
	cpu := fs.String("cpuprofile", "", "write a CPU profile here")
	mem := fs.String("memprofile", "", "write a heap profile here at shutdown")
	_ = fs.Parse(args)

	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, NoColor: true}).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	reg := tasks.NewRegistry()
	if err := conformance.Register(reg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	rb, err := backends.NewRedis(backends.RedisParams{URL: *backend, Expires: 24 * time.Hour})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pm := *prefetch
	if pm == 0 {
		pm = -1
	}
	w, err := worker.New(worker.Config{
		BrokerURL: *broker, Queues: strings.Split(*queues, ","), Concurrency: *conc,
		PrefetchMultiplier: pm, NodeName: *node, Registry: reg, Backend: rb, Logger: &log,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if *cpu != "" {
		f, err := os.Create(*cpu)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Shutdown(ctx)
	}()
	if err := w.Run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	if *mem != "" {
		if f, err := os.Create(*mem); err == nil {
			runtime.GC()
			_ = pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
}
