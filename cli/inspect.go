package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/celeryworker/gocelery/client"
	"github.com/celeryworker/gocelery/protocol"
)

// The remote control commands `celery inspect` and `celery control` send,
// with their positional arguments as Celery's command line takes them
// (celery.worker.control's Panel metadata): each positional argument is
// converted to its type and sent under its name; what is left goes to the
// variadic argument as a list.

type argKind int

const (
	argString argKind = iota
	argInt
	argFloat
	argBool
)

type panelArg struct {
	name     string
	kind     argKind
	required bool
}

type panelCommand struct {
	args     []panelArg
	variadic string
	// needsVariadic: at least one value for variadic (revoke without ids
	// would do nothing).
	needsVariadic bool
	signature     string
	help          string
	// noReply: the workers do not answer (shutdown: they leave first), so
	// the command is sent without asking for replies.
	noReply bool
}

var inspectPanel = map[string]panelCommand{
	"active":        {help: "tasks being run"},
	"active_queues": {help: "queues being consumed from"},
	"clock":         {help: "the logical clock"},
	"conf": {args: []panelArg{{"with_defaults", argBool, false}}, signature: "[include_defaults=False]",
		help: "configuration"},
	"memdump": {args: []panelArg{{"samples", argInt, false}}, signature: "[n_samples=10]",
		help: "the memory samples taken (memsample)"},
	"memsample": {help: "take a memory sample"},
	"objgraph": {args: []panelArg{{"type", argString, false}, {"num", argInt, false}, {"max_depth", argInt, false}},
		signature: "[object_type=Request] [num=200 [max_depth=10]]", help: "object graph (Python workers)"},
	"ping":       {help: "ping the workers"},
	"query_task": {variadic: "ids", signature: "[id1 [id2 [... [idN]]]]", help: "state of tasks by id"},
	"registered": {variadic: "taskinfoitems", signature: "[attr1 [attr2 [... [attrN]]]]",
		help: "registered tasks (with the attributes named)"},
	"report":    {help: "installation details, for bug reports"},
	"reserved":  {help: "tasks received and waiting to run"},
	"revoked":   {help: "revoked task ids"},
	"scheduled": {help: "tasks held for their ETA or countdown"},
	"stats":     {help: "worker statistics"},
}

var controlPanel = map[string]panelCommand{
	"add_consumer": {args: []panelArg{{"queue", argString, true}, {"exchange", argString, false},
		{"exchange_type", argString, false}, {"routing_key", argString, false}},
		signature: "<queue> [exchange [type [routing_key]]]", help: "start consuming a queue"},
	"autoscale": {args: []panelArg{{"max", argInt, false}, {"min", argInt, false}}, signature: "[max [min]]",
		help: "change the autoscale bounds"},
	"cancel_consumer": {args: []panelArg{{"queue", argString, true}}, signature: "<queue>",
		help: "stop consuming a queue"},
	"disable_events": {help: "stop sending task events"},
	"enable_events":  {help: "send task events (for monitors such as Flower)"},
	"heartbeat":      {help: "send a worker-heartbeat event now"},
	"pool_grow":      {args: []panelArg{{"n", argInt, false}}, signature: "[N=1]", help: "run N more tasks at once"},
	"pool_restart":   {help: "restart the pool (Python workers with worker_pool_restarts)"},
	"pool_shrink":    {args: []panelArg{{"n", argInt, false}}, signature: "[N=1]", help: "run N fewer tasks at once"},
	"rate_limit": {args: []panelArg{{"task_name", argString, true}, {"rate_limit", argString, true}},
		signature: "<task_name> <rate_limit (e.g. 5/s | 5/m | 5/h; 0 = none)>", help: "set a task's rate limit"},
	"revoke": {variadic: "task_id", needsVariadic: true, signature: "<id> [id ...]",
		help: "do not run these tasks (REVOKED)"},
	"revoke_by_stamped_headers": {variadic: "headers", needsVariadic: true, signature: "<key=value> [key=value ...]",
		help: "revoke the tasks stamped so"},
	"shutdown": {noReply: true, help: "warm shutdown (no reply)"},
	"terminate": {args: []panelArg{{"signal", argString, true}}, variadic: "task_id", needsVariadic: true,
		signature: "<signal> <id> [id ...]", help: "revoke these tasks and stop them if running"},
	"time_limit": {args: []panelArg{{"task_name", argString, true}, {"soft", argFloat, true}, {"hard", argFloat, false}},
		signature: "<task_name> <soft_secs> [hard_secs]", help: "set a task's time limits"},
}

