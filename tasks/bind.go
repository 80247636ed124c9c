package tasks

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/celeryworker/gocelery/protocol"
)

// BindArgs matches a call's positional and keyword arguments to the named
// parameters as Python does, returning one value per parameter. required
// is how many leading parameters have no default; a missing optional one
// is nil. Mismatches are TypeErrors worded as Python words them.
func BindArgs(task string, params []string, required int, args []any, kwargs map[string]any) ([]any, error) {
	if len(args) > len(params) {
		return nil, TypeError("%s() takes %d positional argument%s but %d %s given",
			task, len(params), plural(len(params)), len(args), wasWere(len(args)))
	}
	out := make([]any, len(params))
	set := make([]bool, len(params))
	for i, a := range args {
		out[i], set[i] = a, true
	}
	for k, v := range kwargs {
		i := indexOf(params, k)
		if i < 0 {
			return nil, TypeError("%s() got an unexpected keyword argument '%s'", task, k)
		}
		if set[i] {
			return nil, TypeError("%s() got multiple values for argument '%s'", task, k)
		}
		out[i], set[i] = v, true
	}
	var missing []string
	for i := 0; i < required && i < len(params); i++ {
		if !set[i] {
			missing = append(missing, "'"+params[i]+"'")
		}
	}
	if len(missing) > 0 {
		return nil, TypeError("%s() missing %d required positional argument%s: %s",
			task, len(missing), plural(len(missing)), joinPy(missing))
	}
	return out, nil
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func wasWere(n int) string {
	if n == 1 {
		return "was"
	}
	return "were"
}

func joinPy(names []string) string {
	switch len(names) {
	case 1:
		return names[0]
	case 2:
		return names[0] + " and " + names[1]
	}
	return strings.Join(names[:len(names)-1], ", ") + ", and " + names[len(names)-1]
}

var (
	ctxType   = reflect.TypeOf((*context.Context)(nil)).Elem()
	errType   = reflect.TypeOf((*error)(nil)).Elem()
	timeType  = reflect.TypeOf(time.Time{})
	bigType   = reflect.TypeOf((*big.Int)(nil))
	anyType   = reflect.TypeOf((*any)(nil)).Elem()
	anySlice  = reflect.TypeOf([]any(nil))
	anyMap    = reflect.TypeOf(map[string]any(nil))
	durationT = reflect.TypeOf(time.Duration(0))
)

// funcHandler calls a Go function with arguments converted from the
// message's values.
type funcHandler struct {
	name     string
	fn       reflect.Value
	withCtx  bool
	in       []reflect.Type // parameters after the context
	params   []string
	variadic bool // the last parameter is ...T: it takes surplus positionals
	hasValue bool // returns a value before the error
	hasErr   bool
}

// Bind wraps a Go function as a Handler. The function may take a
// context.Context first; its other parameters are bound from args, then
// from kwargs by the names in params (when given); each value is converted
// to the parameter's type (integers exactly, with overflow reported).
// It may return (T, error), error, T or nothing.
func Bind(name string, fn any, params []string) (Handler, error) {
	v := reflect.ValueOf(fn)
	if v.Kind() != reflect.Func || v.IsNil() {
		return nil, fmt.Errorf("tasks: register %q: want a function, got %T", name, fn)
	}
	t := v.Type()
	h := &funcHandler{name: name, fn: v, variadic: t.IsVariadic()}
	for i := 0; i < t.NumIn(); i++ {
		if i == 0 && t.In(0) == ctxType {
			h.withCtx = true
			continue
		}
		h.in = append(h.in, t.In(i))
	}
	switch t.NumOut() {
	case 0:
	case 1:
		if t.Out(0) == errType {
			h.hasErr = true
		} else {
			h.hasValue = true
		}
	case 2:
		if t.Out(1) != errType {
			return nil, fmt.Errorf("tasks: register %q: second result must be error, got %s", name, t.Out(1))
		}
		h.hasValue, h.hasErr = true, true
	default:
		return nil, fmt.Errorf("tasks: register %q: want at most (value, error) results, got %d", name, t.NumOut())
	}
	fixed := len(h.in)
	if h.variadic {
		fixed--
	}
	if params != nil && len(params) != fixed {
		return nil, fmt.Errorf("tasks: register %q: %d parameter names for %d parameters", name, len(params), fixed)
	}
	h.params = params
	if h.params == nil {
		for i := 0; i < fixed; i++ {
			h.params = append(h.params, "arg"+strconv.Itoa(i))
		}
	}
	return h, nil
}

func (h *funcHandler) Call(ctx context.Context, args []any, kwargs map[string]any) (any, error) {
	fixed := len(h.params)
	var rest []any
	if h.variadic && len(args) > fixed {
		args, rest = args[:fixed], args[fixed:]
	}
	vals, err := BindArgs(h.name, h.params, fixed, args, kwargs)
	if err != nil {
		return nil, err
	}
	in := make([]reflect.Value, 0, len(h.in)+len(rest)+1)
	if h.withCtx {
		in = append(in, reflect.ValueOf(ctx))
	}
	for i, v := range vals {
		rv, err := Convert(v, h.in[i])
		if err != nil {
			return nil, TypeError("%s() argument '%s': %v", h.name, h.params[i], err)
		}
		in = append(in, rv)
	}
	if h.variadic {
		elem := h.in[len(h.in)-1].Elem()
		for i, v := range rest {
			rv, err := Convert(v, elem)
			if err != nil {
				return nil, TypeError("%s() argument %d: %v", h.name, fixed+i+1, err)
			}
			in = append(in, rv)
		}
	}
	out := h.fn.Call(in)
	var value any
	if h.hasValue {
		value = out[0].Interface()
	}
	if h.hasErr {
		if e := out[len(out)-1]; !e.IsNil() {
			return nil, e.Interface().(error)
		}
	}
	return value, nil
}

// Convert turns a decoded message value into a value of type t: integers
// exactly (json.Number, int64, uint64, *big.Int) with overflow reported,
// floats from any number, strings, bools, slices, maps, time.Time from a
// datetime, structs through JSON, pointers (nil for null).
func Convert(v any, t reflect.Type) (reflect.Value, error) {
	if t == anyType {
		if v == nil {
			return reflect.Zero(t), nil
		}
		return reflect.ValueOf(v), nil
	}
	if v == nil {
		switch t.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Map, reflect.Interface:
			return reflect.Zero(t), nil
		}
		return reflect.Value{}, fmt.Errorf("expected %s, got None", t)
	}
	if rv := reflect.ValueOf(v); rv.Type() == t {
		return rv, nil
	}
	switch t {
	case timeType:
		switch x := v.(type) {
		case protocol.DateTime:
			return reflect.ValueOf(x.Time), nil
		case string:
			tm, _, err := protocol.ParseTime(x)
			if err != nil {
				return reflect.Value{}, err
			}
			return reflect.ValueOf(tm), nil
		}
		return reflect.Value{}, fmt.Errorf("expected datetime, got %s", protocol.PyTypeName(v))
	case bigType:
		b, ok := AsBigInt(v)
		if !ok {
			return reflect.Value{}, fmt.Errorf("expected int, got %s", protocol.PyTypeName(v))
		}
		return reflect.ValueOf(b), nil
	case durationT:
		f, ok := AsFloat(v)
		if !ok {
			return reflect.Value{}, fmt.Errorf("expected seconds, got %s", protocol.PyTypeName(v))
		}
		return reflect.ValueOf(time.Duration(f * float64(time.Second))), nil
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		b, ok := AsBigInt(v)
		if !ok {
			return reflect.Value{}, fmt.Errorf("expected int, got %s", protocol.PyTypeName(v))
		}
		if !b.IsInt64() || reflect.Zero(t).OverflowInt(b.Int64()) {
			return reflect.Value{}, fmt.Errorf("integer %s overflows %s", b, t)
		}
		return reflect.ValueOf(b.Int64()).Convert(t), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		b, ok := AsBigInt(v)
		if !ok {
			return reflect.Value{}, fmt.Errorf("expected int, got %s", protocol.PyTypeName(v))
		}
		if b.Sign() < 0 || !b.IsUint64() || reflect.Zero(t).OverflowUint(b.Uint64()) {
			return reflect.Value{}, fmt.Errorf("integer %s overflows %s", b, t)
		}
		return reflect.ValueOf(b.Uint64()).Convert(t), nil
	case reflect.Float32, reflect.Float64:
		f, ok := AsFloat(v)
		if !ok {
			return reflect.Value{}, fmt.Errorf("expected float, got %s", protocol.PyTypeName(v))
		}
		return reflect.ValueOf(f).Convert(t), nil
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			return reflect.Value{}, fmt.Errorf("expected str, got %s", protocol.PyTypeName(v))
		}
		return reflect.ValueOf(s).Convert(t), nil
	case reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			return reflect.Value{}, fmt.Errorf("expected bool, got %s", protocol.PyTypeName(v))
		}
		return reflect.ValueOf(b).Convert(t), nil
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			switch x := v.(type) {
			case []byte:
				return reflect.ValueOf(x).Convert(t), nil
			case string:
				return reflect.ValueOf([]byte(x)).Convert(t), nil
			}
		}
		list, ok := v.([]any)
		if !ok {
			return reflect.Value{}, fmt.Errorf("expected list, got %s", protocol.PyTypeName(v))
		}
		out := reflect.MakeSlice(t, len(list), len(list))
		for i, e := range list {
			ev, err := Convert(e, t.Elem())
			if err != nil {
				return reflect.Value{}, fmt.Errorf("item %d: %w", i, err)
			}
			out.Index(i).Set(ev)
		}
		return out, nil
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok || t.Key().Kind() != reflect.String {
			return reflect.Value{}, fmt.Errorf("expected dict, got %s", protocol.PyTypeName(v))
		}
		out := reflect.MakeMapWithSize(t, len(m))
		for k, e := range m {
			ev, err := Convert(e, t.Elem())
			if err != nil {
				return reflect.Value{}, fmt.Errorf("key %q: %w", k, err)
			}
			out.SetMapIndex(reflect.ValueOf(k).Convert(t.Key()), ev)
		}
		return out, nil
	case reflect.Pointer:
		ev, err := Convert(v, t.Elem())
		if err != nil {
			return reflect.Value{}, err
		}
		p := reflect.New(t.Elem())
		p.Elem().Set(ev)
		return p, nil
	case reflect.Struct:
		if _, ok := v.(map[string]any); !ok {
			return reflect.Value{}, fmt.Errorf("expected dict, got %s", protocol.PyTypeName(v))
		}
		data, err := protocol.MarshalJSON(v)
		if err != nil {
			return reflect.Value{}, err
		}
		p := reflect.New(t)
		if err := json.Unmarshal(data, p.Interface()); err != nil {
			return reflect.Value{}, err
		}
		return p.Elem(), nil
	}
	return reflect.Value{}, fmt.Errorf("cannot bind %s to %s", protocol.PyTypeName(v), t)
}

