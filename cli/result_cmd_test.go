package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/client"
	"github.com/celeryworker/gocelery/protocol"
)

func store(t *testing.T, rb *backends.Redis, r *backends.Result) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rb.Store(ctx, r); err != nil {
		t.Fatal(err)
	}
}

func strp(s string) *string { return &s }

// result prints what is stored, and exits with the state: 0 SUCCESS,
// 1 FAILURE/REVOKED, 3 not finished.
func TestResultStates(t *testing.T) {
	rb, track := testRedis(t)
	done := time.Date(2030, 1, 2, 3, 4, 5, 600000000, time.UTC)
	cases := []struct {
		r           backends.Result
		code        int
		human, json string
		traceback   string
	}{
		{backends.Result{Status: "SUCCESS", Result: int64(5), DateDone: done}, 0, "5",
			`{"children": [], "date_done": "2030-01-02T03:04:05.600000+00:00", "result": 5, "status": "SUCCESS", "task_id": "ID", "traceback": null}`, ""},
		{backends.Result{Status: "SUCCESS", Result: "text", DateDone: done}, 0, "text", "", ""},
		{backends.Result{Status: "SUCCESS", Result: map[string]any{"a": []any{int64(1), 2.0, nil}}, DateDone: done}, 0, `{"a": [1, 2.0, null]}`, "", ""},
		{backends.Result{Status: "FAILURE", Result: backends.ExceptionInfo{Type: "ValueError", Module: "builtins", Args: []any{"boom"}}.Value(),
			Traceback: strp("Traceback (most recent call last):\n  ...\nValueError: boom\n"), DateDone: done}, 1, "ValueError: boom",
			`{"children": [], "date_done": "2030-01-02T03:04:05.600000+00:00", "result": {"exc_message": ["boom"], "exc_module": "builtins", "exc_type": "ValueError"}, "status": "FAILURE", "task_id": "ID", "traceback": "Traceback (most recent call last):\n  ...\nValueError: boom\n"}`,
			"Traceback (most recent call last):\n  ...\nValueError: boom"},
		{backends.Result{Status: "REVOKED", Result: backends.TaskRevoked("revoked").Value(), DateDone: done}, 1,
			"celery.exceptions.TaskRevokedError: revoked", "", ""},
		{backends.Result{Status: "PROGRESS", Result: map[string]any{"current": int64(3), "total": int64(10)}}, 3,
			`PROGRESS {"current": 3, "total": 10}`, "", ""},
		{backends.Result{Status: "RETRY", Result: backends.ExceptionInfo{Type: "RuntimeError", Module: "builtins", Args: []any{"flaky"}}.Value()}, 3,
			"RETRY RuntimeError: flaky", "", ""},
		{backends.Result{Status: "STARTED", Result: map[string]any{"pid": int64(7), "hostname": "w@h"}}, 3,
			`STARTED {"hostname": "w@h", "pid": 7}`, "", ""},
	}
	for _, c := range cases {
		id := uniq("cmdtest-result-")
		track(id)
		c.r.TaskID = id
		store(t, rb, &c.r)
		code, out, errb := run(t, producer, "result", id, "--result-backend", cmdRedisURL)
		if code != c.code || out != c.human+"\n" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want %d, %q", c.r.Status, code, out, errb, c.code, c.human)
		}
		if c.json != "" {
			code, out, _ = run(t, producer, "result", id, "--json", "--result-backend", cmdRedisURL)
			if want := strings.ReplaceAll(c.json, `"ID"`, `"`+id+`"`) + "\n"; code != c.code || out != want {
				t.Errorf("%s --json: exit %d\n got %s\nwant %s", c.r.Status, code, out, want)
			}
		}
		if c.traceback != "" {
			code, out, _ = run(t, producer, "result", id, "--traceback", "--result-backend", cmdRedisURL)
			if code != c.code || out != c.traceback+"\n" {
				t.Errorf("%s --traceback: exit %d, %q", c.r.Status, code, out)
			}
		}
	}
	// Nothing stored: PENDING.
	code, out, _ := run(t, producer, "result", uniq("cmdtest-none-"), "--result-backend", cmdRedisURL)
	if code != exitNotReady || out != "PENDING\n" {
		t.Errorf("pending: exit %d, %q", code, out)
	}
	// The global option names the backend as well.
	code, out, _ = run(t, producer, "--result-backend", cmdRedisURL, "result", uniq("cmdtest-none-"), "--json")
	var doc map[string]any
	if code != exitNotReady || json.Unmarshal([]byte(out), &doc) != nil || doc["status"] != "PENDING" || doc["result"] != nil {
		t.Errorf("pending --json: exit %d, %q", code, out)
	}
}

