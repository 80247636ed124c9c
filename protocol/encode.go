package protocol

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// EncodeOptions choose the body encoding. The zero value is json,
// uncompressed.
type EncodeOptions struct {
	Serializer  string // "json" (default) or "msgpack"
	Compression string // "" or "zlib"
}

// Encode builds a protocol v2 delivery for m the way Celery 5.7's
// send_task does: every standard header present (null when unset), body
// [args, kwargs, embed]. Header values are plain Go values (nested maps as
// map[string]any); the transport converts them to its table type.
func Encode(m *Message, opts EncodeOptions) (*Envelope, error) {
	if m.ID == "" || m.Task == "" {
		return nil, fmt.Errorf("protocol: encode: a message needs a task name and an id")
	}
	ct, enc, err := ContentType(opts.Serializer)
	if err != nil {
		return nil, err
	}
	args := m.Args
	if args == nil {
		args = []any{}
	}
	kwargs := m.Kwargs
	if kwargs == nil {
		kwargs = map[string]any{}
	}
	var chord any
	if m.Chord != nil {
		chord = m.Chord.Value()
	}
	body, err := Marshal(opts.Serializer, []any{args, kwargs, map[string]any{
		"callbacks": signaturesValue(m.Callbacks),
		"errbacks":  signaturesValue(m.Errbacks),
		"chain":     signaturesValue(m.Chain),
		"chord":     chord,
	}})
	if err != nil {
		return nil, fmt.Errorf("protocol: encode task %s[%s]: %w", m.Task, m.ID, err)
	}

	h := make(map[string]any, 20+len(m.Headers))
	maps.Copy(h, m.Headers)
	rootID := m.RootID
	if rootID == "" {
		rootID = m.ID
	}
	argsRepr, kwargsRepr := m.ArgsRepr, m.KwargsRepr
	if argsRepr == "" {
		argsRepr = truncateRepr(PyRepr(tupleOf(args)))
	}
	if kwargsRepr == "" {
		kwargsRepr = truncateRepr(PyRepr(kwargs))
	}
	stamps := m.Stamps
	if stamps == nil {
		stamps = map[string]any{}
	}
	h["lang"] = "go"
	h["task"] = m.Task
	h["id"] = m.ID
	h["shadow"] = NilIfEmpty(m.Shadow)
	h["eta"] = timeHeader(m.ETA)
	h["expires"] = timeHeader(m.Expires)
	h["group"] = NilIfEmpty(m.Group)
	if m.GroupIndex != nil {
		h["group_index"] = int64(*m.GroupIndex)
	} else {
		h["group_index"] = nil
	}
	h["retries"] = int64(m.Retries)
	h["timelimit"] = []any{limitValue(m.TimeLimit.Hard), limitValue(m.TimeLimit.Soft)}
	h["root_id"] = rootID
	h["parent_id"] = NilIfEmpty(m.ParentID)
	h["argsrepr"] = argsRepr
	h["kwargsrepr"] = kwargsRepr
	h["origin"] = m.Origin
	h["ignore_result"] = m.IgnoreResult
	h["replaced_task_nesting"] = int64(m.ReplacedTaskNesting)
	if m.StampedHeaders != nil {
		sh := make([]any, len(m.StampedHeaders))
		for i, s := range m.StampedHeaders {
			sh[i] = s
		}
		h["stamped_headers"] = sh
	} else {
		h["stamped_headers"] = nil
	}
	h["stamps"] = stamps

	if opts.Compression != "" {
		name, out, err := Compress(opts.Compression, body)
		if err != nil {
			return nil, err
		}
		body = out
		if name != "" {
			h["compression"] = name
		}
	}
	deliveryMode := m.DeliveryMode
	if deliveryMode == 0 {
		deliveryMode = 2
	}
	corr := m.CorrelationID
	if corr == "" {
		corr = m.ID
	}
	return &Envelope{
		ContentType:     ct,
		ContentEncoding: enc,
		Headers:         h,
		CorrelationID:   corr,
		ReplyTo:         m.ReplyTo,
		DeliveryMode:    deliveryMode,
		Priority:        m.Priority,
		Expiration:      m.Expiration,
		Body:            body,
	}, nil
}

// NilIfEmpty is nil for "" (Python's None) and s otherwise.
func NilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func limitValue(f float64) any {
	if f <= 0 {
		return nil
	}
	if f == float64(int64(f)) {
		return int64(f)
	}
	return f
}

func timeHeader(t *time.Time) any {
	if t == nil {
		return nil
	}
	return FormatTime(*t)
}

type pyTuple []any

func tupleOf(a []any) pyTuple { return pyTuple(a) }

func truncateRepr(s string) string {
	const max = 1024
	if len(s) <= max {
		return s
	}
	return s[:max-3] + "..."
}

// PyRepr renders a value roughly as Python's repr() would, for the argsrepr
// and kwargsrepr headers that logs and Flower show.
func PyRepr(v any) string {
	var b strings.Builder
	pyRepr(&b, v, 0)
	return b.String()
}

func pyRepr(b *strings.Builder, v any, depth int) {
	if depth > 50 {
		b.WriteString("...")
		return
	}
	switch x := v.(type) {
	case nil:
		b.WriteString("None")
	case bool:
		if x {
			b.WriteString("True")
		} else {
			b.WriteString("False")
		}
	case string:
		b.WriteString(pyQuote(x))
	case pyTuple:
		b.WriteByte('(')
		for i, e := range x {
			if i > 0 {
				b.WriteString(", ")
			}
			pyRepr(b, e, depth+1)
		}
		if len(x) == 1 {
			b.WriteByte(',')
		}
		b.WriteByte(')')
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteString(", ")
			}
			pyRepr(b, e, depth+1)
		}
		b.WriteByte(']')
	case map[string]any:
		keys := slices.Sorted(maps.Keys(x))
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(pyQuote(k))
			b.WriteString(": ")
			pyRepr(b, x[k], depth+1)
		}
		b.WriteByte('}')
	case []byte:
		b.WriteString("b" + pyQuote(string(x)))
	case float64:
		b.Write(AppendPyFloat(nil, x))
	default:
		raw, err := MarshalJSON(v)
		if err != nil {
			fmt.Fprint(b, v)
			return
		}
		b.Write(raw)
	}
}

func pyQuote(s string) string {
	q := strconv.Quote(s)
	if !strings.Contains(s, "'") {
		q = "'" + strings.ReplaceAll(q[1:len(q)-1], `\"`, `"`) + "'"
	}
	return q
}
