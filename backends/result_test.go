package backends_test

import (
	"encoding/json"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/protocol"
)

const testTaskID = "4a60e875-063d-421a-9572-9ac9b17bb5c3"

var doneAt = time.Date(2026, 11, 23, 21, 40, 9, 631096000, time.UTC)

func strPtr(s string) *string { return &s }

func TestResultEncodeExact(t *testing.T) {
	big70, _ := new(big.Int).SetString("1180591620717411303424", 10)
	tb := "Traceback (most recent call last):\n  File \"t.go\", line 1\n\tValueError: \"bad\" \\ x"
	tests := []struct {
		name     string
		res      backends.Result
		extended bool
		want     string
	}{
		{
			name: "success as Celery writes it",
			res:  backends.Result{TaskID: testTaskID, Status: "SUCCESS", Result: int64(4), Children: []any{}, DateDone: doneAt},
			want: `{"status": "SUCCESS", "result": 4, "traceback": null, "children": [], "date_done": "2026-11-23T21:40:09.631096+00:00", "task_id": "4a60e875-063d-421a-9572-9ac9b17bb5c3"}`,
		},
		{
			name: "extended success, the reference example",
			res: backends.Result{TaskID: testTaskID, Status: "SUCCESS", Result: int64(4), Children: []any{}, DateDone: doneAt,
				Name: "proj.add", Args: []any{int64(2), int64(2)}, Kwargs: map[string]any{}, Worker: "w1@vm", Retries: 0, Queue: "celery"},
			extended: true,
			want:     `{"status": "SUCCESS", "result": 4, "traceback": null, "children": [], "date_done": "2026-11-23T21:40:09.631096+00:00", "name": "proj.add", "args": [2, 2], "kwargs": {}, "worker": "w1@vm", "retries": 0, "queue": "celery", "task_id": "4a60e875-063d-421a-9572-9ac9b17bb5c3"}`,
		},
		{
			name: "extended fields are not written unless extended",
			res: backends.Result{TaskID: "t", Status: "SUCCESS", Result: nil, Children: []any{}, DateDone: doneAt,
				Name: "proj.add", Args: []any{int64(2)}, Worker: "w1@vm", Retries: 1, Queue: "celery"},
			want: `{"status": "SUCCESS", "result": null, "traceback": null, "children": [], "date_done": "2026-11-23T21:40:09.631096+00:00", "task_id": "t"}`,
		},
		{
			name: "group_id and parent_id when set",
			res: backends.Result{TaskID: "t", Status: "SUCCESS", Result: "ok", Children: []any{}, DateDone: doneAt,
				GroupID: "g-1", ParentID: "p-1"},
			want: `{"status": "SUCCESS", "result": "ok", "traceback": null, "children": [], "date_done": "2026-11-23T21:40:09.631096+00:00", "group_id": "g-1", "parent_id": "p-1", "task_id": "t"}`,
		},
		{
			name: "only parent_id",
			res:  backends.Result{TaskID: "t", Status: "SUCCESS", Children: []any{}, DateDone: doneAt, ParentID: "p-1"},
			want: `{"status": "SUCCESS", "result": null, "traceback": null, "children": [], "date_done": "2026-11-23T21:40:09.631096+00:00", "parent_id": "p-1", "task_id": "t"}`,
		},
		{
			name: "group and parent before extended fields",
			res: backends.Result{TaskID: "t", Status: "SUCCESS", Result: 1.0, Children: []any{}, DateDone: doneAt,
				GroupID: "g", ParentID: "p", Name: "n", Args: []any{"a"}, Kwargs: map[string]any{"b": int64(1), "a": nil},
				Worker: "go@h", Retries: 2, Queue: "q"},
			extended: true,
			want:     `{"status": "SUCCESS", "result": 1.0, "traceback": null, "children": [], "date_done": "2026-11-23T21:40:09.631096+00:00", "group_id": "g", "parent_id": "p", "name": "n", "args": ["a"], "kwargs": {"a": null, "b": 1}, "worker": "go@h", "retries": 2, "queue": "q", "task_id": "t"}`,
		},
		{
			name:     "extended without a request: nulls, empty args",
			res:      backends.Result{TaskID: "t", Status: "FAILURE", Result: backends.NotRegistered("x.y").Value(), Children: []any{}, DateDone: doneAt},
			extended: true,
			want:     `{"status": "FAILURE", "result": {"exc_message": ["x.y"], "exc_module": "celery.exceptions", "exc_type": "NotRegistered"}, "traceback": null, "children": [], "date_done": "2026-11-23T21:40:09.631096+00:00", "name": null, "args": [], "kwargs": {}, "worker": null, "retries": 0, "queue": null, "task_id": "t"}`,
		},
		{
			name: "started: date_done null",
			res: backends.Result{TaskID: "t", Status: "STARTED", Result: map[string]any{"pid": int64(12500), "hostname": "w1@vm"},
				Children: []any{}},
			want: `{"status": "STARTED", "result": {"hostname": "w1@vm", "pid": 12500}, "traceback": null, "children": [], "date_done": null, "task_id": "t"}`,
		},
		{
			name: "children null when nil",
			res:  backends.Result{TaskID: "t", Status: "REVOKED", Result: backends.TaskRevoked("revoked").Value(), DateDone: doneAt},
			want: `{"status": "REVOKED", "result": {"exc_message": ["revoked"], "exc_module": "celery.exceptions", "exc_type": "TaskRevokedError"}, "traceback": null, "children": null, "date_done": "2026-11-23T21:40:09.631096+00:00", "task_id": "t"}`,
		},
		{
			name: "children tuples",
			res: backends.Result{TaskID: "t", Status: "SUCCESS", DateDone: doneAt,
				Children: []any{[]any{[]any{"c-1", nil}, nil}}},
			want: `{"status": "SUCCESS", "result": null, "traceback": null, "children": [[["c-1", null], null]], "date_done": "2026-11-23T21:40:09.631096+00:00", "task_id": "t"}`,
		},
		{
			name: "failure with traceback",
			res: backends.Result{TaskID: "t", Status: "FAILURE", Result: backends.ExceptionInfo{Type: "ValueError", Args: []any{"bad"}}.Value(),
				Traceback: strPtr(tb), Children: []any{}, DateDone: doneAt},
			want: `{"status": "FAILURE", "result": {"exc_message": ["bad"], "exc_module": "builtins", "exc_type": "ValueError"}, "traceback": "Traceback (most recent call last):\n  File \"t.go\", line 1\n\tValueError: \"bad\" \\ x", "children": [], "date_done": "2026-11-23T21:40:09.631096+00:00", "task_id": "t"}`,
		},
		{
			name: "hard time limit",
			res: backends.Result{TaskID: "t", Status: "FAILURE", Result: backends.TimeLimitExceeded(5).Value(),
				Children: []any{}, DateDone: doneAt},
			want: `{"status": "FAILURE", "result": {"exc_message": [5], "exc_module": "billiard.exceptions", "exc_type": "TimeLimitExceeded"}, "traceback": null, "children": [], "date_done": "2026-11-23T21:40:09.631096+00:00", "task_id": "t"}`,
		},
		{
			name: "soft time limit",
			res: backends.Result{TaskID: "t", Status: "FAILURE", Result: backends.SoftTimeLimitExceeded().Value(),
				Children: []any{}, DateDone: doneAt},
			want: `{"status": "FAILURE", "result": {"exc_message": [], "exc_module": "billiard.exceptions", "exc_type": "SoftTimeLimitExceeded"}, "traceback": null, "children": [], "date_done": "2026-11-23T21:40:09.631096+00:00", "task_id": "t"}`,
		},
		{
			name: "retry with null exception",
			res:  backends.Result{TaskID: "t", Status: "RETRY", Result: nil, Children: []any{[]any{[]any{"t", nil}, nil}}},
			want: `{"status": "RETRY", "result": null, "traceback": null, "children": [[["t", null], null]], "date_done": null, "task_id": "t"}`,
		},
		{
			name: "exact big integer and float results",
			res:  backends.Result{TaskID: "t", Status: "SUCCESS", Result: []any{big70, json.Number("9007199254740993"), 4.0, 0.1, true}, Children: []any{}, DateDone: doneAt},
			want: `{"status": "SUCCESS", "result": [1180591620717411303424, 9007199254740993, 4.0, 0.1, true], "traceback": null, "children": [], "date_done": "2026-11-23T21:40:09.631096+00:00", "task_id": "t"}`,
		},
		{
			name: "custom state meta",
			res:  backends.Result{TaskID: "t", Status: "PROGRESS", Result: map[string]any{"current": int64(1), "total": int64(3)}, Children: []any{}},
			want: `{"status": "PROGRESS", "result": {"current": 1, "total": 3}, "traceback": null, "children": [], "date_done": null, "task_id": "t"}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.res.Encode(tc.extended)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if string(got) != tc.want {
				t.Fatalf("Encode =\n%s\nwant\n%s", got, tc.want)
			}
			if !json.Valid(got) {
				t.Fatalf("Encode wrote invalid JSON: %s", got)
			}
			// It must read back with the status and task id Python's
			// AsyncResult needs.
			var doc map[string]any
			if err := json.Unmarshal(got, &doc); err != nil {
				t.Fatal(err)
			}
			if doc["status"] != tc.res.Status || doc["task_id"] != tc.res.TaskID {
				t.Fatalf("decoded status/task_id = %v/%v", doc["status"], doc["task_id"])
			}
		})
	}
}

func TestResultDateDone(t *testing.T) {
	berlin := time.FixedZone("CET", 3600)
	tests := []struct {
		name string
		at   time.Time
		want string
	}{
		{"microseconds", doneAt, "2026-11-23T21:40:09.631096+00:00"},
		{"zero microseconds omitted", time.Date(2026, 11, 23, 21, 40, 9, 0, time.UTC), "2026-11-23T21:40:09+00:00"},
		{"below a microsecond omitted", time.Date(2026, 11, 23, 21, 40, 9, 999, time.UTC), "2026-11-23T21:40:09+00:00"},
		{"nanoseconds truncated", time.Date(2026, 11, 23, 21, 40, 9, 1999, time.UTC), "2026-11-23T21:40:09.000001+00:00"},
		{"leading zeros kept", time.Date(2026, 1, 2, 3, 4, 5, 5000, time.UTC), "2026-01-02T03:04:05.000005+00:00"},
		{"other zone written in UTC", time.Date(2026, 11, 23, 22, 40, 9, 631096000, berlin), "2026-11-23T21:40:09.631096+00:00"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := backends.Result{TaskID: "t", Status: "SUCCESS", Children: []any{}, DateDone: tc.at}
			b, err := r.Encode(false)
			if err != nil {
				t.Fatal(err)
			}
			var doc struct {
				DateDone *string `json:"date_done"`
			}
			if err := json.Unmarshal(b, &doc); err != nil {
				t.Fatal(err)
			}
			if doc.DateDone == nil || *doc.DateDone != tc.want {
				t.Fatalf("date_done = %v in %s, want %q", doc.DateDone, b, tc.want)
			}
			parsed, naive, err := protocol.ParseTime(*doc.DateDone)
			if err != nil || naive {
				t.Fatalf("ParseTime(%q) = %v, naive %v, %v", *doc.DateDone, parsed, naive, err)
			}
			if !parsed.Equal(tc.at.Truncate(time.Microsecond)) {
				t.Fatalf("date_done reads back as %v, want %v", parsed, tc.at)
			}
		})
	}
}

func TestResultEncodeError(t *testing.T) {
	for _, tc := range []struct {
		name     string
		res      backends.Result
		extended bool
	}{
		{"result", backends.Result{TaskID: "t", Status: "SUCCESS", Result: make(chan int)}, false},
		{"nested result", backends.Result{TaskID: "t", Status: "SUCCESS", Result: []any{map[string]any{"c": func() {}}}}, false},
		{"children", backends.Result{TaskID: "t", Status: "SUCCESS", Children: []any{make(chan int)}}, false},
		{"args", backends.Result{TaskID: "t", Status: "SUCCESS", Args: []any{make(chan int)}}, true},
		{"kwargs", backends.Result{TaskID: "t", Status: "SUCCESS", Kwargs: map[string]any{"c": make(chan int)}}, true},
		{"bad json.Number", backends.Result{TaskID: "t", Status: "SUCCESS", Result: json.Number("1x")}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if b, err := tc.res.Encode(tc.extended); err == nil {
				t.Fatalf("Encode = %s, want an error", b)
			}
		})
	}
}

func TestExceptionInfo(t *testing.T) {
	tests := []struct {
		name string
		info backends.ExceptionInfo
		want map[string]any
	}{
		{"builtin default module", backends.ExceptionInfo{Type: "KeyError", Args: []any{int64(7)}},
			map[string]any{"exc_type": "KeyError", "exc_message": []any{int64(7)}, "exc_module": "builtins"}},
		{"nil args are an empty list", backends.ExceptionInfo{Type: "ValueError"},
			map[string]any{"exc_type": "ValueError", "exc_message": []any{}, "exc_module": "builtins"}},
		{"explicit module", backends.ExceptionInfo{Type: "Custom", Module: "proj.errors", Args: []any{"a", "b"}},
			map[string]any{"exc_type": "Custom", "exc_message": []any{"a", "b"}, "exc_module": "proj.errors"}},
		{"NotRegistered", backends.NotRegistered("proj.missing"),
			map[string]any{"exc_type": "NotRegistered", "exc_message": []any{"proj.missing"}, "exc_module": "celery.exceptions"}},
		{"revoked", backends.TaskRevoked("terminated"),
			map[string]any{"exc_type": "TaskRevokedError", "exc_message": []any{"terminated"}, "exc_module": "celery.exceptions"}},
		{"hard limit int", backends.TimeLimitExceeded(5),
			map[string]any{"exc_type": "TimeLimitExceeded", "exc_message": []any{int64(5)}, "exc_module": "billiard.exceptions"}},
		{"hard limit fraction", backends.TimeLimitExceeded(2.5),
			map[string]any{"exc_type": "TimeLimitExceeded", "exc_message": []any{2.5}, "exc_module": "billiard.exceptions"}},
		{"soft limit", backends.SoftTimeLimitExceeded(),
			map[string]any{"exc_type": "SoftTimeLimitExceeded", "exc_message": []any{}, "exc_module": "billiard.exceptions"}},
		{"max retries", backends.MaxRetriesExceeded("Can't retry x[1] args:() kwargs:{}"),
			map[string]any{"exc_type": "MaxRetriesExceededError", "exc_message": []any{"Can't retry x[1] args:() kwargs:{}"}, "exc_module": "celery.exceptions"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.info.Value()
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Value() = %#v, want %#v", got, tc.want)
			}
		})
	}
	// exc_message of TimeLimitExceeded(5) must be written as the integer 5
	// (Python's billiard passes the limit as given), not 5.0.
	b, err := protocol.MarshalJSON(backends.TimeLimitExceeded(5).Value())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"exc_message": [5]`) {
		t.Fatalf("TimeLimitExceeded(5) encodes as %s, want exc_message [5]", b)
	}
	b, _ = protocol.MarshalJSON(backends.TimeLimitExceeded(2.5).Value())
	if !strings.Contains(string(b), `"exc_message": [2.5]`) {
		t.Fatalf("TimeLimitExceeded(2.5) encodes as %s, want exc_message [2.5]", b)
	}
}

func TestReady(t *testing.T) {
	for status, want := range map[string]bool{
		backends.StatusSuccess: true, backends.StatusFailure: true, backends.StatusRevoked: true,
		backends.StatusPending: false, backends.StatusStarted: false, backends.StatusRetry: false,
		"PROGRESS": false, "": false, "success": false,
	} {
		if got := backends.Ready(status); got != want {
			t.Errorf("Ready(%q) = %v, want %v", status, got, want)
		}
	}
}