// result --wait shows every state stored while it waits, then the final
// one; --timeout gives up with exit status 3.
func TestResultWait(t *testing.T) {
	rb, track := testRedis(t)
	id := uniq("cmdtest-wait-")
	track(id)
	go func() {
		time.Sleep(200 * time.Millisecond)
		for i := int64(1); i <= 3; i++ {
			store(t, rb, &backends.Result{TaskID: id, Status: "PROGRESS", Result: map[string]any{"current": i, "total": int64(3)}})
			time.Sleep(20 * time.Millisecond)
		}
		store(t, rb, &backends.Result{TaskID: id, Status: "SUCCESS", Result: int64(3), DateDone: time.Now()})
	}()
	code, out, errb := run(t, producer, "result", id, "--wait", "--timeout", "10", "--result-backend", cmdRedisURL)
	want := "PROGRESS {\"current\": 1, \"total\": 3}\nPROGRESS {\"current\": 2, \"total\": 3}\nPROGRESS {\"current\": 3, \"total\": 3}\n3\n"
	if code != 0 || out != want {
		t.Errorf("exit %d, stderr %q\n got %q\nwant %q", code, errb, out, want)
	}
	// Ready already: printed at once.
	code, out, _ = run(t, producer, "result", id, "--wait", "--result-backend", cmdRedisURL)
	if code != 0 || out != "3\n" {
		t.Errorf("ready: exit %d, %q", code, out)
	}
	code, out, errb = run(t, producer, "result", uniq("cmdtest-none-"), "--wait", "--timeout", "0.2", "--result-backend", cmdRedisURL)
	if code != exitNotReady || out != "" || !strings.Contains(errb, "still PENDING after 200ms") {
		t.Errorf("timeout: exit %d, stdout %q, stderr %q", code, out, errb)
	}
}

func TestResultUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"result"}, "missing the TASK_ID"},
		{[]string{"result", "a", "b"}, `unexpected argument "b"`},
		{[]string{"result", "a", "--timeout", "3"}, "--wait"},
		{[]string{"result", "a", "--wait", "--timeout", "x"}, "--timeout"},
	} {
		code, out, errb := run(t, producer, c.args...)
		if code != 2 || out != "" || !strings.Contains(errb, c.want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2 and %q", c.args, code, out, errb, c.want)
		}
	}
	code, out, _ := run(t, producer, "result", "--help")
	if code != 0 || !strings.Contains(out, "exit status: 0 SUCCESS; 1 FAILURE or REVOKED") {
		t.Errorf("help: exit %d, %q", code, out)
	}
}

// On a terminal, PROGRESS meta with current/total is a bar redrawn in
// place; other states are lines.
func TestProgressOutput(t *testing.T) {
	var b bytes.Buffer
	o := resultOutput{w: &b, tty: true}
	o.update(&client.Meta{State: "STARTED"})
	o.update(&client.Meta{State: "PROGRESS", Result: map[string]any{"current": json.Number("1"), "total": json.Number("4")}})
	o.update(&client.Meta{State: "PROGRESS", Result: map[string]any{"current": json.Number("4"), "total": json.Number("4")}})
	o.endBar()
	code := o.final(&client.Meta{State: "SUCCESS", Result: json.Number("4")})
	want := "STARTED\n" +
		"\rPROGRESS [########......................] 1/4  25%   " +
		"\rPROGRESS [##############################] 4/4 100%   \n" +
		"4\n"
	if code != 0 || b.String() != want {
		t.Errorf("exit %d\n got %q\nwant %q", code, b.String(), want)
	}
	// A PROGRESS without numbers is a line, on a terminal too.
	b.Reset()
	o.update(&client.Meta{State: "PROGRESS", Result: map[string]any{"step": "upload"}})
	if b.String() != "PROGRESS {\"step\": \"upload\"}\n" {
		t.Errorf("%q", b.String())
	}
	for _, c := range []struct {
		v  any
		ok bool
	}{
		{map[string]any{"current": int64(1), "total": int64(2)}, true},
		{map[string]any{"current": 0.5, "total": 1.0}, true},
		{map[string]any{"current": int64(1), "total": int64(0)}, false},
		{map[string]any{"current": "1", "total": int64(2)}, false},
		{[]any{int64(1)}, false},
		{nil, false},
	} {
		if _, _, ok := progressOf(c.v); ok != c.ok {
			t.Errorf("progressOf(%v) = %v", c.v, ok)
		}
	}
	if got := progressBar("PROGRESS", 7, 3, 10); !strings.HasPrefix(got, "PROGRESS [##########] 7/3 100%") {
		t.Errorf("overflow: %q", got)
	}
}

func TestFormatValue(t *testing.T) {
	for _, c := range []struct {
		v    any
		want string
	}{
		{json.Number("5"), "5"},
		{"plain text", "plain text"},
		{nil, "null"},
		{true, "true"},
		{2.0, "2.0"},
		{[]any{"a", json.Number("9007199254740993")}, `["a", 9007199254740993]`},
		{protocol.DateTime{Time: time.Date(2030, 1, 2, 0, 0, 0, 0, time.UTC)}, `{"__type__": "datetime", "__value__": "2030-01-02T00:00:00+00:00"}`},
	} {
		if got := formatValue(c.v); got != c.want {
			t.Errorf("formatValue(%#v) = %q, want %q", c.v, got, c.want)
		}
	}
}
