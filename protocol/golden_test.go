package protocol_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/protocol"
)

// The golden files in ../testdata/golden are task messages captured from real
// Python Celery 5.7 producers by interop/capture_golden.py: the AMQP
// properties, application headers and body bytes exactly as published, plus
// the fields the decoder must produce ("expect"), computed in Python from what
// the producer was asked to send.

type goldenFile struct {
	Name        string         `json:"name"`
	Description string         `json:"description"`
	Properties  goldenProps    `json:"properties"`
	Headers     map[string]any `json:"headers"`
	BodyBase64  string         `json:"body_base64"`
	Expect      map[string]any `json:"expect"`
}

type goldenProps struct {
	ContentType     *string      `json:"content_type"`
	ContentEncoding *string      `json:"content_encoding"`
	CorrelationID   *string      `json:"correlation_id"`
	ReplyTo         *string      `json:"reply_to"`
	DeliveryMode    *json.Number `json:"delivery_mode"`
	Priority        *json.Number `json:"priority"`
	Expiration      *string      `json:"expiration"`
}

func loadGolden(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "testdata", "golden", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no golden files in ../testdata/golden; run .venv/bin/python interop/capture_golden.py")
	}
	sort.Strings(files)
	return files
}

func readGolden(t *testing.T, path string) *goldenFile {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var g goldenFile
	if err := dec.Decode(&g); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if g.Expect == nil {
		t.Fatalf("%s: no expect object", path)
	}
	return &g
}

// amqpValue turns a header value decoded from JSON (with UseNumber) into
// what the AMQP layer hands the protocol: integers as int64, floats as
// float64, tables as map[string]any, arrays as []any.
func amqpValue(t *testing.T, v any) any {
	switch x := v.(type) {
	case json.Number:
		s := string(x)
		if isIntText(s) {
			i, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				t.Fatalf("header integer %s does not fit an AMQP long-long: %v", s, err)
			}
			return i
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("header number %q: %v", s, err)
		}
		return f
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = amqpValue(t, e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = amqpValue(t, e)
		}
		return out
	}
	return v
}

func amqpHeaders(t *testing.T, h map[string]any) map[string]any {
	if h == nil {
		return nil
	}
	return amqpValue(t, h).(map[string]any)
}

func propUint8(t *testing.T, name string, n *json.Number) uint8 {
	if n == nil {
		return 0
	}
	i, err := strconv.ParseUint(string(*n), 10, 8)
	if err != nil {
		t.Fatalf("property %s = %s: %v", name, *n, err)
	}
	return uint8(i)
}

