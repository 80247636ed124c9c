// Command gocelery-bench measures the gocelery worker against a raw
// amqp091-go + go-redis consumer (the ceiling) and Python Celery 5.7's
// worker on the same RabbitMQ broker and Redis result backend.
//
//	go run ./cmd/gocelery-bench -n 20000 -runs 3 -workloads W1,W2,W3,W4,W5,P1
//
// Messages are pre-published (not measured) in the exact bytes Celery's
// send_task writes, captured once from Python at start. Completion is
// checked in Redis: a run that lost or failed a task is INVALID.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
)

type bench struct {
	root      string
	brokerURL string
	// R1: the Redis broker, its client and captured message; listDepth,
	// when set, is where wait and validate read a queue's depth (LLEN)
	// instead of RabbitMQ.
	redisBrokerURL string
	rbroker        *redis.Client
	rtmpl          *redisTemplate
	listDepth      *redis.Client
	redisURL       string
	python         string
	goBin          string
	profBin        string
	conn           *amqp.Connection
	rdb            *redis.Client
	tmpl           map[string]*template
	verbose        bool

	n, runs, pyN, pyRuns  int
	goC, goPrefetchMult   int
	goWorkers             int // gocelery processes sharing the queue (W1, W2, W4)
	ceilPrefetch          int
	w3N, w4N, w4C, w4PyC  int
	w5N, w4PyN            int
	p1N, p1SeqN           int
	p1PyN, p1Par          int
	w5PyWait              time.Duration
	impls                 map[string]bool
	rabbitPids, redisPids []int
	disturbed             []string
	waitQuiet             time.Duration
	minDur                time.Duration // shortest run that counts
	sets                  []*rowSet     // D1, D64, S1, Q1
	dN, d64CeilPrefetch   int
}

// runResult is one measured run.
type runResult struct {
	rate    float64 // tasks/s
	n       int
	dur     time.Duration
	peakRSS int64
	invalid string // non-empty: why the run does not count
	// CPU milliseconds per 1000 tasks during the measured interval of the
	// worker (its process tree; the bench process for the ceiling), the
	// RabbitMQ server and the Redis server.
	cpuWorker, cpuRabbit, cpuRedis float64
}

