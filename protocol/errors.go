package protocol

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors for decisions made on a decode failure.
var (
	// ErrNotAccepted: the content type is known but not in the accept list
	// (pickle and yaml by default).
	ErrNotAccepted = errors.New("content type not accepted")
	// ErrUnknownContentType: no serializer for this content type.
	ErrUnknownContentType = errors.New("unknown content type")
	// ErrUnknownCompression: the compression header names no known codec.
	ErrUnknownCompression = errors.New("unknown compression")
	// ErrTooLarge: the body is above DecodeOptions.MaxBodySize.
	ErrTooLarge = errors.New("message too large")
	// ErrMalformed: the message does not have Celery's shape.
	ErrMalformed = errors.New("malformed task message")
)

// DecodeError says why a delivery could not become a task Message. TaskID
// and TaskName are filled when they were readable, so the worker can still
// record a FAILURE for the task.
type DecodeError struct {
	Reason   string
	TaskID   string
	TaskName string
	Err      error
}

func (e *DecodeError) Error() string {
	s := "protocol: " + e.Reason
	if e.TaskName != "" || e.TaskID != "" {
		s += fmt.Sprintf(" (task %s[%s])", e.TaskName, e.TaskID)
	}
	if e.Err != nil && !errors.Is(e.Err, ErrMalformed) && !errors.Is(e.Err, ErrTooLarge) {
		// The wrapped error may be this package's own ("protocol: invalid
		// JSON: ..."): the line names the package once.
		s += ": " + strings.TrimPrefix(e.Err.Error(), "protocol: ")
	}
	return s
}

func (e *DecodeError) Unwrap() error { return e.Err }

func malformed(format string, a ...any) *DecodeError {
	return &DecodeError{Reason: fmt.Sprintf(format, a...), Err: ErrMalformed}
}