func strOr(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func (g *goldenFile) envelope(t *testing.T) *protocol.Envelope {
	body, err := base64.StdEncoding.DecodeString(g.BodyBase64)
	if err != nil {
		t.Fatalf("body_base64: %v", err)
	}
	p := g.Properties
	return &protocol.Envelope{
		ContentType:     strOr(p.ContentType),
		ContentEncoding: strOr(p.ContentEncoding),
		Headers:         amqpHeaders(t, g.Headers),
		CorrelationID:   strOr(p.CorrelationID),
		ReplyTo:         strOr(p.ReplyTo),
		DeliveryMode:    propUint8(t, "delivery_mode", p.DeliveryMode),
		Priority:        propUint8(t, "priority", p.Priority),
		Expiration:      strOr(p.Expiration),
		Body:            body,
	}
}

func TestGolden(t *testing.T) {
	for _, path := range loadGolden(t) {
		name := strings.TrimSuffix(filepath.Base(path), ".json")
		t.Run(name, func(t *testing.T) {
			g := readGolden(t, path)
			if g.Name != name {
				t.Errorf("file %s has name %q", path, g.Name)
			}
			env := g.envelope(t)
			m, err := protocol.Decode(env, protocol.DecodeOptions{})
			if err != nil {
				t.Fatalf("%s: Decode: %v", path, err)
			}
			for _, p := range checkExpect(m, g.Expect) {
				t.Errorf("%s: %s", path, p)
			}
			if t.Failed() {
				return
			}
			roundTrip(t, path, m, g)
		})
	}
}

// roundTrip re-encodes the decoded message with each serializer, with and
// without the file's compression, and decodes again: every expected field
// must survive.
func roundTrip(t *testing.T, path string, m *protocol.Message, g *goldenFile) {
	compressions := []string{""}
	if c, _ := g.Expect["compression"].(string); c != "" {
		compressions = append(compressions, c)
	}
	for _, ser := range []string{"json", "msgpack"} {
		for _, comp := range compressions {
			label := fmt.Sprintf("%s: re-encoded as %s compression=%q", path, ser, comp)
			env, err := protocol.Encode(m, protocol.EncodeOptions{Serializer: ser, Compression: comp})
			if err != nil {
				switch {
				case ser == "msgpack" && exceeds64Bits(g.Expect["args"], g.Expect["kwargs"]):
					// msgpack has no integers beyond 64 bits: refusing is right.
					if !strings.Contains(err.Error(), "64 bits") {
						t.Errorf("%s: Encode error %v, want a 64-bit overflow error", label, err)
					}
				case comp == protocol.CompressionBzip2 && errors.Is(err, protocol.ErrUnknownCompression):
					// Go's standard library decodes bzip2 but cannot write it.
				default:
					t.Errorf("%s: Encode: %v", label, err)
				}
				continue
			}
			// Send the headers through JSON and back as the AMQP layer would
			// hand them over, so nothing Go-specific leaks through.
			raw, err := json.Marshal(env.Headers)
			if err != nil {
				t.Fatalf("%s: headers do not marshal: %v", label, err)
			}
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.UseNumber()
			var h map[string]any
			if err := dec.Decode(&h); err != nil {
				t.Fatal(err)
			}
			env.Headers = amqpHeaders(t, h)
			m2, err := protocol.Decode(env, protocol.DecodeOptions{})
			if err != nil {
				t.Errorf("%s: Decode: %v", label, err)
				continue
			}
			want := make(map[string]any, len(g.Expect))
			for k, v := range g.Expect {
				want[k] = v
			}
			want["protocol"] = json.Number("2")
			if ser == "msgpack" {
				want["content_type"] = protocol.ContentTypeMsgpack
			} else {
				want["content_type"] = protocol.ContentTypeJSON
			}
			if comp == "" {
				want["compression"] = nil
			}
			if _, ok := want["root_id"]; !ok {
				// Protocol v1 has no root id; a re-encoded v1 message is its own root.
				want["root_id"] = g.Expect["id"]
			}
			for _, p := range checkExpect(m2, want) {
				t.Errorf("%s: %s", label, p)
			}
		}
	}
}

func exceeds64Bits(vs ...any) bool {
	lo := new(big.Int).SetInt64(math.MinInt64)
	hi := new(big.Int).SetUint64(math.MaxUint64)
	var walk func(v any) bool
	walk = func(v any) bool {
		switch x := v.(type) {
		case json.Number:
			if isIntText(string(x)) {
				n, ok := new(big.Int).SetString(string(x), 10)
				return !ok || n.Cmp(lo) < 0 || n.Cmp(hi) > 0
			}
		case []any:
			return slices.ContainsFunc(x, walk)
		case map[string]any:
			for _, e := range x {
				if walk(e) {
					return true
				}
			}
		}
		return false
	}
	return slices.ContainsFunc(vs, walk)
}

// checkExpect compares every expect field with the decoded message and
// returns one line per mismatch. Unknown expect keys are reported too, so a
// field the capture script records is never silently ignored.
func checkExpect(m *protocol.Message, expect map[string]any) []string {
	var problems []string
	bad := func(field string, got, want any) {
		problems = append(problems, fmt.Sprintf("field %s: got %v, want %v", field, got, want))
	}
	keys := make([]string, 0, len(expect))
	for k := range expect {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		want := expect[k]
		switch k {
		case "protocol":
			if w := expectInt(want); m.Protocol != w {
				bad(k, m.Protocol, w)
			}
		case "task":
			checkStr(k, m.Task, want, bad)
		case "id":
			checkStr(k, m.ID, want, bad)
		case "root_id":
			checkStr(k, m.RootID, want, bad)
		case "parent_id":
			checkStr(k, m.ParentID, want, bad)
		case "group":
			checkStr(k, m.Group, want, bad)
		case "compression":
			checkStr(k, m.Compression, want, bad)
		case "content_type":
			checkStr(k, m.ContentType, want, bad)
		case "expiration":
			checkStr(k, m.Expiration, want, bad)
		case "group_index":
			switch {
			case want == nil && m.GroupIndex != nil:
				bad(k, *m.GroupIndex, "null")
			case want != nil && m.GroupIndex == nil:
				bad(k, "nil", want)
			case want != nil && *m.GroupIndex != expectInt(want):
				bad(k, *m.GroupIndex, want)
			}
		case "retries":
			if w := expectInt(want); m.Retries != w {
				bad(k, m.Retries, w)
			}
		case "priority":
			w := 0
			if want != nil {
				w = expectInt(want)
			}
			if int(m.Priority) != w {
				bad(k, m.Priority, want)
			}
		case "ignore_result":
			if w, _ := want.(bool); m.IgnoreResult != w {
				bad(k, m.IgnoreResult, want)
			}
		case "args":
			if d := diffValue(k, m.Args, want); d != "" {
				problems = append(problems, d)
			}
		case "kwargs":
			if d := diffValue(k, m.Kwargs, want); d != "" {
				problems = append(problems, d)
			}
		case "eta_unix":
			checkTime(k, m.ETA, want, bad)
		case "expires_unix":
			checkTime(k, m.Expires, want, bad)
		case "timelimit":
			list, _ := want.([]any)
			if len(list) != 2 {
				bad(k, m.TimeLimit, fmt.Sprintf("malformed expect %v", want))
				break
			}
			w := [2]float64{expectFloat(list[0]), expectFloat(list[1])}
			if m.TimeLimit.Hard != w[0] || m.TimeLimit.Soft != w[1] {
				bad(k, fmt.Sprintf("[%v %v]", m.TimeLimit.Hard, m.TimeLimit.Soft), fmt.Sprintf("%v (null = 0)", list))
			}
		case "callbacks":
			checkNames(k, m.Callbacks, want, func(s protocol.Signature) string { return s.Task }, bad)
		case "errbacks":
			checkNames(k, m.Errbacks, want, func(s protocol.Signature) string { return s.Task }, bad)
		case "chain":
			checkNames(k, m.Chain, want, func(s protocol.Signature) string { return s.Task }, bad)
		case "callback_ids":
			checkNames(k, m.Callbacks, want, taskID, bad)
		case "errback_ids":
			checkNames(k, m.Errbacks, want, taskID, bad)
		case "chain_ids":
			checkNames(k, m.Chain, want, taskID, bad)
		case "chord":
			switch {
			case want == nil && m.Chord != nil:
				bad(k, m.Chord.Task, "null")
			case want != nil && m.Chord == nil:
				bad(k, "nil", want)
			case want != nil && m.Chord.Task != want:
				bad(k, m.Chord.Task, want)
			}
		case "chord_id":
			if m.Chord == nil {
				bad(k, "no chord", want)
			} else if m.Chord.TaskID() != want {
				bad(k, m.Chord.TaskID(), want)
			}
		default:
			problems = append(problems, fmt.Sprintf("unknown expect key %q: the test does not know how to check it", k))
		}
	}
	return problems
}

// diffValue compares a decoded value with its expectation canonically and,
// when they differ, names the first differing element.
func diffValue(path string, got, want any) string {
	g, gerr := canon(got)
	w, werr := canon(want)
	if gerr == nil && werr == nil && g == w {
		return ""
	}
	if gerr == nil && werr == nil {
		switch gw := want.(type) {
		case []any:
			if gl, ok := got.([]any); ok && len(gl) == len(gw) {
				for i := range gw {
					if d := diffValue(fmt.Sprintf("%s[%d]", path, i), gl[i], gw[i]); d != "" {
						return d
					}
				}
			}
		case map[string]any:
			if gm, ok := got.(map[string]any); ok && len(gm) == len(gw) {
				keys := make([]string, 0, len(gw))
				for k := range gw {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				for _, k := range keys {
					gv, ok := gm[k]
					if !ok {
						return fmt.Sprintf("field %s: key %q missing", path, k)
					}
					if d := diffValue(fmt.Sprintf("%s[%q]", path, k), gv, gw[k]); d != "" {
						return d
					}
				}
			}
		}
	}
	return fmt.Sprintf("field %s: got %s (%T), want %s", path, orErr(g, gerr), got, orErr(w, werr))
}

func taskID(s protocol.Signature) string { return s.TaskID() }

func orErr(s string, err error) string {
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return s
}

func checkStr(field, got string, want any, bad func(string, any, any)) {
	switch w := want.(type) {
	case nil:
		if got != "" {
			bad(field, strconv.Quote(got), "null")
		}
	case string:
		if got != w {
			bad(field, strconv.Quote(got), strconv.Quote(w))
		}
	default:
		bad(field, strconv.Quote(got), fmt.Sprintf("malformed expect %T %v", want, want))
	}
}

func checkNames(field string, sigs []protocol.Signature, want any, key func(protocol.Signature) string, bad func(string, any, any)) {
	got := make([]string, len(sigs))
	for i, s := range sigs {
		got[i] = key(s)
	}
	var w []string
	if want != nil {
		list, ok := want.([]any)
		if !ok {
			bad(field, got, fmt.Sprintf("malformed expect %v", want))
			return
		}
		for _, e := range list {
			s, _ := e.(string)
			w = append(w, s)
		}
	}
	if !slices.Equal(got, w) {
		bad(field, fmt.Sprintf("%q", got), fmt.Sprintf("%q", w))
	}
}

// checkTime compares a decoded time with expected Unix seconds (a float from
// Python's datetime.timestamp()), to the microsecond Celery sends.
func checkTime(field string, got *time.Time, want any, bad func(string, any, any)) {
	if want == nil {
		if got != nil {
			bad(field, got.Format(time.RFC3339Nano), "null")
		}
		return
	}
	n, ok := want.(json.Number)
	if !ok {
		bad(field, got, fmt.Sprintf("malformed expect %v", want))
		return
	}
	if got == nil {
		bad(field, "nil", want)
		return
	}
	// Exact decimal arithmetic on the expected text: seconds to microseconds.
	r, ok := new(big.Rat).SetString(string(n))
	if !ok {
		bad(field, got, fmt.Sprintf("malformed expect %v", want))
		return
	}
	r.Mul(r, big.NewRat(1e6, 1))
	f, _ := r.Float64()
	wantUS := int64(math.Round(f))
	if got.UnixMicro() != wantUS || got.Nanosecond()%1000 != 0 {
		bad(field, fmt.Sprintf("%s (%dµs)", got.UTC().Format(time.RFC3339Nano), got.UnixNano()/1000), fmt.Sprintf("%s (%dµs)", time.UnixMicro(wantUS).UTC().Format(time.RFC3339Nano), wantUS))
	}
}

func expectInt(v any) int {
	n, ok := v.(json.Number)
	if !ok {
		return math.MinInt
	}
	i, err := strconv.Atoi(string(n))
	if err != nil {
		return math.MinInt
	}
	return i
}

func expectFloat(v any) float64 {
	if v == nil {
		return 0
	}
	n, ok := v.(json.Number)
	if !ok {
		return math.NaN()
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil {
		return math.NaN()
	}
	return f
}

func isIntText(s string) bool {
	if s == "" {
		return false
	}
	if s[0] == '-' {
		s = s[1:]
	}
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// canon renders a decoded value (or an expected value decoded from the
// golden file with UseNumber) as canonical text: integers by their exact
// decimal digits (never through float64), floats by their shortest float64
// form, kept apart from integers, maps with sorted keys.
func canon(v any) (string, error) {
	var b strings.Builder
	if err := canonTo(&b, v); err != nil {
		return "", err
	}
	return b.String(), nil
}

func canonTo(b *strings.Builder, v any) error {
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case string:
		b.WriteString(strconv.Quote(x))
	case json.Number:
		s := string(x)
		if isIntText(s) {
			n, ok := new(big.Int).SetString(s, 10)
			if !ok {
				return fmt.Errorf("bad integer %q", s)
			}
			b.WriteString("int(" + n.String() + ")")
			return nil
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("bad number %q", s)
		}
		writeFloat(b, f)
	case int:
		b.WriteString("int(" + strconv.FormatInt(int64(x), 10) + ")")
	case int64:
		b.WriteString("int(" + strconv.FormatInt(x, 10) + ")")
	case uint64:
		b.WriteString("int(" + strconv.FormatUint(x, 10) + ")")
	case *big.Int:
		b.WriteString("int(" + x.String() + ")")
	case float64:
		writeFloat(b, x)
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := canonTo(b, e); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Quote(k) + ":")
			if err := canonTo(b, x[k]); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	default:
		return fmt.Errorf("unexpected decoded value %T %v", v, v)
	}
	return nil
}

func writeFloat(b *strings.Builder, f float64) {
	b.WriteString("float(" + strconv.FormatFloat(f, 'g', -1, 64) + ")")
}