func main() {
	b := &bench{}
	var workloads, impls, profile string
	var build bool
	flag.IntVar(&b.n, "n", 45000, "tasks per W1/W2 run (and D64); more when a run is shorter than -min-dur")
	flag.IntVar(&b.runs, "runs", 3, "runs per workload and implementation (W1, W2, W4)")
	flag.IntVar(&b.pyN, "py-n", 3500, "tasks per W1/W2 run for Python Celery (0: same as -n); its rate is steady long before")
	flag.IntVar(&b.pyRuns, "py-runs", 0, "runs for Python Celery (0: same as -runs)")
	flag.IntVar(&b.goC, "c", 16, "gocelery -c for W1/W2/W3")
	flag.IntVar(&b.goWorkers, "go-workers", 1, "gocelery worker processes sharing the queue in W1, W2 and W4 (each with -c and --prefetch-multiplier)")
	flag.IntVar(&b.goPrefetchMult, "prefetch-multiplier", 64, "gocelery --prefetch-multiplier (64 × -c 16 = 1024, the same window as the ceiling's 1000)")
	flag.IntVar(&b.ceilPrefetch, "ceiling-prefetch", 1000, "prefetch of the raw ceiling consumer")
	flag.IntVar(&b.w3N, "w3-n", 500, "W3 round trips")
	flag.IntVar(&b.w4N, "w4-n", 22000, "W4 sleep(0.02) tasks (with 2000 the ~0.1 s the broker needs to deliver them dominates the 0.2 s run)")
	flag.IntVar(&b.w4PyN, "w4-py-n", 3500, "W4 tasks for Python Celery (threads -c 64: 1000-1700/s)")
	flag.IntVar(&b.w4C, "w4-c", 200, "W4 gocelery and ceiling concurrency")
	flag.IntVar(&b.w4PyC, "w4-py-c", 64, "W4 Python threads pool size")
	flag.IntVar(&b.w5N, "w5-n", 10000, "W5 countdown tasks held")
	flag.DurationVar(&b.w5PyWait, "w5-py-wait", 15*time.Second, "W5: how long Python Celery gets to take the countdown tasks in")
	flag.IntVar(&b.p1N, "p1-n", 20000, "P1 tasks published by the concurrent Go client and the raw ceilings")
	flag.IntVar(&b.p1SeqN, "p1-seq-n", 3000, "P1 tasks published by the Go client from one goroutine (a confirm per task)")
	flag.IntVar(&b.p1PyN, "p1-py-n", 2000, "P1 tasks Python's send_task publishes per run")
	flag.IntVar(&b.p1Par, "p1-par", 64, "P1 goroutines sharing one Go client in the concurrent run")
	flag.StringVar(&workloads, "workloads", "W1,D1,D64,W2,W3,W4,W5,S1,Q1,P1,R1", "workloads to run (D1: default flags, D64: -c 64, S1: scale-out, Q1: quorum and priority queues, P1: publish rate of the Go client and Python's send_task, R1: W1 on a Redis broker)")
	flag.StringVar(&impls, "impls", "ceiling,gocelery,python", "implementations to run")
	flag.StringVar(&b.brokerURL, "broker", "amqp://guest:guest@127.0.0.1:5672//", "RabbitMQ URL")
	flag.StringVar(&b.redisBrokerURL, "redis-broker", "redis://127.0.0.1:6379/6", "Redis broker for R1 (its own db; the bench deletes only its keys)")
	flag.StringVar(&b.redisURL, "redis", "redis://127.0.0.1:6379/5", "Redis result backend (the bench deletes only the keys it made)")
	flag.StringVar(&b.python, "python", ".venv/bin/python", "Python with celery 5.7")
	flag.StringVar(&b.goBin, "bin", ".build/gocelery", "gocelery binary")
	flag.BoolVar(&build, "build", true, "go build the gocelery binary first")
	flag.StringVar(&profile, "profile", "", "directory: also run W1 and W2 once with a CPU-profiled in-process gocelery worker (cmd/gocelery-bench/profworker) and write w1.pprof, w2.pprof there, the heap profiles w1.heap.pprof, w2.heap.pprof (-sample_index=alloc_objects: what was allocated) and the execution traces w1.trace, w2.trace (go tool trace -pprof=sched: where goroutines waited to run)")
	flag.BoolVar(&b.verbose, "v", false, "log progress")
	flag.IntVar(&b.dN, "d-n", 11000, "tasks per run of a gocelery at default flags (D1, S1 per process, Q1); more when a run is shorter than -min-dur")
	flag.IntVar(&b.d64CeilPrefetch, "d64-ceiling-prefetch", 500, "D64: the ceiling's prefetch beside gocelery -c 64")
	flag.DurationVar(&b.minDur, "min-dur", 2*time.Second, "shortest throughput run that counts: a shorter one is done again with more tasks")
	flag.DurationVar(&b.waitQuiet, "wait-quiet", 0, "before each run, wait up to this long for other Celery/gocelery workers and benches on the machine to finish")
	flag.Parse()
	if b.pyN == 0 {
		b.pyN = b.n
	}
	if b.pyRuns == 0 {
		b.pyRuns = b.runs
	}
	b.impls = map[string]bool{}
	for _, s := range strings.Split(impls, ",") {
		b.impls[strings.TrimSpace(s)] = true
	}
	if err := b.setup(build, profile != ""); err != nil {
		fmt.Fprintln(os.Stderr, "gocelery-bench:", err)
		os.Exit(1)
	}
	defer b.conn.Close()
	started := time.Now()
	rep := &report{b: b}
	for _, w := range strings.Split(workloads, ",") {
		switch strings.ToUpper(strings.TrimSpace(w)) {
		case "W1":
			rep.w1 = b.throughput("W1", "noop", true)
		case "W2":
			rep.w2 = b.throughput("W2", "noop_ignore", false)
		case "W3":
			rep.w3 = b.roundTrips()
		case "W4":
			rep.w4 = b.throughput("W4", "sleep", true)
		case "W5":
			rep.w5 = b.memory()
		case "P1":
			rep.p1 = b.publishRates()
		case "R1":
			rep.r1 = b.redisThroughput()
		case "D1", "D64", "S1", "Q1":
			b.rowSets([]string{strings.ToUpper(strings.TrimSpace(w))})
		case "":
		default:
			fmt.Fprintf(os.Stderr, "unknown workload %q\n", w)
			os.Exit(2)
		}
	}
	if profile != "" {
		b.profileRuns(profile)
	}
	rep.print(os.Stdout, time.Since(started))
}

