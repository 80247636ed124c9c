package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/celeryworker/gocelery/tasks"
	"github.com/celeryworker/gocelery/worker"
)

func testProgram() Program {
	reg := tasks.NewRegistry()
	reg.MustRegister("orders.total", func(ctx context.Context, items []int64) (int64, error) {
		var t int64
		for _, i := range items {
			t += i
		}
		return t, nil
	}, tasks.Params("items"))
	reg.MustRegister("orders.noop", func() {})
	return Program{Name: "orderworker", Version: "1.2.0", Registry: reg}
}

func run(t *testing.T, p Program, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = p.Run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestConsoleLogFormat(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger(&buf, "INFO", "console")
	if err != nil {
		t.Fatal(err)
	}
	tl := log.With().Str("task", "gocelery.add").Str("id", "abc").Logger()
	tl.Info().Float64("runtime", 0.001).Msg("Task gocelery.add[abc] succeeded in 0.001000s: 5")
	tl.Debug().Msg("hidden at INFO")
	ctx := tasks.WithRequest(context.Background(), &tasks.Request{Logger: tl})
	tasks.Logger(ctx).Warn().Msg("from inside")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %q", lines)
	}
	for i, want := range []string{
		`^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}: INFO/MainProcess\] Task gocelery\.add\[abc\] succeeded in 0\.001000s: 5$`,
		`^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}: WARNING/MainProcess\] gocelery\.add\[abc\]: from inside$`,
	} {
		if !regexp.MustCompile(want).MatchString(lines[i]) {
			t.Errorf("line %d = %q, want match %s", i, lines[i], want)
		}
	}
}