// compileArguments turns the positional arguments after the command name
// into the request's arguments, as Celery's command line does.
func compileArguments(method string, pc panelCommand, args []string) (map[string]any, error) {
	out := map[string]any{}
	i := 0
	for ; i < len(args) && i < len(pc.args); i++ {
		a := pc.args[i]
		v, err := convertArg(a.kind, args[i])
		if err != nil {
			return nil, usagef("%s: %s %q: %v (usage: %s %s)", method, a.name, args[i], err, method, pc.signature)
		}
		out[a.name] = v
	}
	for _, a := range pc.args[i:] {
		if a.required {
			return nil, usagef("%s needs %s (usage: %s %s)", method, a.name, method, pc.signature)
		}
	}
	rest := args[i:]
	if pc.variadic == "" {
		if len(rest) > 0 {
			if pc.signature == "" {
				return nil, usagef("%s takes no arguments, got %q", method, rest[0])
			}
			return nil, usagef("%s: unexpected argument %q (usage: %s %s)", method, rest[0], method, pc.signature)
		}
		return out, nil
	}
	if pc.needsVariadic && len(rest) == 0 {
		return nil, usagef("%s needs at least one value (usage: %s %s)", method, method, pc.signature)
	}
	l := make([]any, len(rest))
	for j, s := range rest {
		l[j] = s
	}
	out[pc.variadic] = l
	return out, nil
}

func convertArg(k argKind, s string) (any, error) {
	switch k {
	case argInt:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, errors.New("not an integer")
		}
		return n, nil
	case argFloat:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || f != f {
			return nil, errors.New("not a number")
		}
		return f, nil
	case argBool:
		// Python's strtobool, which Celery uses.
		switch strings.ToLower(s) {
		case "y", "yes", "t", "true", "on", "1":
			return true, nil
		case "n", "no", "f", "false", "off", "0":
			return false, nil
		}
		return nil, errors.New("not a boolean (yes/no, true/false, on/off, 1/0)")
	}
	return s, nil
}

// remoteFlags are the options of inspect, control and status.
type remoteFlags struct {
	conn        connFlags
	timeout     time.Duration
	destination string
	json        bool
	list        bool
}

func remoteFlagSet(name, cmd string, f *remoteFlags) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name+" "+cmd, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.SortFlags = false
	f.timeout = time.Second
	fs.VarP(&secondsValue{&f.timeout, false}, "timeout", "t", "seconds to wait for replies (with -d: or until every node named has replied)")
	fs.StringVarP(&f.destination, "destination", "d", "", "comma-separated node names (default: every worker)")
	fs.BoolVarP(&f.json, "json", "j", false, "print the replies as one JSON object {node: reply}")
	if cmd != "status" {
		fs.BoolVar(&f.list, "list", false, "list the "+cmd+" commands and exit")
	}
	addConnFlags(fs, &f.conn, false)
	return fs
}

func (p Program) remoteUsage(cmd string) string {
	var b strings.Builder
	switch cmd {
	case "status":
		fmt.Fprintf(&b, "usage: %s [global options] status [flags]\n\nPings the workers and lists those that answer.\n", p.Name)
	case "inspect":
		fmt.Fprintf(&b, "usage: %s [global options] inspect COMMAND [ARGS...] [flags]\n\nAsks the workers (Go or Python) through their pidbox queues, as 'celery inspect' does.\n", p.Name)
	default:
		fmt.Fprintf(&b, "usage: %s [global options] control COMMAND [ARGS...] [flags]\n\nSends a remote control command to the workers (Go or Python), as 'celery control' does.\n", p.Name)
	}
	b.WriteString(`
Each reply is printed as it arrives ("-> node: OK" or "ERROR", then the reply),
or all of them as one JSON object with --json. Exit status: 0 replies came;
69 no worker replied in time (as Celery); 1 the broker cannot be used; 2 usage.
`)
	if cmd != "status" {
		b.WriteString("\ncommands:\n")
		b.WriteString(panelList(panelFor(cmd)))
	}
	b.WriteString("\nflags:\n")
	b.WriteString(remoteFlagSet(p.Name, cmd, &remoteFlags{}).FlagUsages())
	return b.String()
}

func panelFor(cmd string) map[string]panelCommand {
	if cmd == "inspect" {
		return inspectPanel
	}
	return controlPanel
}

func panelList(panel map[string]panelCommand) string {
	var b strings.Builder
	names := slices.Sorted(maps.Keys(panel))
	width := 0
	for _, n := range names {
		width = max(width, len(n)+1+len(panel[n].signature))
	}
	for _, n := range names {
		pc := panel[n]
		fmt.Fprintf(&b, "  %-*s  %s\n", width, strings.TrimSpace(n+" "+pc.signature), pc.help)
	}
	return b.String()
}

// parseRemote parses inspect/control/status: the method, its arguments
// and the options.
func parseRemote(name, cmd string, args []string) (f *remoteFlags, method string, arguments map[string]any, pc panelCommand, err error) {
	f = &remoteFlags{}
	fs := remoteFlagSet(name, cmd, f)
	if err = fs.Parse(args); err != nil {
		return
	}
	if f.list {
		return
	}
	pos := fs.Args()
	if cmd == "status" {
		if len(pos) > 0 {
			err = usagef("unexpected argument %q", pos[0])
		}
		return f, "ping", map[string]any{}, inspectPanel["ping"], err
	}
	panel := panelFor(cmd)
	if len(pos) == 0 {
		err = usagef("missing the COMMAND; one of: %s", strings.Join(slices.Sorted(maps.Keys(panel)), ", "))
		return
	}
	method = pos[0]
	var ok bool
	if pc, ok = panel[method]; !ok {
		err = usagef("command %q not recognized; %s commands: %s", method, cmd, strings.Join(slices.Sorted(maps.Keys(panel)), ", "))
		return
	}
	arguments, err = compileArguments(method, pc, pos[1:])
	if err == nil && f.timeout <= 0 {
		err = usagef("-t/--timeout must be more than 0")
	}
	return
}

