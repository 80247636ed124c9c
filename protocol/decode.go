package protocol

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// DecodeOptions tunes Decode. The zero value accepts json and msgpack.
type DecodeOptions struct {
	// Accept lists accepted serializers by name or content type; nil means
	// DefaultAccept.
	Accept []string
	// MaxBodySize, when above 0, refuses a body larger than this many
	// bytes, before and after decompression (ErrTooLarge).
	MaxBodySize int
}

// Decode turns a delivery into a Message. Protocol v2 is recognised by a
// "task" header, as Celery does; otherwise the body is read as a v1 dict.
// Errors are *DecodeError, carrying the task id and name when readable.
func Decode(env *Envelope, opts DecodeOptions) (*Message, error) {
	m := &Message{
		ContentType:     env.ContentType,
		ContentEncoding: env.ContentEncoding,
		CorrelationID:   env.CorrelationID,
		ReplyTo:         env.ReplyTo,
		DeliveryMode:    env.DeliveryMode,
		Priority:        env.Priority,
		Expiration:      env.Expiration,
	}
	name, _ := env.Headers["task"].(string)
	if name != "" {
		m.Protocol = 2
		m.Task = name
		m.ID, _ = env.Headers["id"].(string)
	} else {
		m.Protocol = 1
	}
	fail := func(err error) (*Message, error) {
		de, ok := err.(*DecodeError)
		if !ok {
			// The inner error already names the package.
			de = &DecodeError{Reason: strings.TrimPrefix(err.Error(), "protocol: "), Err: ErrMalformed}
		}
		if de.TaskID == "" {
			de.TaskID = m.ID
		}
		if de.TaskName == "" {
			de.TaskName = m.Task
		}
		return nil, de
	}
	if m.Protocol == 2 && m.ID == "" {
		return fail(malformed("message has a task header but no id header"))
	}

	body := env.Body
	if err := checkSize(body, opts.MaxBodySize, ""); err != nil {
		return fail(err)
	}
	if c, ok := env.Headers["compression"]; ok && c != nil {
		cs, ok := c.(string)
		if !ok {
			return fail(malformed("compression header is %s, want str", PyTypeName(c)))
		}
		var err error
		if body, err = Decompress(cs, body); err != nil {
			return fail(err)
		}
		if err := checkSize(body, opts.MaxBodySize, "decompressed "); err != nil {
			return fail(err)
		}
		m.Compression = cs
	}
	if len(body) == 0 {
		return fail(malformed("empty body"))
	}
	payload, err := Unmarshal(env.ContentType, body, opts.Accept)
	if err != nil {
		return fail(err)
	}

	if m.Protocol == 2 {
		if err := m.readV2Headers(env.Headers); err != nil {
			return fail(err)
		}
		if err := m.readV2Body(payload); err != nil {
			return fail(err)
		}
		return m, nil
	}
	if err := m.readV1(payload, env.Headers); err != nil {
		return fail(err)
	}
	return m, nil
}