func TestJSONLogFormat(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger(&buf, "warning", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Info().Msg("dropped")
	log.Warn().Str("task", "t").Str("id", "1").Msg("kept")
	out := buf.String()
	if strings.Contains(out, "dropped") || !strings.Contains(out, `"task":"t"`) || !strings.Contains(out, `"level":"warn"`) {
		t.Fatalf("json log = %q", out)
	}
	if !regexp.MustCompile(`"time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d`).MatchString(out) {
		t.Errorf("json log has no timestamp: %q", out)
	}
	if _, err := newLogger(&buf, "INFO", "xml"); err == nil {
		t.Fatal("want error for --log-format xml")
	}
	if _, err := newLogger(&buf, "LOUD", "console"); err == nil {
		t.Fatal("want error for an unknown level")
	}
}

func TestParseLevelAnyCase(t *testing.T) {
	for in, want := range map[string]zerolog.Level{
		"debug": zerolog.DebugLevel, "INFO": zerolog.InfoLevel, "Warning": zerolog.WarnLevel,
		"error": zerolog.ErrorLevel, "CRITICAL": zerolog.FatalLevel, "fatal": zerolog.FatalLevel,
	} {
		if got, err := parseLevel(in); err != nil || got != want {
			t.Errorf("parseLevel(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
}

// A command line as a Celery deployment writes it, with only the program
// name changed.
func TestParseTypicalCeleryLine(t *testing.T) {
	t.Setenv("CELERY_BROKER_URL", "")
	t.Setenv("CELERY_RESULT_BACKEND", "")
	line := "-A proj -P prefork --without-gossip --without-mingle --without-heartbeat -Ofair " +
		"--pidfile /tmp/x.pid --logfile /tmp/x.log -l info -c 4 -Q a,b --autoscale 8,2 --result-expires 3600"
	f, err := parseWorkerFlags("orderworker", nil, strings.Fields(line))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"app", f.app, "proj"},
		{"pool", f.pool, "prefork"},
		{"without-gossip", f.withoutGossip, true},
		{"without-mingle", f.withoutMingle, true},
		{"without-heartbeat", f.withoutHeartbeat, true},
		{"optimization", f.optimization, "fair"},
		{"pidfile", f.pidfile, "/tmp/x.pid"},
		{"logfile", f.logfile, "/tmp/x.log"},
		{"loglevel", f.level, zerolog.InfoLevel},
		{"concurrency", f.concurrency, 4},
		{"queues", strings.Join(splitList(f.queues), "|"), "a|b"},
		{"autoscale max", f.autoscaleMax, 8},
		{"autoscale min", f.autoscaleMin, 2},
		{"result-expires", f.resultExpires, time.Hour},
		{"broker default", f.broker, defaultBroker},
		{"backend default", f.backend, defaultBackend},
		{"hostname default", f.hostname, "celery@%h"},
		{"prefetch default", f.prefetch, 4},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

// pflag's POSIX forms, as Celery users write them.
func TestParsePOSIXForms(t *testing.T) {
	f, err := parseWorkerFlags("w", nil, []string{"-Ofair", "-lDEBUG", "-c8", "-Qx,y", "-E", "-ngo@%h",
		"--loglevel=WARNING", "--concurrency=16", "--prefetch-multiplier=0", "--time-limit", "2.5",
		"--soft-time-limit=1", "--shutdown-timeout", "30s", "--heartbeat-interval", "10", "--track-started",
		"--result-extended", "--max-tasks-per-child", "100", "--max-memory-per-child=200000", "--log-format", "JSON"})
	if err != nil {
		t.Fatal(err)
	}
	if f.optimization != "fair" || f.level != zerolog.WarnLevel || f.concurrency != 16 || f.queues != "x,y" ||
		!f.events || f.hostname != "go@%h" || f.prefetch != 0 || f.timeLimit != 2500*time.Millisecond ||
		f.softTimeLimit != time.Second || f.shutdownTimeout != 30*time.Second || f.heartbeat != 10*time.Second ||
		!f.trackStarted || !f.resultExtended || f.maxTasksPerChild != 100 || f.maxMemoryPerChild != 200000 ||
		f.logFormat != "json" {
		t.Errorf("flags = %+v", f)
	}
	// The combined -ElINFO: a bool shorthand followed by one with a value.
	if f, err := parseWorkerFlags("w", nil, []string{"-ElINFO"}); err != nil || !f.events || f.level != zerolog.InfoLevel {
		t.Errorf("-ElINFO: %+v, %v", f, err)
	}
}

func TestParseDurationsAndHeartbeat(t *testing.T) {
	for _, c := range []struct {
		args []string
		want time.Duration
	}{
		{[]string{"--result-expires", "3600"}, time.Hour},
		{[]string{"--result-expires", "24h"}, 24 * time.Hour},
		{[]string{"--result-expires", "0"}, 0},
		{[]string{"--result-expires", "1.5"}, 1500 * time.Millisecond},
		{nil, 24 * time.Hour},
	} {
		f, err := parseWorkerFlags("w", nil, c.args)
		if err != nil || f.resultExpires != c.want {
			t.Errorf("%q: result-expires %v, %v; want %v", c.args, f.resultExpires, err, c.want)
		}
	}
	// Absent: 0, the transport's default; an explicit 0 turns heartbeats off.
	f, _ := parseWorkerFlags("w", nil, nil)
	if f.heartbeat != 0 {
		t.Errorf("default heartbeat %v", f.heartbeat)
	}
	f, _ = parseWorkerFlags("w", nil, []string{"--heartbeat-interval", "0"})
	if f.heartbeat >= 0 {
		t.Errorf("--heartbeat-interval 0 = %v, want negative (off)", f.heartbeat)
	}
}

func TestParseAutoscale(t *testing.T) {
	for _, c := range []struct {
		in       string
		max, min int
		bad      bool
	}{
		{"10,3", 10, 3, false}, {"10", 10, 0, false}, {"3,10", 10, 3, false}, {" 4 , 1 ", 4, 1, false},
		{"x", 0, 0, true}, {"1,2,3", 0, 0, true}, {"0", 0, 0, true}, {"-1,2", 0, 0, true}, {"", 0, 0, true},
	} {
		hi, lo, err := parseAutoscale(c.in)
		if (err != nil) != c.bad || hi != c.max || lo != c.min {
			t.Errorf("parseAutoscale(%q) = %d, %d, %v", c.in, hi, lo, err)
		}
	}
}

func TestEnvAndGlobalDefaults(t *testing.T) {
	t.Setenv("CELERY_BROKER_URL", "amqp://u:p@env:5672//")
	t.Setenv("CELERY_RESULT_BACKEND", "redis://env:6379/1")
	f, err := parseWorkerFlags("w", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f.broker != "amqp://u:p@env:5672//" || f.backend != "redis://env:6379/1" {
		t.Errorf("from env: broker %q backend %q", f.broker, f.backend)
	}
	// Options before the command beat the environment; the worker's own
	// flags beat both.
	g, rest, err := parseGlobals("w", strings.Fields("-A proj -b amqp://g@global// --result-backend redis://global/2 -q --no-color --config celeryconfig worker -l INFO -b amqp://w@worker//"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) == 0 || rest[0] != "worker" {
		t.Fatalf("rest = %q", rest)
	}
	f, err = parseWorkerFlags("w", g, rest[1:])
	if err != nil {
		t.Fatal(err)
	}
	if f.broker != "amqp://w@worker//" || f.backend != "redis://global/2" || f.app != "proj" || !f.quiet || f.config != "celeryconfig" {
		t.Errorf("globals: %+v", f)
	}
	g, rest, err = parseGlobals("w", strings.Fields("-b amqp://g@global// worker"))
	if err != nil {
		t.Fatal(err)
	}
	if f, err = parseWorkerFlags("w", g, rest[1:]); err != nil || f.broker != "amqp://g@global//" {
		t.Errorf("celery -b URL worker: %+v, %v", f, err)
	}
}

func TestWorkdirGlobalOption(t *testing.T) {
	t.Chdir(".") // restores the working directory after the test
	dir := t.TempDir()
	code, out, errb := run(t, testProgram(), "--workdir", dir, "tasks")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb)
	}
	wd, _ := os.Getwd()
	if real, _ := filepath.EvalSymlinks(dir); wd != dir && wd != real {
		t.Errorf("cwd = %q, want %q", wd, dir)
	}
	if out != "orders.noop\norders.total\n" {
		t.Errorf("tasks = %q", out)
	}
	if code, _, errb := run(t, testProgram(), "--workdir", filepath.Join(dir, "nope"), "tasks"); code != 1 || !strings.Contains(errb, "--workdir") {
		t.Errorf("missing --workdir: exit %d, %q", code, errb)
	}
}

// Bad command lines exit 2 with a message naming the flag, before anything
// connects.
func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"worker", "-D"}, "-D/--detach"},
		{[]string{"worker", "--detach"}, "systemd"},
		{[]string{"worker", "-B"}, "-B/--beat"},
		{[]string{"worker", "-Ofast"}, `"-O, --optimization"`},
		{[]string{"worker", "-l", "LOUD"}, `"-l, --loglevel"`},
		{[]string{"worker", "--log-format", "xml"}, "--log-format"},
		{[]string{"worker", "-c", "0"}, "-c/--concurrency"},
		{[]string{"worker", "-c", "many"}, `"-c, --concurrency"`},
		{[]string{"worker", "--prefetch-multiplier", "-1"}, "--prefetch-multiplier"},
		{[]string{"worker", "--autoscale", "ten"}, "--autoscale"},
		{[]string{"worker", "--result-expires", "-5"}, "--result-expires"},
		{[]string{"worker", "--result-expires", "soon"}, "--result-expires"},
		{[]string{"worker", "--time-limit", "x"}, "--time-limit"},
		{[]string{"worker", "--nope"}, "--nope"},
		{[]string{"worker", "-Z"}, `'Z'`},
		{[]string{"worker", "-Q"}, "-Q"},
		{[]string{"worker", "-Q", ","}, "-Q/--queues"},
		{[]string{"worker", "extra"}, `"extra"`},
		{[]string{"worker", "--logfile", "/tmp/%x.log"}, "-f/--logfile"},
		{[]string{"worker", "--pidfile", "/tmp/%z.pid"}, "--pidfile"},
		{[]string{"--nope", "worker"}, "--nope"},
		{[]string{"bogus"}, `unknown command "bogus"`},
		{nil, "usage: orderworker"},
		{[]string{"tasks", "extra"}, `"extra"`},
	} {
		code, _, errb := run(t, testProgram(), c.args...)
		if code != 2 || !strings.Contains(errb, c.want) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", c.args, code, errb, c.want)
		}
	}
}

