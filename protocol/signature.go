package protocol

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/big"
	"time"
)

// Signature is a canvas signature as Celery serializes it (a dict with
// task, args, kwargs, options, subtask_type, immutable).
type Signature struct {
	Task        string
	Args        []any
	Kwargs      map[string]any
	Options     map[string]any
	SubtaskType string // "", "chain", "group", "chord", "chunks", "xmap", "xstarmap"
	Immutable   bool
	// Extra keeps keys this package does not model (e.g. legacy chord_size),
	// so re-encoding loses nothing.
	Extra map[string]any
}

// TaskID is options.task_id, the id Celery froze for this signature.
func (s *Signature) TaskID() string {
	id, _ := s.Options["task_id"].(string)
	return id
}

// SignatureFromValue reads a decoded signature dict.
func SignatureFromValue(v any) (Signature, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return Signature{}, fmt.Errorf("signature is %s, want a dict", PyTypeName(v))
	}
	var s Signature
	for k, val := range m {
		var ok bool
		switch k {
		case "task":
			s.Task, ok = val.(string)
		case "args":
			if val == nil {
				ok = true
			} else {
				s.Args, ok = val.([]any)
			}
		case "kwargs":
			if val == nil {
				ok = true
			} else {
				s.Kwargs, ok = val.(map[string]any)
			}
		case "options":
			if val == nil {
				ok = true
			} else {
				s.Options, ok = val.(map[string]any)
			}
		case "subtask_type":
			if val == nil {
				ok = true
			} else {
				s.SubtaskType, ok = val.(string)
			}
		case "immutable":
			if val == nil {
				ok = true
			} else {
				s.Immutable, ok = val.(bool)
			}
		default:
			if s.Extra == nil {
				s.Extra = map[string]any{}
			}
			s.Extra[k] = val
			ok = true
		}
		if !ok {
			return Signature{}, fmt.Errorf("signature field %q is %s", k, PyTypeName(val))
		}
	}
	if s.Task == "" {
		return Signature{}, fmt.Errorf("signature has no task name")
	}
	return s, nil
}

func signaturesFromValue(v any) ([]Signature, error) {
	if v == nil {
		return nil, nil
	}
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("want a list of signatures, got %s", PyTypeName(v))
	}
	out := make([]Signature, 0, len(list))
	for _, e := range list {
		s, err := SignatureFromValue(e)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// Value is the dict form Celery reads back.
func (s Signature) Value() map[string]any {
	m := make(map[string]any, 6+len(s.Extra))
	maps.Copy(m, s.Extra)
	args := s.Args
	if args == nil {
		args = []any{}
	}
	kwargs := s.Kwargs
	if kwargs == nil {
		kwargs = map[string]any{}
	}
	opts := s.Options
	if opts == nil {
		opts = map[string]any{}
	}
	m["task"] = s.Task
	m["args"] = args
	m["kwargs"] = kwargs
	m["options"] = opts
	if s.SubtaskType == "" {
		m["subtask_type"] = nil
	} else {
		m["subtask_type"] = s.SubtaskType
	}
	m["immutable"] = s.Immutable
	return m
}

func signaturesValue(sigs []Signature) any {
	if sigs == nil {
		return nil
	}
	out := make([]any, len(sigs))
	for i, s := range sigs {
		out[i] = s.Value()
	}
	return out
}

// PyTypeName names a value of the value model the way Python would name
// its type (int, float, str, list, dict, datetime, ...).
func PyTypeName(v any) string {
	switch v.(type) {
	case nil:
		return "NoneType"
	case bool:
		return "bool"
	case string:
		return "str"
	case []any:
		return "list"
	case map[string]any:
		return "dict"
	case []byte:
		return "bytes"
	case float32, float64:
		return "float"
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, *big.Int:
		return "int"
	case DateTime, time.Time:
		return "datetime"
	case Date:
		return "date"
	case TimeOfDay:
		return "time"
	case Decimal:
		return "Decimal"
	case UUID:
		return "UUID"
	}
	if n, ok := v.(json.Number); ok {
		if isIntegerText(string(n)) {
			return "int"
		}
		return "float"
	}
	return fmt.Sprintf("%T", v)
}
