package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/client"
	"github.com/celeryworker/gocelery/protocol"
)

// resultFlags are `celery result`'s options, plus waiting and JSON.
type resultFlags struct {
	conn      connFlags
	task      string
	wait      bool
	timeout   time.Duration
	json      bool
	traceback bool
}

func resultFlagSet(name string, f *resultFlags) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name+" result", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.SortFlags = false
	fs.BoolVar(&f.wait, "wait", false, "wait until the task is finished, showing its progress")
	fs.Var(&secondsValue{&f.timeout, false}, "timeout", "with --wait: give up after this many seconds (exit 3); 0 = wait forever")
	fs.BoolVar(&f.json, "json", false, "print the result document as JSON (with --wait, one line per state)")
	fs.BoolVar(&f.traceback, "traceback", false, "print the stored traceback of a failure instead of the exception line")
	fs.StringVarP(&f.task, "task", "t", "", "accepted for 'celery result' command lines; the backend needs no task name")
	fs.StringVarP(&f.conn.backend, "result-backend", "", "", "result backend URL (env CELERY_RESULT_BACKEND; default "+defaultBackend+")")
	// Accepted so one set of options fits every command.
	fs.StringVarP(&f.conn.broker, "broker", "b", "", "accepted; results are read from the backend only")
	return fs
}

func (p Program) resultUsage() string {
	var b strings.Builder
	fmt.Fprintf(&b, `usage: %[1]s [global options] result TASK_ID [flags]

Prints a task's result from the Redis result backend, whoever sent the task
and whichever worker ran it:

  SUCCESS            the return value (a string as is, anything else as JSON)
  FAILURE, REVOKED   the Python exception, e.g. "ValueError: boom"
  not finished       the state, and its meta when stored (e.g. PROGRESS
                     {"current": 3, "total": 10})

With --wait it waits until the task is finished (the Redis channel, no
polling) and shows each state stored meanwhile: a progress bar for meta
with "current" and "total" when stdout is a terminal, else one line per
state.

exit status: 0 SUCCESS; 1 FAILURE or REVOKED, or the backend cannot be used;
2 usage; 3 not finished (without --wait, or when --timeout passed).

flags:
`, p.Name)
	b.WriteString(resultFlagSet(p.Name, &resultFlags{}).FlagUsages())
	return b.String()
}

func parseResult(name string, args []string) (*resultFlags, string, error) {
	f := &resultFlags{}
	fs := resultFlagSet(name, f)
	if err := fs.Parse(args); err != nil {
		return nil, "", err
	}
	switch {
	case fs.NArg() == 0:
		return nil, "", usagef("missing the TASK_ID")
	case fs.NArg() > 1:
		return nil, "", usagef("unexpected argument %q", fs.Arg(1))
	case !f.wait && fs.Changed("timeout"):
		return nil, "", usagef("--timeout goes with --wait")
	}
	return f, fs.Arg(0), nil
}

func (p Program) runResult(ctx context.Context, g *globals, args []string, stdout, stderr io.Writer) int {
	r := p.newCmdRun("result", g, stdout, stderr)
	f, id, err := parseResult(p.Name, args)
	if errors.Is(err, pflag.ErrHelp) {
		fmt.Fprint(stdout, p.resultUsage())
		return 0
	}
	if err != nil {
		return r.usage(err)
	}
	r.conn = f.conn
	r.conn.resolve(g)
	ctx, stop := interruptible(ctx)
	defer stop()
	rb, code := r.connectBackend(ctx)
	if rb == nil {
		return code
	}
	defer rb.Close()
	out := resultOutput{w: stdout, tty: isTerminal(stdout), json: f.json, traceback: f.traceback}
	if f.wait {
		return r.waitAndPrint(ctx, rb, id, f.timeout, &out)
	}
	doc, err := rb.Get(ctx, id)
	if err != nil {
		return r.failf("cannot read the result of %s: %v; fix %s", id, err, fixBackend)
	}
	m := &client.Meta{TaskID: id, State: client.StatePending}
	if doc != nil {
		if m, err = client.ParseMeta(doc); err != nil {
			return r.failf("result of %s: %v", id, err)
		}
		if m.TaskID == "" {
			m.TaskID = id
		}
	}
	return out.final(m)
}

// waitAndPrint waits for the task (the result's Redis channel), showing
// each intermediate state, then prints the final one and returns the exit
// status for it.
func (r *cmdRun) waitAndPrint(ctx context.Context, rb *backends.Redis, id string, timeout time.Duration, out *resultOutput) int {
	wctx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var last *client.Meta
	docs, err := rb.WaitReady(wctx, []string{id}, func(_ string, doc []byte) {
		if m, err := client.ParseMeta(doc); err == nil {
			last = m
			out.update(m)
		}
	})
	out.endBar()
	if err != nil {
		switch {
		case ctx.Err() != nil:
			fmt.Fprintf(r.stderr, "%s: interrupted while waiting for %s\n", r.name, id)
			return exitInterrupted
		case errors.Is(err, context.DeadlineExceeded):
			state := client.StatePending
			if last != nil {
				state = last.State
			}
			fmt.Fprintf(r.stderr, "%s: %s is still %s after %v\n", r.name, id, state, timeout)
			return exitNotReady
		}
		return r.failf("waiting for %s: %v; fix %s", id, err, fixBackend)
	}
	m, err := client.ParseMeta(docs[0])
	if err != nil {
		return r.failf("result of %s: %v", id, err)
	}
	if m.TaskID == "" {
		m.TaskID = id
	}
	return out.final(m)
}