func (b *bench) logf(format string, a ...any) {
	if b.verbose {
		fmt.Fprintf(os.Stderr, "[bench %s] "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, a...)...)
	}
}

func (b *bench) setup(build, profile bool) error {
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	b.root = root
	if !filepath.IsAbs(b.goBin) {
		b.goBin = filepath.Join(root, b.goBin)
	}
	if !filepath.IsAbs(b.python) {
		b.python = filepath.Join(root, b.python)
	}
	if build {
		cmd := exec.Command("go", "build", "-o", b.goBin, "./cmd/gocelery")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/gocelery: %v\n%s", err, out)
		}
	}
	if profile {
		b.profBin = filepath.Join(root, ".build/gocelery-profworker")
		cmd := exec.Command("go", "build", "-o", b.profBin, "./cmd/gocelery-bench/profworker")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build profworker: %v\n%s", err, out)
		}
	}
	b.conn, err = amqp.Dial(strings.TrimSuffix(b.brokerURL, "/"))
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	opts, err := redis.ParseURL(b.redisURL)
	if err != nil {
		return err
	}
	opts.PoolSize = 32
	b.rdb = redis.NewClient(opts)
	if err := b.rdb.Ping(context.Background()).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	b.tmpl, err = b.captureTemplates()
	if err != nil {
		fmt.Fprintf(os.Stderr, "gocelery-bench: cannot capture messages from Python (%v); using golden templates\n", err)
		if b.tmpl, err = goldenTemplates(root); err != nil {
			return err
		}
	}
	b.rabbitPids = pidsByComm("beam.smp")
	b.redisPids = pidsByComm("redis-server")
	for _, n := range templateNames {
		b.logf("template %s", describeTemplate(b.tmpl[n]))
	}
	return nil
}

// forget deletes the result documents of ids: the bench removes only
// the keys it made (another run may share the db).
func (b *bench) forget(ids []string) {
	ctx := context.Background()
	for start := 0; start < len(ids); start += 1000 {
		end := min(start+1000, len(ids))
		keys := make([]string, 0, end-start)
		for _, id := range ids[start:end] {
			keys = append(keys, "celery-task-meta-"+id)
		}
		_ = b.rdb.Del(ctx, keys...).Err()
	}
}

// checkQuiet records Celery or gocelery workers (or other benches) on
// this machine that this bench did not start: their load disturbs the
// figures, and the report says so.
func (b *bench) checkQuiet() {
	for deadline := time.Now().Add(b.waitQuiet); time.Now().Before(deadline) && len(foreignWorkers()) > 0; {
		time.Sleep(200 * time.Millisecond)
	}
	if others := foreignWorkers(); len(others) > 0 {
		b.disturbed = append(b.disturbed, others...)
	}
}

