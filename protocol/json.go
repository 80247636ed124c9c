package protocol

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// DecodeJSON decodes kombu JSON into the value model: numbers stay exact as
// json.Number, and {"__type__": T, "__value__": V} envelopes become DateTime,
// Date, TimeOfDay, Decimal, UUID or []byte. Trailing data is an error.
//
// Strings keep lone surrogates ("\ud800") as WTF-8 and bytes that are not
// UTF-8 are an error (ErrNotUTF8), both as kombu's json does: see wtf8.go.
func DecodeJSON(data []byte) (any, error) {
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("protocol: invalid JSON: %w", ErrNotUTF8)
	}
	v, err := decodeJSONWTF8(data)
	if err != nil {
		return nil, fmt.Errorf("protocol: invalid JSON: %w", err)
	}
	return unwrapTagged(v)
}

func unwrapTagged(v any) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 2 {
			if t, ok := x["__type__"]; ok {
				if val, ok := x["__value__"]; ok {
					return decodeTagged(t, val)
				}
			}
		}
		for k, e := range x {
			u, err := unwrapTagged(e)
			if err != nil {
				return nil, err
			}
			x[k] = u
		}
		return x, nil
	case []any:
		for i, e := range x {
			u, err := unwrapTagged(e)
			if err != nil {
				return nil, err
			}
			x[i] = u
		}
		return v, nil // v, not x: boxing the slice again would allocate
	}
	return v, nil
}

func decodeTagged(t, val any) (any, error) {
	name, _ := t.(string)
	s, isStr := val.(string)
	bad := func() (any, error) {
		return nil, fmt.Errorf("protocol: kombu JSON %q envelope holds %T %v", name, val, val)
	}
	switch name {
	case "datetime":
		if !isStr {
			return bad()
		}
		tm, naive, err := ParseTime(s)
		if err != nil {
			return nil, err
		}
		return DateTime{Time: tm, Naive: naive}, nil
	case "date":
		if !isStr {
			return bad()
		}
		y, m, d, ok := parseDate(s)
		if !ok {
			return nil, fmt.Errorf("protocol: bad kombu date %q", s)
		}
		return Date{Year: y, Month: time.Month(m), Day: d}, nil
	case "time":
		if !isStr {
			return bad()
		}
		return TimeOfDay(s), nil
	case "decimal":
		if !isStr {
			return bad()
		}
		return Decimal(s), nil
	case "uuid":
		if isStr {
			return ParseUUID(s)
		}
		m, ok := val.(map[string]any)
		if !ok {
			return bad()
		}
		h, ok := m["hex"].(string)
		if !ok {
			return bad()
		}
		return ParseUUID(h)
	case "bytes":
		if !isStr {
			return bad()
		}
		return []byte(s), nil
	case "base64":
		if !isStr {
			return bad()
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("protocol: bad kombu base64 value: %w", err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("protocol: unknown kombu JSON type %q", fmt.Sprint(t))
}

// MarshalJSON encodes a value of the value model as kombu JSON, so Python's
// kombu decodes it to the equivalent Python value: integers exact, floats
// always with a fraction or exponent (4.0 stays a float), tagged types as
// kombu envelopes, map keys sorted.
func MarshalJSON(v any) ([]byte, error) { return AppendJSON(nil, v) }

// AppendJSON is MarshalJSON appending to b.
func AppendJSON(b []byte, v any) ([]byte, error) {
	return appendJSON(b, v, 0)
}

const maxDepth = 10000

var errTooDeep = errors.New("protocol: value nested too deeply")

func appendJSON(b []byte, v any, depth int) ([]byte, error) {
	if depth > maxDepth {
		return b, errTooDeep
	}
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		return strconv.AppendBool(b, x), nil
	case string:
		return appendJSONString(b, x), nil
	case json.Number:
		if !isJSONNumber(string(x)) {
			return b, fmt.Errorf("protocol: invalid number %q", string(x))
		}
		return append(b, x...), nil
	case int:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int8:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int16:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int32:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int64:
		return strconv.AppendInt(b, x, 10), nil
	case uint:
		return strconv.AppendUint(b, uint64(x), 10), nil
	case uint8:
		return strconv.AppendUint(b, uint64(x), 10), nil
	case uint16:
		return strconv.AppendUint(b, uint64(x), 10), nil
	case uint32:
		return strconv.AppendUint(b, uint64(x), 10), nil
	case uint64:
		return strconv.AppendUint(b, x, 10), nil
	case float64:
		return AppendPyFloat(b, x), nil
	case float32:
		return AppendPyFloat(b, float64(x)), nil
	case *big.Int:
		if x == nil {
			return append(b, "null"...), nil
		}
		return x.Append(b, 10), nil
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ", "...)
			}
			var err error
			if b, err = appendJSON(b, e, depth+1); err != nil {
				return b, err
			}
		}
		return append(b, ']'), nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = appendJSONString(b, k)
			b = append(b, ": "...)
			var err error
			if b, err = appendJSON(b, x[k], depth+1); err != nil {
				return b, err
			}
		}
		return append(b, '}'), nil
	case []byte:
		if utf8.Valid(x) {
			return appendTagged(b, "bytes", appendJSONString(nil, string(x))), nil
		}
		return appendTagged(b, "base64", appendJSONString(nil, base64.StdEncoding.EncodeToString(x))), nil
	case DateTime:
		return appendTagged(b, "datetime", appendJSONString(nil, x.String())), nil
	case time.Time:
		return appendTagged(b, "datetime", appendJSONString(nil, FormatTime(x))), nil
	case Date:
		return appendTagged(b, "date", appendJSONString(nil, x.String())), nil
	case TimeOfDay:
		return appendTagged(b, "time", appendJSONString(nil, string(x))), nil
	case Decimal:
		return appendTagged(b, "decimal", appendJSONString(nil, string(x))), nil
	case UUID:
		return appendTagged(b, "uuid", append(appendJSONString([]byte(`{"hex": `), x.Hex()), '}')), nil
	case json.RawMessage:
		return append(b, x...), nil
	}
	return appendReflect(b, v, depth)
}

