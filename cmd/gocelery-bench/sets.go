package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// The row sets beside W1..W5, all on W1's message (noop with results):
//
//	D1   gocelery at its default flags (-c = CPUs, prefetch multiplier 4)
//	     beside the ceiling with the same prefetch window, and with
//	     --task-acks-late (acked after the result is stored, as the
//	     ceiling acks): the price of acking before the task starts
//	D64  the same with -c 64 (multiplier 4: a window of 256) beside the
//	     ceiling at -d64-ceiling-prefetch (500)
//	S1   scale-out: 1, 2 and 4 gocelery processes (default flags) on one
//	     queue, and 1, 2 and 4 Python Celery processes (prefork -c 2)
//	Q1   quorum and priority queues: ceiling (default window), gocelery
//	     (default flags) and Python Celery, each queue declared as the
//	     workers declare it from CELERY_ settings
func (b *bench) rowSets(names []string) {
	window := 4 * runtime.NumCPU()
	v := func(impl string) variant { return variant{impl: impl, w: "W1"} }
	ceilingRow := func(label string, prefetch, n int, mod func(*variant)) *row {
		x := v("ceiling")
		x.ceilPrefetch, x.ceilConc = prefetch, 1
		if mod != nil {
			mod(&x)
		}
		return b.variantRow(label, x, b.runs, n)
	}
	goRow := func(label string, n int, mod func(*variant), flags ...string) *row {
		x := v("gocelery")
		x.goFlags = flags
		if mod != nil {
			mod(&x)
		}
		return b.variantRow(label, x, b.runs, n)
	}
	pyRow := func(label string, procs int, mod func(*variant)) *row {
		x := v("python")
		x.pyPool, x.pyC, x.pyProcs = "prefork", 2, procs
		if mod != nil {
			mod(&x)
		}
		return b.variantRow(label, x, b.pyRuns, b.pyN)
	}
	for _, name := range names {
		var set *rowSet
		switch name {
		case "D1":
			set = &rowSet{name: "D1", desc: fmt.Sprintf("W1 at default flags (window %d)", window), rows: []*row{
				ceilingRow(fmt.Sprintf("ceiling, prefetch %d", window), window, b.dN*5/2, nil),
				goRow("gocelery worker -Q q (no tuning flags)", b.dN, nil),
				goRow("gocelery --task-acks-late", b.dN*2, nil, "--task-acks-late"),
			}}
			set.rows[1].ref, set.rows[2].ref = 0, 0
		case "D64":
			set = &rowSet{name: "D64", desc: "W1 at -c 64 (window 256)", rows: []*row{
				ceilingRow(fmt.Sprintf("ceiling, prefetch %d", b.d64CeilPrefetch), b.d64CeilPrefetch, b.n, nil),
				goRow("gocelery -c 64", b.n*9/10, nil, "-c", "64"),
				goRow("gocelery -c 64 --task-acks-late", b.n*9/10, nil, "-c", "64", "--task-acks-late"),
			}}
			set.rows[1].ref, set.rows[2].ref = 0, 0
		case "S1":
			set = &rowSet{name: "S1", desc: "W1, workers sharing one queue"}
			for i, k := range []int{1, 2, 4} {
				r := goRow(fmt.Sprintf("gocelery x%d (default flags)", k), b.dN*6/5, func(x *variant) { x.goWorkers = k })
				if i > 0 {
					r.ref = 0
				}
				set.rows = append(set.rows, r)
			}
			for i, k := range []int{1, 2, 4} {
				r := pyRow(fmt.Sprintf("Python x%d (prefork -c 2)", k), k, nil)
				if i > 0 {
					r.ref = 3
				}
				set.rows = append(set.rows, r)
			}
		case "Q1":
			set = &rowSet{name: "Q1", desc: "W1 on quorum and priority queues (default flags)"}
			for _, qt := range []struct {
				name string
				args amqp.Table
				env  []string
			}{
				{"quorum", amqp.Table{"x-queue-type": "quorum"}, []string{"CELERY_TASK_CREATE_MISSING_QUEUE_TYPE=quorum"}},
				{"priority", amqp.Table{"x-max-priority": int32(10)}, []string{"CELERY_TASK_QUEUE_MAX_PRIORITY=10"}},
			} {
				mod := func(x *variant) { x.qargs, x.env = qt.args, qt.env }
				first := len(set.rows)
				set.rows = append(set.rows,
					ceilingRow(fmt.Sprintf("%s: ceiling, prefetch %d", qt.name, window), window, b.dN*2, mod),
					goRow(fmt.Sprintf("%s: gocelery (default flags)", qt.name), b.dN, mod),
					pyRow(fmt.Sprintf("%s: Python (prefork -c 2)", qt.name), 1, mod))
				set.rows[first+1].ref, set.rows[first+1].ref2 = first, first+2
			}
		default:
			continue
		}
		b.runRows(set)
		b.sets = append(b.sets, set)
	}
}

