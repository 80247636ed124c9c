package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"
)

type report struct {
	b          *bench
	w1, w2, w4 map[string][]runResult
	w3         map[string]rttResult
	w5         map[string]memResult
	p1         *publishResult
	r1         map[string][]runResult
}

// agg summarizes the runs of one implementation: median and range of the
// rate, or INVALID when any run lost or failed a task.
type agg struct {
	ok          bool
	med, lo, hi float64
	rss         int64
	n, runs     int
	invalid     string
	present     bool
	cpu         [3]float64 // median CPU ms per 1000 tasks: worker, RabbitMQ, Redis
}

func aggregate(rs []runResult) agg {
	a := agg{present: len(rs) > 0, runs: len(rs)}
	if !a.present {
		return a
	}
	var rates []float64
	for _, r := range rs {
		if r.invalid != "" {
			a.invalid = r.invalid
			continue
		}
		rates = append(rates, r.rate)
		a.n = r.n
		a.rss = max(a.rss, r.peakRSS)
	}
	if a.invalid != "" || len(rates) == 0 {
		return a
	}
	a.ok = true
	a.med = median(rates)
	var cw, cr, cd []float64
	for _, r := range rs {
		cw, cr, cd = append(cw, r.cpuWorker), append(cr, r.cpuRabbit), append(cd, r.cpuRedis)
	}
	a.cpu = [3]float64{median(cw), median(cr), median(cd)}
	a.lo, a.hi = rates[0], rates[0]
	for _, x := range rates {
		a.lo, a.hi = min(a.lo, x), max(a.hi, x)
	}
	return a
}

func ratio(x, y float64) string {
	if x <= 0 || y <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", x/y)
}

func rssCell(v int64) string {
	if v <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f", mib(v))
}

type target struct {
	name, want, got string
	pass, known     bool
}

