package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"time"

	"github.com/celeryworker/gocelery/protocol"
)

// Decode stores a result value (as the protocol decodes it: json.Number,
// int64, *big.Int, float64, string, []any, map[string]any, []byte and the
// kombu types) into the Go value dst points to, as encoding/json would
// decode the same JSON: a struct, a map, a slice, a number, a string,
// time.Time for a datetime, []byte for bytes. With dst an *any the value
// is stored as is. Numbers inside `any` fields are json.Number, so large
// integers stay exact.
func Decode(value any, dst any) error {
	if dst == nil {
		return errors.New("client: decode into nil")
	}
	if p, ok := dst.(*any); ok {
		*p = value
		return nil
	}
	rv := reflect.ValueOf(dst)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("client: decode into non-pointer %T", dst)
	}
	plain, err := plainJSON(value, 0)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(plain)
	if err != nil {
		return fmt.Errorf("client: decode result: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(dst); err != nil {
		return fmt.Errorf("client: decode result into %T: %w", dst, err)
	}
	return nil
}

// plainJSON turns the value model into values encoding/json writes as the
// JSON a Go type expects: kombu datetimes as RFC 3339 text (what
// time.Time reads), dates and UUIDs as text, decimals as numbers.
func plainJSON(v any, depth int) (any, error) {
	if depth > 10000 {
		return nil, errors.New("client: result nested too deeply")
	}
	switch x := v.(type) {
	case nil, bool, string, json.Number, int64, uint64, float64, []byte:
		return v, nil
	case *big.Int:
		return x, nil
	case protocol.DateTime:
		return x.Time.Format(time.RFC3339Nano), nil
	case time.Time:
		return x.Format(time.RFC3339Nano), nil
	case protocol.Date:
		return x.String(), nil
	case protocol.TimeOfDay:
		return string(x), nil
	case protocol.UUID:
		return x.String(), nil
	case protocol.Decimal:
		if json.Valid([]byte(x)) {
			return json.Number(x), nil
		}
		return string(x), nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			p, err := plainJSON(e, depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = p
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			p, err := plainJSON(e, depth+1)
			if err != nil {
				return nil, err
			}
			out[k] = p
		}
		return out, nil
	}
	return v, nil
}