func (b *bench) variantRow(label string, v variant, runs, n int) *row {
	return &row{label: label, runs: runs, n: n, ref: -1, ref2: -1, run: func(n, r int) runResult {
		return b.runVariant(v, "noop", true, n, r)
	}}
}

// printSets writes the row sets' table and returns the targets they carry.
func (r *report) printSets(w io.Writer) []target {
	b := r.b
	if len(b.sets) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| set | row | tasks/run | tasks/s median [min-max] (runs, shortest) | peak RSS MiB | CPU ms per 1k tasks: worker / RabbitMQ / Redis | ratio |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	var targets []target
	for _, set := range b.sets {
		aggs := make([]agg, len(set.rows))
		for i, x := range set.rows {
			aggs[i] = aggregate(x.res)
		}
		for i, x := range set.rows {
			a := aggs[i]
			rate := "INVALID: " + a.invalid
			cpu := "-"
			if a.ok {
				shortest := time.Duration(0)
				for _, res := range x.res {
					if shortest == 0 || res.dur < shortest {
						shortest = res.dur
					}
				}
				rate = fmt.Sprintf("%.0f [%.0f-%.0f] (%d, %.1fs)", a.med, a.lo, a.hi, a.runs, shortest.Seconds())
				cpu = fmt.Sprintf("%.0f / %.0f / %.0f", a.cpu[0], a.cpu[1], a.cpu[2])
			}
			var ratios []string
			for _, ref := range []int{x.ref, x.ref2} {
				if ref >= 0 && a.ok && aggs[ref].ok {
					ratios = append(ratios, fmt.Sprintf("%s of %s", ratio(a.med, aggs[ref].med), set.rows[ref].label))
				}
			}
			rss := rssCell(a.rss)
			if strings.HasPrefix(x.label, "ceiling") || strings.Contains(x.label, ": ceiling") {
				rss = "(in bench)"
			}
			fmt.Fprintf(w, "| %s %s | %s | %d | %s | %s | %s | %s |\n", set.name, set.desc, x.label, x.n, rate, rss, cpu, strings.Join(ratios, "; "))
		}
		switch set.name {
		case "D1", "D64":
			want := map[string]float64{"D1": 0.85, "D64": 0.9}[set.name]
			c, g := aggs[0], aggs[1]
			ok := c.ok && g.ok
			targets = append(targets,
				target{name: fmt.Sprintf("%s %s >= %.2fx %s", set.name, set.rows[1].label, want, set.rows[0].label), want: fmt.Sprintf(">= %.2fx", want),
					got: ratio(g.med, c.med), known: ok, pass: ok && g.med >= want*c.med},
				target{name: fmt.Sprintf("%s worker CPU per task <= 1.2x the ceiling's", set.name), want: "<= 1.20x",
					got: ratio(g.cpu[0], c.cpu[0]), known: ok, pass: ok && g.cpu[0] <= 1.2*c.cpu[0]},
				target{name: fmt.Sprintf("%s RabbitMQ and Redis CPU per task <= the ceiling's", set.name), want: "<= 1.00x",
					got: fmt.Sprintf("RabbitMQ %s, Redis %s", ratio(g.cpu[1], c.cpu[1]), ratio(g.cpu[2], c.cpu[2])), known: ok,
					pass: ok && g.cpu[1] <= c.cpu[1] && g.cpu[2] <= c.cpu[2]})
		}
	}
	return targets
}