// throughput runs a pre-published batch against each implementation,
// their runs interleaved.
func (b *bench) throughput(w, tmpl string, results bool) map[string][]runResult {
	set := &rowSet{name: w}
	for _, impl := range []string{"ceiling", "gocelery", "python"} {
		if !b.impls[impl] {
			continue
		}
		runs, n := b.runs, b.n
		if w == "W4" {
			n = b.w4N
		}
		if impl == "python" {
			runs, n = b.pyRuns, b.pyN
			switch w {
			case "W2":
				n = b.pyN * 3 / 2 // without results it runs ~2,300/s
			case "W4":
				n = b.w4PyN
			}
		}
		set.rows = append(set.rows, &row{label: impl, runs: runs, n: n, run: func(n, r int) runResult {
			return b.throughputRun(w, impl, tmpl, results, n, r, "")
		}})
	}
	b.runRows(set)
	out := map[string][]runResult{}
	for _, x := range set.rows {
		out[x.label] = x.res
	}
	return out
}

// rowSet is a group of throughput rows measured together: their runs are
// interleaved (run 1 of every row, then run 2, ...), so a slow minute on
// the shared machine touches all rows alike.
type rowSet struct {
	name, desc string
	rows       []*row
}

type row struct {
	label string
	runs  int
	n     int // tasks per run; raised when a run is shorter than -min-dur
	run   func(n, r int) runResult
	res   []runResult
	ref   int // index of the row this one is compared with (-1: none)
	ref2  int // a second comparison (-1: none)
}

// runRows measures every row of set. A valid run shorter than -min-dur
// does not count: the row's task count is raised so a run lasts about
// -min-dur, and the run is done again (at most twice).
func (b *bench) runRows(set *rowSet) {
	most := 0
	for _, x := range set.rows {
		most = max(most, x.runs)
	}
	for r := 0; r < most; r++ {
		for _, x := range set.rows {
			if r >= x.runs {
				continue
			}
			var res runResult
			for attempt := 0; ; attempt++ {
				res = x.run(x.n, r)
				b.logf("%s %s run %d: %.0f tasks/s, %d tasks in %v, rss %.1f MiB, cpu ms/1k tasks worker %.0f rabbitmq %.0f redis %.0f %s",
					set.name, x.label, r, res.rate, x.n, res.dur.Round(time.Millisecond), mib(res.peakRSS), res.cpuWorker, res.cpuRabbit, res.cpuRedis, res.invalid)
				if res.invalid != "" || res.dur >= b.minDur || attempt == 2 {
					break
				}
				x.n = int(float64(x.n) * 1.15 * b.minDur.Seconds() / res.dur.Seconds())
			}
			x.res = append(x.res, res)
		}
	}
}

func (b *bench) throughputRun(w, impl, tmpl string, results bool, n, run int, cpuprofile string) runResult {
	v := variant{impl: impl, w: w}
	conc := b.goC
	if w == "W4" {
		v.sleep, conc = 20*time.Millisecond, b.w4C
	}
	switch impl {
	case "ceiling":
		v.ceilPrefetch, v.ceilConc = max(b.ceilPrefetch, 4*conc), conc
	case "gocelery":
		v.goFlags = []string{"-c", fmt.Sprint(conc), "--prefetch-multiplier", fmt.Sprint(b.goPrefetchMult)}
		v.goWorkers = b.goWorkers
		if cpuprofile != "" {
			base := strings.TrimSuffix(cpuprofile, ".pprof")
			v.goFlags = append(v.goFlags, "--cpuprofile", cpuprofile,
				"--memprofile", base+".heap.pprof", "--trace", base+".trace")
			v.goBin, v.goWorkers = b.profBin, 1
		}
	case "python":
		v.pyPool, v.pyC, v.pyProcs = "prefork", 2, 1
		if w == "W4" {
			v.pyPool, v.pyC = "threads", b.w4PyC
		}
	}
	return b.runVariant(v, tmpl, results, n, run)
}