// AsBigInt returns v as an exact integer when it is one (bools are not).
func AsBigInt(v any) (*big.Int, bool) {
	switch x := v.(type) {
	case int64:
		return big.NewInt(x), true
	case int:
		return big.NewInt(int64(x)), true
	case int32:
		return big.NewInt(int64(x)), true
	case uint64:
		return new(big.Int).SetUint64(x), true
	case *big.Int:
		if x == nil {
			return nil, false
		}
		return new(big.Int).Set(x), true
	case json.Number:
		if !IsIntegerText(string(x)) {
			return nil, false
		}
		b, ok := new(big.Int).SetString(string(x), 10)
		return b, ok
	}
	return nil, false
}

// AsFloat returns v as a float64 when it is a number (bools are not).
func AsFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case float32:
		return float64(x), true
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil && !math.IsInf(f, 0) {
			return 0, false
		}
		return f, true
	}
	if b, ok := AsBigInt(v); ok {
		f, _ := new(big.Float).SetInt(b).Float64()
		return f, true
	}
	return 0, false
}

// IsIntegerText reports whether a JSON number's text is an integer (Python's
// json reads "1.0" and "1e3" as floats).
func IsIntegerText(s string) bool {
	if s == "" {
		return false
	}
	return !strings.ContainsAny(s, ".eE")
}

// pyType names v's type as Python would.