// resultOutput prints result documents: human lines (a progress bar on a
// terminal) or JSON lines.
type resultOutput struct {
	w         io.Writer
	tty       bool
	json      bool
	traceback bool
	barShown  bool
}

// update shows a state that is not final.
func (o *resultOutput) update(m *client.Meta) {
	if o.json {
		writeJSONLine(o.w, metaDoc(m))
		return
	}
	if cur, total, ok := progressOf(m.Result); ok && o.tty {
		fmt.Fprint(o.w, "\r"+progressBar(m.State, cur, total, 30))
		o.barShown = true
		return
	}
	o.endBar()
	fmt.Fprintln(o.w, stateLine(m))
}

// endBar ends the progress bar's line, if one is shown.
func (o *resultOutput) endBar() {
	if o.barShown {
		fmt.Fprintln(o.w)
		o.barShown = false
	}
}

// final prints the state reached and returns its exit status.
func (o *resultOutput) final(m *client.Meta) int {
	if o.json {
		writeJSONLine(o.w, metaDoc(m))
	} else {
		fmt.Fprintln(o.w, o.humanFinal(m))
	}
	return exitStatus(m.State)
}

func (o *resultOutput) humanFinal(m *client.Meta) string {
	switch {
	case m.State == client.StateSuccess:
		return formatValue(m.Result)
	case m.Ready() || m.State == client.StateRetry:
		if o.traceback && strings.TrimSpace(m.Traceback) != "" {
			return strings.TrimRight(m.Traceback, "\n")
		}
		if e := m.Exception(); e != nil {
			if m.State == client.StateRetry {
				return m.State + " " + e.Error()
			}
			return e.Error()
		}
	}
	return stateLine(m)
}

// exitStatus is the exit status for a task's state: 0 SUCCESS, 1 FAILURE
// or REVOKED, 3 anything not final.
func exitStatus(state string) int {
	switch state {
	case client.StateSuccess:
		return 0
	case client.StateFailure, client.StateRevoked:
		return exitFailed
	}
	return exitNotReady
}

// stateLine is a state not final, with its meta when there is one:
// "PENDING", "PROGRESS {"current":3,"total":10}", "RETRY RuntimeError: flaky".
func stateLine(m *client.Meta) string {
	if e := m.Exception(); e != nil {
		return m.State + " " + e.Error()
	}
	if m.Result == nil {
		return m.State
	}
	return m.State + " " + formatValue(m.Result)
}

// formatValue prints a result: a string as is, anything else as JSON
// (integers exact, floats as Python writes them).
func formatValue(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	raw, err := protocol.MarshalJSON(v)
	if err != nil {
		return protocol.PyRepr(v)
	}
	return string(raw)
}

// metaDoc is the result document as JSON prints it: Celery's stored
// fields (the extended ones when stored).
func metaDoc(m *client.Meta) map[string]any {
	d := map[string]any{
		"task_id": m.TaskID, "status": m.State, "result": m.Result,
		"traceback": protocol.NilIfEmpty(m.Traceback), "children": m.Children, "date_done": nil,
	}
	if m.Children == nil {
		d["children"] = []any{}
	}
	if m.DateDone != nil {
		d["date_done"] = protocol.FormatTime(*m.DateDone)
	}
	if m.GroupID != "" {
		d["group_id"] = m.GroupID
	}
	if m.ParentID != "" {
		d["parent_id"] = m.ParentID
	}
	if m.Name != "" {
		d["name"], d["args"], d["kwargs"], d["worker"], d["retries"], d["queue"] =
			m.Name, m.Args, m.Kwargs, m.Worker, int64(m.Retries), m.Queue
	}
	return d
}

// progressOf reads {"current": n, "total": m} meta (numbers, total > 0).
func progressOf(v any) (cur, total float64, ok bool) {
	d, isMap := v.(map[string]any)
	if !isMap {
		return 0, 0, false
	}
	cur, ok1 := number(d["current"])
	total, ok2 := number(d["total"])
	if !ok1 || !ok2 || total <= 0 || cur < 0 {
		return 0, 0, false
	}
	return cur, total, true
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case int64:
		return float64(x), true
	case float64:
		return x, true
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	}
	return 0, false
}

// progressBar draws "PROGRESS [#########.....]   3/10  30%" in width
// cells, padded so a shorter redraw covers a longer one.
func progressBar(state string, cur, total float64, width int) string {
	frac := min(cur/total, 1)
	filled := int(frac*float64(width) + 0.5)
	num := func(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
	return fmt.Sprintf("%s [%s%s] %s/%s %3.0f%%   ", state, strings.Repeat("#", filled),
		strings.Repeat(".", width-filled), num(cur), num(total), frac*100)
}