func (m *Message) readV2Headers(h map[string]any) error {
	var err error
	for k, v := range h {
		switch k {
		case "task", "id", "compression":
		case "lang":
			m.Lang, err = optString(k, v)
		case "shadow":
			m.Shadow, err = optString(k, v)
		case "root_id":
			m.RootID, err = optString(k, v)
		case "parent_id":
			m.ParentID, err = optString(k, v)
		case "group":
			m.Group, err = optString(k, v)
		case "group_index":
			m.GroupIndex, err = optIntPtr(k, v)
		case "retries":
			m.Retries, err = optInt(k, v)
		case "eta":
			m.ETA, err = optTime(k, v)
		case "expires":
			m.Expires, err = optTime(k, v)
		case "timelimit":
			m.TimeLimit, err = readTimeLimit(v)
		case "argsrepr":
			m.ArgsRepr, err = optString(k, v)
		case "kwargsrepr":
			m.KwargsRepr, err = optString(k, v)
		case "origin":
			m.Origin, err = optString(k, v)
		case "ignore_result":
			m.IgnoreResult, err = optBool(k, v)
		case "replaced_task_nesting":
			m.ReplacedTaskNesting, err = optInt(k, v)
		case "stamped_headers":
			m.StampedHeaders, err = optStrings(k, v)
		case "stamps":
			if v != nil {
				s, ok := v.(map[string]any)
				if !ok {
					err = malformed("header stamps is %s, want dict", PyTypeName(v))
				}
				m.Stamps = s
			}
		default:
			if m.Headers == nil {
				m.Headers = make(map[string]any)
			}
			m.Headers[k] = v
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (m *Message) readV2Body(payload any) error {
	switch b := payload.(type) {
	case []any:
		if len(b) != 3 {
			return malformed("body is a list of %d items, want [args, kwargs, embed]", len(b))
		}
		if err := m.setArgs(b[0], b[1]); err != nil {
			return err
		}
		if b[2] == nil {
			return nil
		}
		embed, ok := b[2].(map[string]any)
		if !ok {
			return malformed("embed is %s, want dict", PyTypeName(b[2]))
		}
		return m.readEmbed(embed)
	case map[string]any:
		// A "hybrid" message: v2 headers with a v1-style body.
		if err := m.setArgs(b["args"], b["kwargs"]); err != nil {
			return err
		}
		return m.readEmbed(b)
	}
	return malformed("body is %s, want [args, kwargs, embed]", PyTypeName(payload))
}

func (m *Message) setArgs(args, kwargs any) error {
	if args != nil {
		a, ok := args.([]any)
		if !ok {
			return malformed("args is %s, want list", PyTypeName(args))
		}
		m.Args = a
	}
	if kwargs != nil {
		k, ok := kwargs.(map[string]any)
		if !ok {
			return malformed("kwargs is %s, want dict", PyTypeName(kwargs))
		}
		m.Kwargs = k
	}
	if m.Args == nil {
		m.Args = []any{}
	}
	if m.Kwargs == nil {
		m.Kwargs = map[string]any{}
	}
	return nil
}

func (m *Message) readEmbed(e map[string]any) error {
	var err error
	if m.Callbacks, err = signaturesFromValue(e["callbacks"]); err != nil {
		return malformed("callbacks: %v", err)
	}
	if m.Errbacks, err = signaturesFromValue(e["errbacks"]); err != nil {
		return malformed("errbacks: %v", err)
	}
	if m.Chain, err = signaturesFromValue(e["chain"]); err != nil {
		return malformed("chain: %v", err)
	}
	if c := e["chord"]; c != nil {
		s, err := SignatureFromValue(c)
		if err != nil {
			return malformed("chord: %v", err)
		}
		m.Chord = &s
	}
	return nil
}

// readV1 reads a protocol v1 body: the whole request as a dict.
func (m *Message) readV1(payload any, headers map[string]any) error {
	b, ok := payload.(map[string]any)
	if !ok {
		return malformed("message has no task header and its body is %s, not a protocol v1 dict", PyTypeName(payload))
	}
	var err error
	if m.Task, err = optString("task", b["task"]); err != nil {
		return err
	}
	if m.ID, err = optString("id", b["id"]); err != nil {
		return err
	}
	if m.Task == "" {
		return malformed("protocol v1 body has no task name")
	}
	if m.ID == "" {
		return malformed("protocol v1 body has no id")
	}
	if err := m.setArgs(b["args"], b["kwargs"]); err != nil {
		return err
	}
	if m.Retries, err = optInt("retries", b["retries"]); err != nil {
		return err
	}
	if m.ETA, err = optTime("eta", b["eta"]); err != nil {
		return err
	}
	if m.Expires, err = optTime("expires", b["expires"]); err != nil {
		return err
	}
	group := b["group"]
	if group == nil {
		group = b["taskset"]
	}
	if m.Group, err = optString("group", group); err != nil {
		return err
	}
	if m.GroupIndex, err = optIntPtr("group_index", b["group_index"]); err != nil {
		return err
	}
	if m.TimeLimit, err = readTimeLimit(b["timelimit"]); err != nil {
		return err
	}
	if m.Callbacks, err = signaturesFromValue(b["callbacks"]); err != nil {
		return malformed("callbacks: %v", err)
	}
	if m.Errbacks, err = signaturesFromValue(b["errbacks"]); err != nil {
		return malformed("errbacks: %v", err)
	}
	if c := b["chord"]; c != nil {
		s, err := SignatureFromValue(c)
		if err != nil {
			return malformed("chord: %v", err)
		}
		m.Chord = &s
	}
	m.RootID = m.ID
	for k, v := range headers {
		if k == "compression" {
			// Already applied to the body (m.Compression); keeping it would
			// make a re-encoded, uncompressed message claim compression.
			continue
		}
		if m.Headers == nil {
			m.Headers = make(map[string]any)
		}
		m.Headers[k] = v
	}
	return nil
}

func optString(name string, v any) (string, error) {
	switch s := v.(type) {
	case nil:
		return "", nil
	case string:
		return s, nil
	case []byte:
		return string(s), nil
	}
	return "", malformed("%s is %s, want str", name, PyTypeName(v))
}

func optBool(name string, v any) (bool, error) {
	switch b := v.(type) {
	case nil:
		return false, nil
	case bool:
		return b, nil
	}
	return false, malformed("%s is %s, want bool", name, PyTypeName(v))
}

// Int reads an integer as the decoders give one: a Go integer type (msgpack,
// AMQP tables) or a json.Number holding an integer. Floats are not
// integers here, even whole ones.
func Int(v any) (int64, bool) {
	switch n := v.(type) {
	case int:
		return int64(n), true
	case int8:
		return int64(n), true
	case int16:
		return int64(n), true
	case int32:
		return int64(n), true
	case int64:
		return n, true
	case uint8:
		return int64(n), true
	case uint16:
		return int64(n), true
	case uint32:
		return int64(n), true
	case uint64:
		if n <= math.MaxInt64 {
			return int64(n), true
		}
	case json.Number:
		i, err := strconv.ParseInt(string(n), 10, 64)
		return i, err == nil
	}
	return 0, false
}

// toInt64 is Int, and also takes a whole float64 that is exact as a float.
func toInt64(v any) (int64, bool) {
	if n, ok := v.(float64); ok {
		if n == math.Trunc(n) && math.Abs(n) < 1<<53 {
			return int64(n), true
		}
		return 0, false
	}
	return Int(v)
}

func toFloat64(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case float32:
		return float64(n), true
	case json.Number:
		f, err := strconv.ParseFloat(string(n), 64)
		return f, err == nil
	}
	if i, ok := toInt64(v); ok {
		return float64(i), true
	}
	return 0, false
}

func optInt(name string, v any) (int, error) {
	if v == nil {
		return 0, nil
	}
	i, ok := toInt64(v)
	if !ok || i < math.MinInt32 || i > math.MaxInt32 {
		return 0, malformed("%s is %s %v, want int", name, PyTypeName(v), v)
	}
	return int(i), nil
}

func optIntPtr(name string, v any) (*int, error) {
	if v == nil {
		return nil, nil
	}
	i, err := optInt(name, v)
	if err != nil {
		return nil, err
	}
	return &i, nil
}

func optStrings(name string, v any) ([]string, error) {
	if v == nil {
		return nil, nil
	}
	list, ok := v.([]any)
	if !ok {
		return nil, malformed("%s is %s, want list", name, PyTypeName(v))
	}
	out := make([]string, 0, len(list))
	for _, e := range list {
		s, ok := e.(string)
		if !ok {
			return nil, malformed("%s holds %s, want str", name, PyTypeName(e))
		}
		out = append(out, s)
	}
	return out, nil
}

func optTime(name string, v any) (*time.Time, error) {
	switch t := v.(type) {
	case nil:
		return nil, nil
	case string:
		if t == "" {
			return nil, nil
		}
		tm, _, err := ParseTime(t)
		if err != nil {
			return nil, &DecodeError{Reason: fmt.Sprintf("%s %q is not an ISO-8601 time", name, t), Err: ErrMalformed}
		}
		return &tm, nil
	case time.Time:
		return &t, nil
	case DateTime:
		return &t.Time, nil
	}
	return nil, malformed("%s is %s, want an ISO-8601 str", name, PyTypeName(v))
}

func readTimeLimit(v any) (TimeLimit, error) {
	if v == nil {
		return TimeLimit{}, nil
	}
	list, ok := v.([]any)
	if !ok || len(list) != 2 {
		return TimeLimit{}, malformed("timelimit is %v, want [hard, soft]", v)
	}
	var out [2]float64
	for i, e := range list {
		if e == nil {
			continue
		}
		f, ok := toFloat64(e)
		if !ok || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
			return TimeLimit{}, malformed("timelimit holds %v, want a number of seconds", e)
		}
		out[i] = f
	}
	return TimeLimit{Hard: out[0], Soft: out[1]}, nil
}

// checkSize refuses a body above limit (0: no limit), naming the limit.
func checkSize(body []byte, limit int, what string) error {
	if limit <= 0 || len(body) <= limit {
		return nil
	}
	return &DecodeError{Reason: fmt.Sprintf("%smessage body of %d bytes is larger than the limit of %d bytes (--max-message-size)", what, len(body), limit), Err: ErrTooLarge}
}