// variant is one way of running a throughput workload: which
// implementation, with which flags, how many processes, on which kind of
// queue.
type variant struct {
	impl, w string
	// gocelery: its flags (none: the defaults users run), processes
	// sharing the queue, and the binary (empty: -bin).
	goFlags   []string
	goWorkers int
	goBin     string
	// Python: pool, -c and processes sharing the queue.
	pyPool       string
	pyC, pyProcs int
	// ceiling: prefetch and, with sleep, concurrency.
	ceilPrefetch, ceilConc int
	sleep                  time.Duration
	qargs                  amqp.Table // queue arguments (quorum, priority)
	env                    []string   // worker environment (queue settings)
}

func (b *bench) runVariant(v variant, tmpl string, results bool, n, run int) runResult {
	b.checkQuiet()
	q := fmt.Sprintf("bench-%s-%s-%d-%s", strings.ToLower(v.w), v.impl, run, randSuffix())
	if err := b.declareQueueArgs(q, v.qargs); err != nil {
		return runResult{invalid: "declare: " + err.Error()}
	}
	defer b.deleteQueue(q)
	ids, err := b.publish(q, b.tmpl[tmpl], n)
	if err != nil {
		return runResult{invalid: "publish: " + err.Error()}
	}
	defer b.forget(ids)
	// Keys already in the db before the worker starts (another run's).
	base, _ := b.rdb.DBSize(context.Background()).Result()
	var c *ceiling
	var procs []*proc // the first is measured for liveness and logs
	switch v.impl {
	case "ceiling":
		c, err = b.startCeiling(q, results, v.sleep, v.ceilConc, v.ceilPrefetch)
	case "gocelery":
		saved := b.goBin
		if v.goBin != "" {
			b.goBin = v.goBin
		}
		for i := 0; i < max(v.goWorkers, 1) && err == nil; i++ {
			flags := v.goFlags
			if i > 0 {
				flags = append(slices.Clone(flags), "-n", fmt.Sprintf("bench%d@%%h", i))
			}
			var p *proc
			if p, err = b.startGoceleryEnv(q, v.env, flags...); err == nil {
				procs = append(procs, p)
			}
		}
		b.goBin = saved
	case "python":
		for i := 0; i < max(v.pyProcs, 1) && err == nil; i++ {
			var p *proc
			if p, err = b.startPythonEnv(q, v.pyPool, v.pyC, fmt.Sprintf("pybench%d@%%h", i), v.env); err == nil {
				procs = append(procs, p)
			}
		}
	}
	if err != nil {
		for _, p := range procs {
			p.stop(syscall.SIGTERM, 20*time.Second)
		}
		return runResult{invalid: "start: " + err.Error()}
	}
	var p *proc
	if len(procs) > 0 {
		p = procs[0]
	}
	var extra []*proc
	if len(procs) > 1 {
		extra = procs[1:]
	}
	res := b.wait(q, ids, base, results, c, p, extra...)
	// Let the tail of the prefetch window finish before stopping.
	time.Sleep(300 * time.Millisecond)
	if c != nil {
		c.stop()
		if e := c.errors.Load(); e > 0 && res.invalid == "" {
			res.invalid = fmt.Sprintf("ceiling: %d errors", e)
		}
		if le, _ := c.lastErr.Load().(string); le != "" {
			b.logf("ceiling: redis error (retried): %s", le)
			if res.invalid != "" {
				res.invalid += " (last redis error: " + le + ")"
			}
		}
	}
	for _, p := range procs {
		p.stop(syscall.SIGTERM, 20*time.Second)
		res.peakRSS += p.peakRSS.Load()
	}
	if p != nil && res.invalid != "" {
		b.logf("worker log: %s", p.log())
	}
	if res.invalid == "" {
		res.invalid = b.validate(q, ids, results)
	}
	return res
}