func TestCommands(t *testing.T) {
	p := testProgram()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"version"}, "orderworker 1.2.0\n"},
		{[]string{"--version"}, "orderworker 1.2.0\n"},
		{[]string{"tasks"}, "orders.noop\norders.total\n"},
		{[]string{"-A", "proj", "tasks"}, "orders.noop\norders.total\n"},
	} {
		code, out, errb := run(t, p, c.args...)
		if code != 0 || out != c.want {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %q", c.args, code, out, errb, c.want)
		}
	}
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		code, out, _ := run(t, p, args...)
		if code != 0 || !strings.Contains(out, "usage: orderworker") || !strings.Contains(out, "--workdir") {
			t.Errorf("%q: exit %d, %q", args, code, out)
		}
	}
	for _, args := range [][]string{{"worker", "-h"}, {"worker", "--help"}, {"help", "worker"}} {
		code, out, _ := run(t, p, args...)
		if code != 0 || !strings.Contains(out, "usage: orderworker [global options] worker") || !strings.Contains(out, "--autoscale") {
			t.Errorf("%q: exit %d, %q", args, code, out)
		}
	}
	// Defaults: the executable's name and "dev".
	code, out, _ := run(t, Program{Registry: p.Registry}, "version")
	if want := filepath.Base(os.Args[0]) + " dev\n"; code != 0 || out != want {
		t.Errorf("default name/version: %q, want %q", out, want)
	}
	if code, _, errb := run(t, Program{Name: "x"}, "tasks"); code != 1 || !strings.Contains(errb, "Registry is nil") {
		t.Errorf("nil registry: exit %d, %q", code, errb)
	}
}