func (p Program) runRemote(ctx context.Context, cmd string, g *globals, args []string, stdout, stderr io.Writer) int {
	r := p.newCmdRun(cmd, g, stdout, stderr)
	f, method, arguments, pc, err := parseRemote(p.Name, cmd, args)
	if errors.Is(err, pflag.ErrHelp) {
		fmt.Fprint(stdout, p.remoteUsage(cmd))
		return 0
	}
	if err != nil {
		return r.usage(err)
	}
	if f.list {
		fmt.Fprint(stdout, panelList(panelFor(cmd)))
		return 0
	}
	r.conn = f.conn
	r.conn.resolve(g)
	ctx, stop := interruptible(ctx)
	defer stop()
	c, code := r.connectBroker(ctx, nil)
	if c == nil {
		return code
	}
	defer c.Close()
	dest := splitList(f.destination)

	if pc.noReply {
		bctx, cancel := context.WithTimeout(ctx, connectTimeout)
		err := c.Broadcast(bctx, method, arguments, dest)
		cancel()
		if err != nil {
			return r.failf("%s: %v", method, err)
		}
		if f.json {
			fmt.Fprintln(stdout, "{}")
		} else {
			to := "every worker"
			if len(dest) > 0 {
				to = strings.Join(dest, ", ")
			}
			fmt.Fprintf(stdout, "-> %s sent to %s (workers do not reply to it)\n", method, to)
		}
		return 0
	}

	showBody := cmd != "status"
	opts := client.ControlOptions{Destination: dest, Timeout: f.timeout}
	if !f.json {
		opts.OnReply = func(rep client.ControlReply) {
			io.WriteString(stdout, formatReply(rep, showBody, r.quiet))
		}
	}
	replies, err := c.Control(ctx, method, arguments, opts)
	if err != nil {
		if ctx.Err() != nil {
			return exitInterrupted
		}
		return r.failf("%s: %v", method, err)
	}
	if len(replies) == 0 {
		fmt.Fprintf(stderr, "%s: no nodes replied within %v\n", r.name, f.timeout)
		return exitUnavailable
	}
	if f.json {
		merged := map[string]any{}
		for _, rep := range replies {
			merged[rep.Node] = rep.Value
		}
		writeJSONLine(stdout, merged)
		return 0
	}
	if !r.quiet && cmd != "control" { // as Celery: inspect and status count the nodes
		nodes := map[string]bool{}
		for _, rep := range replies {
			nodes[rep.Node] = true
		}
		word := "nodes"
		if len(nodes) == 1 {
			word = "node"
		}
		fmt.Fprintf(stdout, "\n%d %s online.\n", len(nodes), word)
	}
	return 0
}

// formatReply prints one reply as `celery inspect` does:
//
//	->  celery@host: OK
//	        pong
func formatReply(rep client.ControlReply, showBody, quiet bool) string {
	status, body := prettyReply(rep.Value)
	prefix := "-> "
	if quiet {
		prefix = ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %s\n", prefix, rep.Node, status)
	if showBody && body != "" {
		b.WriteString(indent(body, 4))
		b.WriteByte('\n')
	}
	return b.String()
}

// prettyReply is Celery's CLI rendering of a reply value: the status (OK,
// or ERROR for {"error": ...}) and the text (a list as "* item" lines, a
// dict as sorted JSON indented by 4, {"ok": v} as v's text indented).
func prettyReply(v any) (status, text string) {
	switch x := v.(type) {
	case []any:
		if len(x) == 0 {
			return "OK", "- empty -"
		}
		lines := make([]string, len(x))
		for i, e := range x {
			lines[i] = "* " + pyStr(e)
		}
		return "OK", strings.Join(lines, "\n")
	case map[string]any:
		if ok, has := x["ok"]; has {
			_, t := prettyReply(ok)
			return "OK", indent(t, 4)
		}
		if e, has := x["error"]; has {
			_, t := prettyReply(e)
			return "ERROR", indent(t, 4)
		}
		return "OK", jsonIndent(x)
	case string:
		return "OK", x
	}
	return "OK", protocol.PyRepr(v)
}

// pyStr is Python's str(): a string as is, anything else its repr.
func pyStr(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return protocol.PyRepr(v)
}

// jsonIndent is json.dumps(v, sort_keys=True, indent=4).
func jsonIndent(v any) string {
	raw, err := protocol.MarshalJSON(v)
	if err != nil {
		return protocol.PyRepr(v)
	}
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "    "); err != nil {
		return string(raw)
	}
	return b.String()
}

// indent prefixes every line of t with n spaces (Celery's text.indent).
func indent(t string, n int) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(t, "\n", "\n"+pad)
}
