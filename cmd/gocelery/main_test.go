package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/celeryworker/gocelery/tasks"
)

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
	if _, err := newLogger(&buf, "INFO", "xml"); err == nil {
		t.Fatal("want error for --log-format xml")
	}
	if _, err := newLogger(&buf, "LOUD", "console"); err == nil {
		t.Fatal("want error for an unknown level")
	}
}

func TestParseWorkerFlags(t *testing.T) {
	t.Setenv("CELERY_BROKER_URL", "amqp://u:p@env:5672//")
	t.Setenv("CELERY_RESULT_BACKEND", "")
	var stderr bytes.Buffer
	f, err := parseWorkerFlags([]string{"-Q", "a,b", "-c", "16", "-n", "go@%h", "--prefetch-multiplier", "0", "-E", "--time-limit", "2.5"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if f.broker != "amqp://u:p@env:5672//" || f.backend != "redis://localhost:6379/0" {
		t.Errorf("broker %q backend %q", f.broker, f.backend)
	}
	if got := splitList(f.queues); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Errorf("queues = %v", got)
	}
	if f.concurrency != 16 || f.hostname != "go@%h" || f.prefetch != 0 || !f.events || f.timeLimit != 2.5 {
		t.Errorf("flags = %+v", f)
	}
	for _, bad := range [][]string{{"-c", "0"}, {"--prefetch-multiplier", "-1"}, {"--nope"}, {"extra"}} {
		if _, err := parseWorkerFlags(bad, &stderr); err == nil {
			t.Errorf("parseWorkerFlags(%q): want error", bad)
		}
	}
}

func TestRedactURL(t *testing.T) {
	if got := redactURL("amqp://guest:secret@host:5672//"); got != "amqp://guest:**@host:5672//" {
		t.Fatal(got)
	}
}

func TestTasksCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"tasks"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, name := range []string{"gocelery.add", "gocelery.echo", "gocelery.sleep", "gocelery.fail", "gocelery.flaky",
		"gocelery.progress", "gocelery.xsum", "gocelery.noop", "gocelery.request", "gocelery.limited"} {
		if !strings.Contains(out.String(), name+"\n") {
			t.Errorf("tasks output lacks %s", name)
		}
	}
	if code := run([]string{"bogus"}, &out, &errb); code != 2 {
		t.Errorf("unknown command exit = %d, want 2", code)
	}
}