func TestNodeFormat(t *testing.T) {
	for _, c := range []struct{ in, node, want string }{
		{"/var/log/%n%I.log", "w1@host.example.com", "/var/log/w1.log"},
		{"%n-%h-%d-%p-%i.log", "w1@host.example.com", "w1-host.example.com-example.com-w1@host.example.com-0.log"},
		{"/run/%n.pid", "host", "/run/celery.pid"},
		{"100%.log", "a@b", "100%.log"},
		{"a%%-c%", "a@b", "a%%-c%"},
		{"plain", "a@b", "plain"},
	} {
		got, err := nodeFormat(c.in, c.node)
		if err != nil || got != c.want {
			t.Errorf("nodeFormat(%q, %q) = %q, %v; want %q", c.in, c.node, got, err, c.want)
		}
	}
	if _, err := nodeFormat("%x", "a@b"); err == nil || !strings.Contains(err.Error(), "%x") {
		t.Errorf("unknown %%x: %v", err)
	}
}

func TestPidfile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "w.pid")
	read := func() string {
		b, _ := os.ReadFile(path)
		return string(b)
	}
	me := strconv.Itoa(os.Getpid()) + "\n"

	pf, stale, err := acquirePidfile(path)
	if err != nil || stale != "" || read() != me {
		t.Fatalf("fresh: %v, stale %q, content %q", err, stale, read())
	}
	pf.release()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("release left the file: %v", err)
	}

	// A running process (our parent, the go test driver) holds the file.
	live := strconv.Itoa(os.Getppid()) + "\n"
	os.WriteFile(path, []byte(live), 0o644)
	if _, _, err := acquirePidfile(path); err == nil || !strings.Contains(err.Error(), "pid "+strings.TrimSpace(live)) {
		t.Errorf("live pid: err %v", err)
	}
	if read() != live {
		t.Errorf("a live pid file was changed: %q", read())
	}

	// Stale: no such process; our own pid (pid 1 in a container); broken.
	for _, content := range []string{"1073741823\n", me, "garbage", ""} {
		os.WriteFile(path, []byte(content), 0o644)
		pf, stale, err := acquirePidfile(path)
		if err != nil || stale == "" || read() != me {
			t.Errorf("content %q: err %v, stale %q, now %q", content, err, stale, read())
			continue
		}
		pf.release()
	}

	// A file another process took over is not ours to remove.
	pf, _, err = acquirePidfile(path)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, []byte("12345\n"), 0o644)
	pf.release()
	if read() != "12345\n" {
		t.Errorf("release removed another process's pid file")
	}
}

func testSession(t *testing.T, format string, args ...string) (*session, *bytes.Buffer) {
	t.Helper()
	f, err := parseWorkerFlags("orderworker", nil, append([]string{"--log-format", format}, args...))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log, err := buildLogger(&buf, f.level, f.logFormat)
	if err != nil {
		t.Fatal(err)
	}
	return &session{p: testProgram(), f: f, log: log, stderr: &buf}, &buf
}

func TestBanner(t *testing.T) {
	s, buf := testSession(t, "console", "-b", "amqp://u:s3cr3t@rabbit:5672/prod", "--result-backend", "redis://:pw1234@redis:6379/1", "-Q", "a,b", "-E")
	s.banner(buf, "w1@host", 8, 2)
	out := buf.String()
	for _, want := range []string{
		" -------------- w1@host orderworker 1.2.0\n",
		" .> transport:   amqp://u:****@rabbit:5672/prod\n",
		" .> results:     redis://:****@redis:6379/1\n",
		" .> concurrency: {min=2, max=8} (goroutines)\n",
		" .> task events: ON\n",
		" .> queues:      a, b\n",
		"\n[tasks]\n  . orders.noop\n  . orders.total\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("banner lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "s3cr3t") || strings.Contains(out, "pw1234") {
		t.Errorf("password in the banner:\n%s", out)
	}

	s, buf = testSession(t, "json", "--result-backend", "disabled")
	s.banner(buf, "w1@host", 4, 0)
	for _, want := range []string{`"program":"orderworker"`, `"version":"1.2.0"`, `"results":"disabled"`,
		`"concurrency":"4 (goroutines)"`, `"tasks":["orders.noop","orders.total"]`, `"message":"orderworker 1.2.0 starting"`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("json banner lacks %s: %s", want, buf)
		}
	}
	if n := strings.Count(buf.String(), "\n"); n != 1 {
		t.Errorf("json banner is %d lines, want one event", n)
	}
}