func appendTagged(b []byte, typ string, val []byte) []byte {
	b = append(b, `{"__type__": "`...)
	b = append(b, typ...)
	b = append(b, `", "__value__": `...)
	b = append(b, val...)
	return append(b, '}')
}

// appendReflect handles typed slices and maps ([]int, map[string]float64, ...)
// element by element so their numbers keep Python's int/float distinction;
// anything else (structs) goes through encoding/json.
func appendReflect(b []byte, v any, depth int) ([]byte, error) {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer:
		if rv.IsNil() {
			return append(b, "null"...), nil
		}
		return appendJSON(b, rv.Elem().Interface(), depth+1)
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.IsNil() {
			return append(b, "null"...), nil
		}
		b = append(b, '[')
		for i := 0; i < rv.Len(); i++ {
			if i > 0 {
				b = append(b, ", "...)
			}
			var err error
			if b, err = appendJSON(b, rv.Index(i).Interface(), depth+1); err != nil {
				return b, err
			}
		}
		return append(b, ']'), nil
	case reflect.Map:
		if rv.Type().Key().Kind() == reflect.String {
			if rv.IsNil() {
				return append(b, "null"...), nil
			}
			keys := rv.MapKeys()
			slices.SortFunc(keys, func(a, c reflect.Value) int {
				if a.String() < c.String() {
					return -1
				}
				if a.String() > c.String() {
					return 1
				}
				return 0
			})
			b = append(b, '{')
			for i, k := range keys {
				if i > 0 {
					b = append(b, ", "...)
				}
				b = appendJSONString(b, k.String())
				b = append(b, ": "...)
				var err error
				if b, err = appendJSON(b, rv.MapIndex(k).Interface(), depth+1); err != nil {
					return b, err
				}
			}
			return append(b, '}'), nil
		}
	case reflect.String:
		return appendJSONString(b, rv.String()), nil
	case reflect.Bool:
		return strconv.AppendBool(b, rv.Bool()), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.AppendInt(b, rv.Int(), 10), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.AppendUint(b, rv.Uint(), 10), nil
	case reflect.Float32, reflect.Float64:
		return AppendPyFloat(b, rv.Float()), nil
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return b, fmt.Errorf("protocol: cannot encode %T as JSON: %w", v, err)
	}
	return append(b, raw...), nil
}

// AppendPyFloat writes f as Python's repr(float) does, so it reads back as
// a float: "4.0", "0.1", "1e+16", "1.5e-05", "NaN", "Infinity".
func AppendPyFloat(b []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(b, "NaN"...)
	case math.IsInf(f, 1):
		return append(b, "Infinity"...)
	case math.IsInf(f, -1):
		return append(b, "-Infinity"...)
	}
	abs := math.Abs(f)
	if abs == 0 || (abs >= 1e-4 && abs < 1e16) {
		start := len(b)
		b = strconv.AppendFloat(b, f, 'f', -1, 64)
		if bytes.IndexByte(b[start:], '.') < 0 {
			b = append(b, ".0"...)
		}
		return b
	}
	return strconv.AppendFloat(b, f, 'e', -1, 64)
}

func isJSONNumber(s string) bool {
	if s == "" {
		return false
	}
	i := 0
	if s[0] == '-' {
		i++
	}
	digits := 0
	for ; i < len(s); i++ {
		c := s[i]
		if c >= '0' && c <= '9' {
			digits++
			continue
		}
		if c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-' {
			continue
		}
		return false
	}
	return digits > 0
}

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s as a JSON string, as AppendJSON does, without
// boxing it in an interface.
func AppendJSONString(b []byte, s string) []byte { return appendJSONString(b, s) }

func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			if sr, ok := surrogateAt(s[i:]); ok {
				// A lone surrogate kept as WTF-8 (wtf8.go) goes back as
				// the escape Python wrote.
				b = append(b, '\\', 'u', hexDigits[sr>>12], hexDigits[sr>>8&0xF], hexDigits[sr>>4&0xF], hexDigits[sr&0xF])
				i += 3
				start = i
				continue
			}
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