func (r *report) print(w io.Writer, took time.Duration) {
	b := r.b
	fmt.Fprintf(w, "\n## gocelery-bench results (%d CPUs, %s, took %s)\n\n", runtime.NumCPU(), runtime.Version(), took.Round(time.Second))
	if len(b.disturbed) > 0 {
		seen := map[string]bool{}
		fmt.Fprintln(w, "**WARNING: other Celery/gocelery workers or benches ran on this machine during the bench; the figures are disturbed:**")
		for _, d := range b.disturbed {
			if !seen[d] {
				seen[d] = true
				fmt.Fprintf(w, "- %s\n", d)
			}
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "Messages: %s. gocelery -c %d --prefetch-multiplier %d (W4: -c %d); Python prefork -c 2 (W4: threads -c %d); ceiling prefetch %d.\n\n",
		b.tmpl["noop"].from, b.goC, b.goPrefetchMult, b.w4C, b.w4PyC, b.ceilPrefetch)
	fmt.Fprintln(w, "| workload | implementation | tasks | tasks/s median [min-max] | latency p50 / p99 / max ms | peak RSS MiB | CPU ms per 1k tasks: worker / RabbitMQ / Redis | gocelery/ceiling | gocelery/Python |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	var targets []target
	ceilName := "ceiling (raw amqp091+go-redis)"
	tp := func(name string, m map[string][]runResult, desc string) (c, g, p agg) {
		if m == nil {
			return
		}
		c, g, p = aggregate(m["ceiling"]), aggregate(m["gocelery"]), aggregate(m["python"])
		for _, x := range []struct {
			impl string
			a    agg
		}{{ceilName, c}, {"gocelery", g}, {"Python Celery 5.7", p}} {
			if !x.a.present {
				continue
			}
			rate := "INVALID: " + x.a.invalid
			if x.a.ok {
				rate = fmt.Sprintf("%.0f [%.0f-%.0f] (%d runs)", x.a.med, x.a.lo, x.a.hi, x.a.runs)
			}
			rc, rp := "", ""
			if strings.HasPrefix(x.impl, "gocelery") && g.ok {
				rc, rp = ratio(g.med, c.med), ratio(g.med, p.med)
			}
			rss := rssCell(x.a.rss)
			if strings.HasPrefix(x.impl, "ceiling") {
				rss = "(in bench)"
			}
			cpu := "-"
			if x.a.ok {
				cpu = fmt.Sprintf("%.0f / %.0f / %.0f", x.a.cpu[0], x.a.cpu[1], x.a.cpu[2])
			}
			fmt.Fprintf(w, "| %s %s | %s | %d | %s | - | %s | %s | %s | %s |\n", name, desc, x.impl, x.a.n, rate, rss, cpu, rc, rp)
		}
		return
	}
	if r.w1 != nil {
		c, g, p := tp("W1", r.w1, "noop + results")
		targets = append(targets,
			target{name: "W1 gocelery >= 0.85x ceiling", want: ">= 0.85x", got: ratio(g.med, c.med), known: g.ok && c.ok, pass: g.ok && c.ok && g.med >= 0.85*c.med},
			target{name: "W1 gocelery >= 8x Python", want: ">= 8x", got: ratio(g.med, p.med), known: g.ok && p.ok, pass: g.ok && p.ok && g.med >= 8*p.med})
	}
	if r.r1 != nil {
		ceilName = "ceiling (raw go-redis BRPOP)"
		c, g, p := tp("R1", r.r1, "noop + results, Redis broker")
		ceilName = "ceiling (raw amqp091+go-redis)"
		targets = append(targets,
			target{name: "R1 gocelery >= 0.8x Redis ceiling", want: ">= 0.8x", got: ratio(g.med, c.med), known: g.ok && c.ok, pass: g.ok && c.ok && g.med >= 0.8*c.med},
			target{name: "R1 gocelery >= 10x Python (Redis broker)", want: ">= 10x", got: ratio(g.med, p.med), known: g.ok && p.ok, pass: g.ok && p.ok && g.med >= 10*p.med})
	}
	if r.w2 != nil {
		c, g, _ := tp("W2", r.w2, "noop ignore_result")
		targets = append(targets,
			target{name: "W2 gocelery >= 0.85x bare ceiling", want: ">= 0.85x", got: ratio(g.med, c.med), known: g.ok && c.ok, pass: g.ok && c.ok && g.med >= 0.85*c.med})
	}
	if r.w3 != nil {
		for _, impl := range []string{"ceiling", "gocelery", "python"} {
			x, ok := r.w3[impl]
			if !ok {
				continue
			}
			name := map[string]string{"ceiling": "ceiling (raw amqp091+go-redis)", "gocelery": "gocelery", "python": "Python Celery 5.7"}[impl]
			rss := rssCell(x.peakRSS)
			if impl == "ceiling" {
				rss = "(in bench)"
			}
			if x.invalid != "" {
				fmt.Fprintf(w, "| W3 round trip | %s | %d | INVALID: %s | - | %s | | | |\n", name, b.w3N, x.invalid, rss)
				continue
			}
			rc, rp := "", ""
			if impl == "gocelery" {
				rc = "Go client " + ratio(x.goLat.P50, r.w3["ceiling"].goLat.P50) + ", Py client " + ratio(x.pyLat.P50, r.w3["ceiling"].pyLat.P50)
				rp = "Go client " + ratio(x.goLat.P50, r.w3["python"].goLat.P50) + ", Py client " + ratio(x.pyLat.P50, r.w3["python"].pyLat.P50)
			}
			fmt.Fprintf(w, "| W3 round trip (Go client) | %s | %d | %.0f (1/mean) | %.2f / %.2f / %.2f | %s | - | %s | %s |\n",
				name, x.goLat.N, 1000/x.goLat.Mean, x.goLat.P50, x.goLat.P99, x.goLat.Max, rss, rc, rp)
			fmt.Fprintf(w, "| W3 round trip (Python client) | %s | %d | %.0f (1/mean) | %.2f / %.2f / %.2f | | | | |\n",
				name, x.pyLat.N, 1000/x.pyLat.Mean, x.pyLat.P50, x.pyLat.P99, x.pyLat.Max)
		}
		c, g, p := r.w3["ceiling"], r.w3["gocelery"], r.w3["python"]
		okCG := c.invalid == "" && g.invalid == "" && c.goLat.P50 > 0 && g.goLat.P50 > 0
		okGP := g.invalid == "" && p.invalid == "" && p.goLat.P50 > 0 && g.goLat.P50 > 0
		targets = append(targets,
			target{name: "W3 gocelery p50 <= 1.5x ceiling p50 (Go client)", want: "<= 1.5x", got: ratio(g.goLat.P50, c.goLat.P50), known: okCG, pass: okCG && g.goLat.P50 <= 1.5*c.goLat.P50},
			target{name: "W3 gocelery p50 below Python's (both clients)", want: "< 1.00x", got: "Go client " + ratio(g.goLat.P50, p.goLat.P50) + ", Py client " + ratio(g.pyLat.P50, p.pyLat.P50), known: okGP,
				pass: okGP && g.goLat.P50 < p.goLat.P50 && g.pyLat.P50 < p.pyLat.P50})
	}
	if r.w4 != nil {
		c, g, p := tp("W4", r.w4, "sleep(0.02) + results")
		ideal := float64(b.w4C) / 0.02
		ceil1 := aggregate(r.w1["ceiling"])
		goal := ideal
		if ceil1.ok && ceil1.med < goal {
			goal = ceil1.med
		}
		_ = c
		targets = append(targets,
			target{name: fmt.Sprintf("W4 gocelery >= 0.9x min(%d/20ms=%.0f, W1 ceiling) = %.0f/s", b.w4C, ideal, 0.9*goal), want: fmt.Sprintf(">= %.0f/s", 0.9*goal),
				got: fmt.Sprintf("%.0f/s (%.2fx of min)", g.med, g.med/goal), known: g.ok, pass: g.ok && g.med >= 0.9*goal})
		if p.ok {
			fmt.Fprintf(w, "| W4 | (Python threads -c %d ideal %d/20ms = %.0f/s: reached %.2fx) | | | | | | | |\n", b.w4PyC, b.w4PyC, float64(b.w4PyC)/0.02, p.med/(float64(b.w4PyC)/0.02))
		}
	}
	if r.w5 != nil {
		for _, impl := range []string{"gocelery", "python"} {
			x, ok := r.w5[impl]
			if !ok {
				continue
			}
			name := map[string]string{"gocelery": "gocelery -c 2", "python": "Python Celery 5.7 prefork -c 2"}[impl]
			if x.invalid != "" {
				fmt.Fprintf(w, "| W5 memory | %s | %d | INVALID: %s | | idle %s / held %s | | | |\n", name, b.w5N, x.invalid, rssCell(x.idle), rssCell(x.held))
				continue
			}
			fmt.Fprintf(w, "| W5 memory (idle / countdown held) | %s | %d | %d held after %.1fs | - | %s / %s | | | |\n",
				name, b.w5N, x.heldN, x.deliverDur.Seconds(), rssCell(x.idle), rssCell(x.held))
		}
		g := r.w5["gocelery"]
		ok := g.invalid == "" && g.idle > 0
		targets = append(targets,
			target{name: "W5 gocelery idle RSS <= 20 MiB", want: "<= 20 MiB", got: fmt.Sprintf("%.1f MiB", mib(g.idle)), known: ok, pass: ok && mib(g.idle) <= 20},
			target{name: fmt.Sprintf("W5 gocelery RSS with %d held <= 64 MiB", b.w5N), want: "<= 64 MiB", got: fmt.Sprintf("%.1f MiB", mib(g.held)), known: ok, pass: ok && mib(g.held) <= 64})
	}
	targets = append(targets, r.printSets(w)...)
	if r.p1 != nil {
		targets = append(targets, r.printP1(w)...)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| target | wanted | got | result |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, t := range targets {
		res := "MISS"
		if t.pass {
			res = "PASS"
		} else if !t.known {
			res = "MISS (no valid measurement)"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", t.name, t.want, t.got, res)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Notes: tasks/s is measured from the first delivery (queue ready count drops) to the last SUCCESS document in Redis (DBSIZE as the trigger, then MGET of our own ids);")
	fmt.Fprintln(w, "for W2 (ignore_result) the worker rate is the ready count drained over that time, the ceiling's is its own ack count.")
	fmt.Fprintln(w, "Every run is validated: all task ids SUCCESS in Redis (W1, W4), queue empty after the worker stopped and nothing but SUCCESS stored (W2).")
	fmt.Fprintf(w, "Python W1/W2 runs use %d tasks (-py-n) to keep the whole bench within minutes.\n", b.pyN)
	fmt.Fprintln(w, "CPU ms per 1k tasks: utime+stime over the measured interval of the worker's process tree (the bench process for the ceiling), RabbitMQ (beam.smp) and redis-server.")
	if r.p1 != nil {
		fmt.Fprintln(w, "P1: publish rate after a warm-up of 200, nothing consuming; valid when the queue holds every message. client.SendTask returns after the broker's confirm")
		fmt.Fprintln(w, "(a persistent message on a durable queue: RabbitMQ confirms once it is on disk); Python's send_task does not wait for one unless confirm_publish is set.")
	}
}

// printP1 prints the publish rates (their own table: P1 has no worker)
// and returns the P1 target: the Go client (one goroutine, a confirm per
// message) at least 10x Python's send_task loop with Celery's defaults.
func (r *report) printP1(w io.Writer) []target {
	rows := r.p1.rows
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| P1 publish gocelery.noop | tasks | tasks/s | vs Python send_task (defaults) |")
	fmt.Fprintln(w, "|---|---|---|---|")
	var py float64
	for _, x := range rows {
		if x.invalid == "" && strings.Contains(x.label, "defaults") {
			py = x.rate
		}
	}
	for _, x := range rows {
		rate := "INVALID: " + x.invalid
		if x.invalid == "" {
			rate = fmt.Sprintf("%.0f", x.rate)
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s |\n", x.label, x.n, rate, ratio(x.rate, py))
	}
	var goSeq, goPar float64
	okSeq, okPar := false, false
	for _, x := range rows {
		switch {
		case strings.HasPrefix(x.label, "Go") && strings.Contains(x.label, " 1 goroutine"):
			goSeq, okSeq = x.rate, x.invalid == ""
		case strings.HasPrefix(x.label, "Go"):
			goPar, okPar = x.rate, x.invalid == ""
		}
	}
	return []target{
		{name: "P1 Go client (1 goroutine) >= 10x Python send_task", want: ">= 10x", got: ratio(goSeq, py),
			known: okSeq && py > 0, pass: okSeq && py > 0 && goSeq >= 10*py},
		{name: fmt.Sprintf("P1 Go client (%d goroutines) >= 10x Python send_task", r.b.p1Par), want: ">= 10x", got: ratio(goPar, py),
			known: okPar && py > 0, pass: okPar && py > 0 && goPar >= 10*py},
	}
}