// wait measures one run: t0 is when the queue's ready count first drops
// below n (the worker started consuming); the end is when Redis holds n
// result documents (results), the ceiling counted n (no results), or the
// ready count reached 0 (no results, worker: the rate is then the ready
// count drained over the time, so the unacknowledged prefetch window that
// is still running is not counted as done).
func (b *bench) wait(q string, ids []string, base int64, results bool, c *ceiling, p *proc, extra ...*proc) runResult {
	n := len(ids)
	var lastCount time.Time
	probe, err := b.newProbe()
	if err != nil {
		return runResult{invalid: err.Error()}
	}
	defer probe.close()
	ctx := context.Background()
	var t0 time.Time
	ready0 := 0
	lastChange := time.Now()
	lastReady, lastDone := -1, int64(-1)
	var lastProbe time.Time
	var cpu0 cpuSnap
	wpids := []int{os.Getpid()}
	if p != nil {
		wpids = []int{p.cmd.Process.Pid}
		for _, e := range extra {
			wpids = append(wpids, e.cmd.Process.Pid)
		}
	}
	for {
		now := time.Now()
		// The ready count is probed every 1ms until the worker starts, then
		// only when needed, so the probing does not compete for the CPUs.
		ready := lastReady
		if t0.IsZero() || (!results && c == nil) || now.Sub(lastProbe) > 100*time.Millisecond {
			r, err := b.depth(probe, q)
			if err != nil {
				return runResult{invalid: "queue probe: " + err.Error()}
			}
			ready, lastProbe = r, now
		}
		if t0.IsZero() && ready < n {
			t0, ready0 = now, ready
			cpu0 = b.snap(wpids...)
		}
		var done int64
		finished := false
		switch {
		case results:
			done, _ = b.rdb.DBSize(ctx).Result()
			done -= base
			// DBSIZE is the cheap signal; our own ids are then counted, so
			// keys someone else writes to this db do not end a run early.
			if done >= int64(n) && now.Sub(lastCount) > 20*time.Millisecond {
				lastCount = now
				ours, _ := b.countStored(ids)
				finished = ours == n
			}
		case c != nil:
			done = c.done.Load()
			finished = done >= int64(n)
		default:
			finished = ready == 0
		}
		if finished && !t0.IsZero() {
			d := now.Sub(t0)
			rate := float64(n) / d.Seconds()
			if !results && c == nil {
				rate = float64(ready0) / d.Seconds()
			}
			cpu1 := b.snap(wpids...)
			per := func(t int64) float64 { return float64(t) * 10 / float64(n) * 1000 } // ticks of 10ms -> ms per 1000 tasks
			return runResult{rate: rate, n: n, dur: d, cpuWorker: per(cpu1.worker - cpu0.worker),
				cpuRabbit: per(cpu1.rabbit - cpu0.rabbit), cpuRedis: per(cpu1.redis - cpu0.redis)}
		}
		if ready != lastReady || done != lastDone {
			lastReady, lastDone, lastChange = ready, done, now
		}
		limit := 20 * time.Second
		if t0.IsZero() {
			limit = 60 * time.Second // worker start-up
		}
		if now.Sub(lastChange) > limit {
			return runResult{invalid: fmt.Sprintf("no progress for %v (ready %d, done %d of %d)", limit, ready, done, n)}
		}
		if p != nil && !p.alive() {
			return runResult{invalid: "worker exited: " + lastLines(p.log(), 5)}
		}
		if t0.IsZero() {
			time.Sleep(time.Millisecond)
		} else {
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// depth is the number of ready messages in q: RabbitMQ's ready count, or
// the list's length on the Redis broker (R1).
func (b *bench) depth(p *depthProbe, q string) (int, error) {
	if b.listDepth != nil {
		n, err := b.listDepth.LLen(context.Background(), q).Result()
		return int(n), err
	}
	r, _, err := p.get(q)
	return r, err
}

// validate: every task id has a SUCCESS document (results), or nothing
// is left in the queue and nothing but SUCCESS was stored (ignore_result).
func (b *bench) validate(q string, ids []string, results bool) string {
	ctx := context.Background()
	probe, err := b.newProbe()
	if err != nil {
		return err.Error()
	}
	ready, err := b.depth(probe, q)
	probe.close()
	if err != nil {
		return "queue probe: " + err.Error()
	}
	if ready != 0 {
		return fmt.Sprintf("%d messages left in the queue", ready)
	}
	if !results {
		// ignore_result: nothing but SUCCESS may be stored for our ids
		// (a FAILURE is stored even with ignore_result).
		stored, first := b.countStored(ids)
		if first != "" && !strings.Contains(first, `"SUCCESS"`) {
			return fmt.Sprintf("%d documents stored, e.g. %.200s", stored, first)
		}
		return ""
	}
	bad := 0
	first := ""
	for start := 0; start < len(ids); start += 1000 {
		end := min(start+1000, len(ids))
		keys := make([]string, 0, end-start)
		for _, id := range ids[start:end] {
			keys = append(keys, "celery-task-meta-"+id)
		}
		vals, err := b.rdb.MGet(ctx, keys...).Result()
		if err != nil {
			return "mget: " + err.Error()
		}
		for i, v := range vals {
			s, _ := v.(string)
			var doc struct {
				Status string `json:"status"`
				TaskID string `json:"task_id"`
			}
			if s == "" || json.Unmarshal([]byte(s), &doc) != nil || doc.Status != "SUCCESS" || doc.TaskID != ids[start+i] {
				bad++
				if first == "" {
					first = fmt.Sprintf("%s: %.200q", keys[i], s)
				}
			}
		}
	}
	if bad > 0 {
		return fmt.Sprintf("%d of %d tasks without SUCCESS (first %s)", bad, len(ids), first)
	}
	return ""
}

// rttResult is W3 for one implementation: Go and Python client round trips.
type rttResult struct {
	goLat, pyLat lat
	peakRSS      int64
	invalid      string
}

func (b *bench) roundTrips() map[string]rttResult {
	out := map[string]rttResult{}
	for _, impl := range []string{"ceiling", "gocelery", "python"} {
		if !b.impls[impl] {
			continue
		}
		b.checkQuiet()
		q := fmt.Sprintf("bench-w3-%s-%s", impl, randSuffix())
		if err := b.declareQueue(q); err != nil {
			out[impl] = rttResult{invalid: err.Error()}
			continue
		}
		var c *ceiling
		var p *proc
		var err error
		switch impl {
		case "ceiling":
			c, err = b.startCeiling(q, true, 0, 1, b.ceilPrefetch)
		case "gocelery":
			p, err = b.startGocelery(q, b.goC, "--prefetch-multiplier", fmt.Sprint(b.goPrefetchMult))
		case "python":
			p, err = b.startPython(q, "prefork", 2)
		}
		if err != nil {
			out[impl] = rttResult{invalid: err.Error()}
			b.deleteQueue(q)
			continue
		}
		r := rttResult{}
		r.goLat = b.goRTT(q, b.tmpl["noop"], b.w3N)
		r.pyLat = b.pythonRTT(q, b.w3N)
		b.logf("W3 %s: go %+v py %+v", impl, r.goLat, r.pyLat)
		if c != nil {
			c.stop()
		}
		if p != nil {
			p.stop(syscall.SIGTERM, 20*time.Second)
			r.peakRSS = p.peakRSS.Load()
		}
		if r.goLat.Err != "" {
			r.invalid = "go client: " + r.goLat.Err
		} else if r.pyLat.Err != "" {
			r.invalid = "python client: " + r.pyLat.Err
		}
		b.deleteQueue(q)
		out[impl] = r
	}
	return out
}

// memResult is W5 for one implementation.
type memResult struct {
	idle, held int64
	heldN      int
	deliverDur time.Duration
	invalid    string
}

func (b *bench) memory() map[string]memResult {
	out := map[string]memResult{}
	for _, impl := range []string{"gocelery", "python"} {
		if !b.impls[impl] {
			continue
		}
		out[impl] = b.memoryRun(impl)
		b.logf("W5 %s: idle %.1f MiB held %.1f MiB (%v) %s", impl, mib(out[impl].idle), mib(out[impl].held), out[impl].deliverDur, out[impl].invalid)
	}
	return out
}

func (b *bench) memoryRun(impl string) memResult {
	b.checkQuiet()
	q := fmt.Sprintf("bench-w5-%s-%s", impl, randSuffix())
	if err := b.declareQueue(q); err != nil {
		return memResult{invalid: err.Error()}
	}
	defer b.deleteQueue(q)
	var p *proc
	var err error
	if impl == "gocelery" {
		p, err = b.startGocelery(q, 2)
	} else {
		p, err = b.startPython(q, "prefork", 2)
	}
	if err != nil {
		return memResult{invalid: err.Error()}
	}
	defer p.stop(syscall.SIGQUIT, 10*time.Second)
	probe, err := b.newProbe()
	if err != nil {
		return memResult{invalid: err.Error()}
	}
	defer probe.close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, consumers, err := probe.get(q)
		if err != nil {
			return memResult{invalid: err.Error()}
		}
		if consumers > 0 {
			break
		}
		if time.Now().After(deadline) || !p.alive() {
			return memResult{invalid: "worker did not start consuming: " + lastLines(p.log(), 5)}
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond)
	r := memResult{idle: p.lastRSS.Load()}
	p.resetPeak()
	start := time.Now()
	heldIDs, err := b.publish(q, b.tmpl["noop_countdown"], b.w5N)
	defer b.forget(heldIDs)
	if err != nil {
		r.invalid = "publish: " + err.Error()
		return r
	}
	// Python Celery takes the held messages in slowly (it raises its
	// prefetch count one message at a time): it gets a fixed time, and
	// what it holds by then is reported.
	wait := 90 * time.Second
	if impl == "python" {
		wait = b.w5PyWait
	}
	deadline = time.Now().Add(wait)
	for {
		ready, _, err := probe.get(q)
		if err != nil {
			r.invalid = err.Error()
			return r
		}
		r.heldN = b.w5N - ready
		if ready == 0 {
			break
		}
		if !p.alive() {
			r.invalid = "worker exited: " + lastLines(p.log(), 5)
			return r
		}
		if time.Now().After(deadline) {
			if impl != "python" {
				r.invalid = fmt.Sprintf("%d of %d countdown tasks still not delivered", ready, b.w5N)
			}
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.deliverDur = time.Since(start)
	time.Sleep(1 * time.Second)
	r.held = p.peakRSS.Load()
	if stored, first := b.countStored(heldIDs); stored != 0 {
		r.invalid = fmt.Sprintf("%d results stored for tasks due in 10 minutes (%.200s)", stored, first)
	}
	return r
}

// profileRuns runs W1 and W2 once more against the in-process profiled
// worker; its CPU profiles say where the worker's time goes.
func (b *bench) profileRuns(dir string) {
	_ = os.MkdirAll(dir, 0o755)
	for _, x := range []struct {
		w, tmpl string
		results bool
	}{{"W1", "noop", true}, {"W2", "noop_ignore", false}} {
		f, _ := filepath.Abs(filepath.Join(dir, strings.ToLower(x.w)+".pprof"))
		res := b.throughputRun(x.w, "gocelery", x.tmpl, x.results, b.n, 0, f)
		fmt.Fprintf(os.Stderr, "profiled %s: %.0f tasks/s %s -> %s\n", x.w, res.rate, res.invalid, f)
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// countStored counts the result documents stored for ids and returns the
// first one found.
func (b *bench) countStored(ids []string) (int, string) {
	ctx := context.Background()
	n, first := 0, ""
	for start := 0; start < len(ids); start += 1000 {
		end := min(start+1000, len(ids))
		keys := make([]string, 0, end-start)
		for _, id := range ids[start:end] {
			keys = append(keys, "celery-task-meta-"+id)
		}
		vals, err := b.rdb.MGet(ctx, keys...).Result()
		if err != nil {
			return n, "mget: " + err.Error()
		}
		for _, v := range vals {
			if s, ok := v.(string); ok {
				n++
				if first == "" {
					first = s
				}
			}
		}
	}
	return n, first
}
