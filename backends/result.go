package backends

import (
	"strconv"
	"time"

	"github.com/celeryworker/gocelery/protocol"
)

// Task states as Celery names them.
const (
	StatusPending = "PENDING"
	StatusStarted = "STARTED"
	StatusSuccess = "SUCCESS"
	StatusFailure = "FAILURE"
	StatusRetry   = "RETRY"
	StatusRevoked = "REVOKED"
)

// Ready reports whether status is final (SUCCESS, FAILURE, REVOKED).
func Ready(status string) bool {
	return status == StatusSuccess || status == StatusFailure || status == StatusRevoked
}

// Result is one task's state document.
type Result struct {
	TaskID    string
	Status    string
	Result    any
	Traceback *string
	// Children are result tuples of tasks sent while running; nil is
	// written as null.
	Children []any
	// DateDone is set for ready states; zero writes null.
	DateDone time.Time
	GroupID  string
	ParentID string

	// Extended fields, written when the backend is Extended.
	Name    string
	Args    []any
	Kwargs  map[string]any
	Worker  string
	Retries int
	Queue   string
}

// ExceptionInfo is an exception as Celery stores it.
type ExceptionInfo struct {
	Type   string
	Module string
	Args   []any
}

// Value is the stored form: exc_type, exc_message, exc_module.
func (e ExceptionInfo) Value() map[string]any {
	args := e.Args
	if args == nil {
		args = []any{}
	}
	module := e.Module
	if module == "" {
		module = "builtins"
	}
	return map[string]any{"exc_type": e.Type, "exc_message": args, "exc_module": module}
}

// NotRegistered is Celery's error for an unknown task name.
func NotRegistered(name string) ExceptionInfo {
	return ExceptionInfo{Type: "NotRegistered", Module: "celery.exceptions", Args: []any{name}}
}

// TaskRevoked is the REVOKED result ("revoked", "expired", "terminated").
func TaskRevoked(reason string) ExceptionInfo {
	return ExceptionInfo{Type: "TaskRevokedError", Module: "celery.exceptions", Args: []any{reason}}
}

// TimeLimitExceeded is the hard time limit failure, as billiard raises it.
func TimeLimitExceeded(seconds float64) ExceptionInfo {
	var limit any = seconds
	if seconds == float64(int64(seconds)) {
		limit = int64(seconds)
	}
	return ExceptionInfo{Type: "TimeLimitExceeded", Module: "billiard.exceptions", Args: []any{limit}}
}

// SoftTimeLimitExceeded is the soft time limit failure, as billiard
// raises it (celery.exceptions re-exports the same class).
func SoftTimeLimitExceeded() ExceptionInfo {
	return ExceptionInfo{Type: "SoftTimeLimitExceeded", Module: "billiard.exceptions", Args: []any{}}
}

// MaxRetriesExceeded is the failure of a retry past max_retries without
// an exception of its own.
func MaxRetriesExceeded(msg string) ExceptionInfo {
	return ExceptionInfo{Type: "MaxRetriesExceededError", Module: "celery.exceptions", Args: []any{msg}}
}

// Encode writes r as Celery's JSON document, fields in Celery's order.
func (r *Result) Encode(extended bool) ([]byte, error) {
	b := make([]byte, 0, 256)
	b = append(b, `{"status": `...)
	b = strconv.AppendQuote(b, r.Status) // status names are ASCII
	b = append(b, `, "result": `...)
	var err error
	if b, err = protocol.AppendJSON(b, r.Result); err != nil {
		return nil, err
	}
	b = append(b, `, "traceback": `...)
	if r.Traceback == nil {
		b = append(b, "null"...)
	} else if b, err = protocol.AppendJSON(b, *r.Traceback); err != nil {
		return nil, err
	}
	b = append(b, `, "children": `...)
	if r.Children == nil {
		b = append(b, "null"...)
	} else if len(r.Children) == 0 {
		b = append(b, "[]"...)
	} else if b, err = protocol.AppendJSON(b, r.Children); err != nil {
		return nil, err
	}
	b = append(b, `, "date_done": `...)
	if r.DateDone.IsZero() {
		b = append(b, "null"...)
	} else {
		b = append(b, '"')
		b = protocol.AppendTime(b, r.DateDone.UTC())
		b = append(b, '"')
	}
	if r.GroupID != "" {
		b = append(b, `, "group_id": `...)
		b = protocol.AppendJSONString(b, r.GroupID)
	}
	if r.ParentID != "" {
		b = append(b, `, "parent_id": `...)
		b = protocol.AppendJSONString(b, r.ParentID)
	}
	if extended {
		b = append(b, `, "name": `...)
		b, _ = protocol.AppendJSON(b, protocol.NilIfEmpty(r.Name))
		b = append(b, `, "args": `...)
		args := r.Args
		if args == nil {
			args = []any{}
		}
		if b, err = protocol.AppendJSON(b, args); err != nil {
			return nil, err
		}
		b = append(b, `, "kwargs": `...)
		kwargs := r.Kwargs
		if kwargs == nil {
			kwargs = map[string]any{}
		}
		if b, err = protocol.AppendJSON(b, kwargs); err != nil {
			return nil, err
		}
		b = append(b, `, "worker": `...)
		b, _ = protocol.AppendJSON(b, protocol.NilIfEmpty(r.Worker))
		b = append(b, `, "retries": `...)
		b = strconv.AppendInt(b, int64(r.Retries), 10)
		b = append(b, `, "queue": `...)
		b, _ = protocol.AppendJSON(b, protocol.NilIfEmpty(r.Queue))
	}
	b = append(b, `, "task_id": `...)
	b = protocol.AppendJSONString(b, r.TaskID)
	b = append(b, '}')
	return b, nil
}