func TestNotesAreOneLineEach(t *testing.T) {
	s, buf := testSession(t, "console", "-A", "proj", "-P", "gevent", "--max-memory-per-child", "1000", "-c", "3")
	s.f.config = "celeryconfig"
	s.logNotes(3)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "-A proj: the tasks are orderworker's own registry") ||
		!strings.Contains(lines[0], "-P gevent: the pool is always goroutines, at most 3 tasks") ||
		!strings.Contains(lines[1], "no child processes to recycle") || !strings.Contains(lines[2], "--config celeryconfig ignored") {
		t.Errorf("notes:\n%s", buf)
	}
	s, buf = testSession(t, "console", "--without-gossip", "-Ofair")
	s.logNotes(3)
	if buf.Len() != 0 {
		t.Errorf("notes at INFO for flags that need none: %s", buf)
	}
}

func TestExplainNamesTheFlag(t *testing.T) {
	s, _ := testSession(t, "console", "-b", "amqp://u:Sekr1t@rabbit//", "--result-backend", "redis://:Pw9999@redis/0")
	for _, c := range []struct {
		err  error
		want string
	}{
		{&worker.ConfigError{Setting: "broker_url", Err: errors.New("login refused for amqp://u:Sekr1t@rabbit//")}, "fix -b/--broker (CELERY_BROKER_URL)"},
		{&worker.ConfigError{Setting: "result_backend", Err: errors.New("WRONGPASS")}, "cannot use the result backend redis://:****@redis/0: WRONGPASS; fix --result-backend (CELERY_RESULT_BACKEND)"},
		{fmt.Errorf("wrapped: %w", &worker.ConfigError{Setting: "queues", Err: errors.New("406")}), "-Q/--queues: the queue exists with other arguments or type; declare it the same way or delete it (406)"},
		{errors.New("boom"), "worker stopped: boom"},
	} {
		got := s.explain(c.err)
		if !strings.Contains(got, c.want) || strings.Contains(got, "Sekr1t") || strings.Contains(got, "Pw9999") {
			t.Errorf("explain(%v) = %q, want %q and no password", c.err, got, c.want)
		}
	}
	// The URL is named once when the error quotes it already.
	got := s.explain(&worker.ConfigError{Setting: "broker_url", Err: errors.New("connect to amqp://u:Sekr1t@rabbit//: refused")})
	if strings.Count(got, "rabbit") != 1 {
		t.Errorf("URL named twice: %q", got)
	}
}

// The one line a failed run ends with shows even at --loglevel CRITICAL.
func TestFailLineIgnoresLevel(t *testing.T) {
	s, buf := testSession(t, "console", "-l", "CRITICAL")
	if code := s.fail("cannot use the broker: x;\nfix -b/--broker"); code != 1 {
		t.Errorf("fail = %d", code)
	}
	if !regexp.MustCompile(`^\[[^]]+: ERROR/MainProcess\] cannot use the broker: x; fix -b/--broker\n$`).MatchString(buf.String()) {
		t.Errorf("fail line = %q", buf)
	}
}

// task_acks_late and task_reject_on_worker_lost: flags, or the
// environment as Celery's settings.
func TestAcksLateFlags(t *testing.T) {
	for _, tc := range []struct {
		name             string
		env              map[string]string
		args             []string
		late, rejectLost bool
	}{
		{"defaults", nil, nil, false, false},
		{"flags", nil, []string{"--task-acks-late", "--task-reject-on-worker-lost"}, true, true},
		{"env", map[string]string{"CELERY_TASK_ACKS_LATE": "true", "CELERY_TASK_REJECT_ON_WORKER_LOST": "1"}, nil, true, true},
		{"flag over env", map[string]string{"CELERY_TASK_ACKS_LATE": "true"}, []string{"--task-acks-late=false"}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CELERY_TASK_ACKS_LATE", "")
			t.Setenv("CELERY_TASK_REJECT_ON_WORKER_LOST", "")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			f, err := parseWorkerFlags("w", nil, tc.args)
			if err != nil {
				t.Fatal(err)
			}
			if f.acksLate != tc.late || f.rejectOnWorkerLost != tc.rejectLost {
				t.Fatalf("acks late %v, reject on worker lost %v; want %v, %v", f.acksLate, f.rejectOnWorkerLost, tc.late, tc.rejectLost)
			}
		})
	}
}
