package protocol

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"reflect"
	"slices"
	"strconv"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// DecodeMsgpack decodes msgpack as kombu writes it (packb use_bin_type=True):
// str → string, bin → []byte, ints → int64 (uint64 above int64), floats →
// float64, arrays → []any, maps → map[string]any. Trailing data, ext types
// and non-string map keys that are not scalars are errors.
func DecodeMsgpack(data []byte) (any, error) {
	r := bytes.NewReader(data)
	dec := msgpack.NewDecoder(r)
	v, err := decodeMsgpackValue(dec, r, 0)
	if err != nil {
		return nil, fmt.Errorf("protocol: invalid msgpack: %w", err)
	}
	if r.Len() != 0 {
		return nil, errors.New("protocol: invalid msgpack: trailing data after the value")
	}
	return v, nil
}

func decodeMsgpackValue(dec *msgpack.Decoder, r *bytes.Reader, depth int) (any, error) {
	if depth > maxDepth {
		return nil, errTooDeep
	}
	c, err := dec.PeekCode()
	if err != nil {
		return nil, err
	}
	switch {
	case msgpcode.IsFixedNum(c), c == msgpcode.Int8, c == msgpcode.Int16, c == msgpcode.Int32, c == msgpcode.Int64,
		c == msgpcode.Uint8, c == msgpcode.Uint16, c == msgpcode.Uint32:
		return dec.DecodeInt64()
	case c == msgpcode.Uint64:
		u, err := dec.DecodeUint64()
		if err != nil {
			return nil, err
		}
		if u <= math.MaxInt64 {
			return int64(u), nil
		}
		return u, nil
	case c == msgpcode.Float, c == msgpcode.Double:
		return dec.DecodeFloat64()
	case c == msgpcode.Nil:
		return nil, dec.DecodeNil()
	case c == msgpcode.False, c == msgpcode.True:
		return dec.DecodeBool()
	case msgpcode.IsString(c), msgpcode.IsBin(c):
		if err := checkBlobLen(r); err != nil {
			return nil, err
		}
		if msgpcode.IsBin(c) {
			return dec.DecodeBytes()
		}
		return dec.DecodeString()
	case msgpcode.IsFixedArray(c), c == msgpcode.Array16, c == msgpcode.Array32:
		n, err := dec.DecodeArrayLen()
		if err != nil {
			return nil, err
		}
		if n < 0 {
			return nil, nil
		}
		if n > r.Len() { // every element takes at least one byte
			return nil, fmt.Errorf("array length %d exceeds the data", n)
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = decodeMsgpackValue(dec, r, depth+1); err != nil {
				return nil, err
			}
		}
		return out, nil
	case msgpcode.IsFixedMap(c), c == msgpcode.Map16, c == msgpcode.Map32:
		n, err := dec.DecodeMapLen()
		if err != nil {
			return nil, err
		}
		if n < 0 {
			return nil, nil
		}
		if n > r.Len()/2 {
			return nil, fmt.Errorf("map length %d exceeds the data", n)
		}
		out := make(map[string]any, n)
		for i := 0; i < n; i++ {
			k, err := decodeMsgpackValue(dec, r, depth+1)
			if err != nil {
				return nil, err
			}
			var key string
			switch kk := k.(type) {
			case string:
				key = kk
			case []byte:
				key = string(kk)
			case int64, uint64, bool, nil:
				// JSON would make these keys strings too.
				key = fmt.Sprint(kk)
			case float64:
				key = string(AppendPyFloat(nil, kk))
			default:
				return nil, fmt.Errorf("unsupported map key of type %T", k)
			}
			if out[key], err = decodeMsgpackValue(dec, r, depth+1); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("unsupported msgpack code 0x%02x", c)
}

// MarshalMsgpack encodes a value of the value model as msgpack that Python's
// msgpack.unpackb(raw=False) reads back. Tagged kombu types have no msgpack
// form in kombu; they are written as their text (as kombu < 5.3 did for JSON).
func MarshalMsgpack(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	if err := encodeMsgpackValue(enc, v, 0); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func encodeMsgpackValue(enc *msgpack.Encoder, v any, depth int) error {
	if depth > maxDepth {
		return errTooDeep
	}
	switch x := v.(type) {
	case nil:
		return enc.EncodeNil()
	case bool:
		return enc.EncodeBool(x)
	case string:
		return enc.EncodeString(x)
	case []byte:
		return enc.EncodeBytes(x)
	case json.Number:
		s := string(x)
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return enc.EncodeInt(i)
		}
		if u, err := strconv.ParseUint(s, 10, 64); err == nil {
			return enc.EncodeUint(u)
		}
		if isIntegerText(s) {
			return fmt.Errorf("protocol: integer %s does not fit msgpack's 64 bits", s)
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("protocol: invalid number %q", s)
		}
		return enc.EncodeFloat64(f)
	case int:
		return enc.EncodeInt(int64(x))
	case int8:
		return enc.EncodeInt(int64(x))
	case int16:
		return enc.EncodeInt(int64(x))
	case int32:
		return enc.EncodeInt(int64(x))
	case int64:
		return enc.EncodeInt(x)
	case uint:
		return enc.EncodeUint(uint64(x))
	case uint8:
		return enc.EncodeUint(uint64(x))
	case uint16:
		return enc.EncodeUint(uint64(x))
	case uint32:
		return enc.EncodeUint(uint64(x))
	case uint64:
		return enc.EncodeUint(x)
	case float32:
		return enc.EncodeFloat64(float64(x))
	case float64:
		return enc.EncodeFloat64(x)
	case *big.Int:
		if x == nil {
			return enc.EncodeNil()
		}
		if x.IsInt64() {
			return enc.EncodeInt(x.Int64())
		}
		if x.IsUint64() {
			return enc.EncodeUint(x.Uint64())
		}
		return fmt.Errorf("protocol: integer %s does not fit msgpack's 64 bits", x)
	case []any:
		if err := enc.EncodeArrayLen(len(x)); err != nil {
			return err
		}
		for _, e := range x {
			if err := encodeMsgpackValue(enc, e, depth+1); err != nil {
				return err
			}
		}
		return nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if err := enc.EncodeMapLen(len(x)); err != nil {
			return err
		}
		for _, k := range keys {
			if err := enc.EncodeString(k); err != nil {
				return err
			}
			if err := encodeMsgpackValue(enc, x[k], depth+1); err != nil {
				return err
			}
		}
		return nil
	case DateTime:
		return enc.EncodeString(x.String())
	case time.Time:
		return enc.EncodeString(FormatTime(x))
	case Date:
		return enc.EncodeString(x.String())
	case TimeOfDay:
		return enc.EncodeString(string(x))
	case Decimal:
		return enc.EncodeString(string(x))
	case UUID:
		return enc.EncodeString(x.String())
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer:
		if rv.IsNil() {
			return enc.EncodeNil()
		}
		return encodeMsgpackValue(enc, rv.Elem().Interface(), depth+1)
	case reflect.Slice, reflect.Array:
		if err := enc.EncodeArrayLen(rv.Len()); err != nil {
			return err
		}
		for i := 0; i < rv.Len(); i++ {
			if err := encodeMsgpackValue(enc, rv.Index(i).Interface(), depth+1); err != nil {
				return err
			}
		}
		return nil
	case reflect.Map:
		if rv.Type().Key().Kind() == reflect.String {
			m := make(map[string]any, rv.Len())
			for it := rv.MapRange(); it.Next(); {
				m[it.Key().String()] = it.Value().Interface()
			}
			return encodeMsgpackValue(enc, m, depth)
		}
	case reflect.String:
		return enc.EncodeString(rv.String())
	case reflect.Bool:
		return enc.EncodeBool(rv.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return enc.EncodeInt(rv.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return enc.EncodeUint(rv.Uint())
	case reflect.Float32, reflect.Float64:
		return enc.EncodeFloat64(rv.Float())
	}
	// Structs and the like: go through JSON to get a plain value.
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("protocol: cannot encode %T as msgpack: %w", v, err)
	}
	plain, err := DecodeJSON(raw)
	if err != nil {
		return err
	}
	return encodeMsgpackValue(enc, plain, depth+1)
}

// checkBlobLen refuses a str/bin whose declared length exceeds the data
// left, before the decoder allocates a buffer that large.
func checkBlobLen(r *bytes.Reader) error {
	var hdr [5]byte
	n, _ := r.ReadAt(hdr[:], r.Size()-int64(r.Len()))
	if n == 0 {
		return io.ErrUnexpectedEOF
	}
	c := hdr[0]
	var size, hlen int
	switch {
	case c >= 0xa0 && c <= 0xbf:
		size, hlen = int(c&0x1f), 1
	case c == msgpcode.Str8 || c == msgpcode.Bin8:
		if n < 2 {
			return io.ErrUnexpectedEOF
		}
		size, hlen = int(hdr[1]), 2
	case c == msgpcode.Str16 || c == msgpcode.Bin16:
		if n < 3 {
			return io.ErrUnexpectedEOF
		}
		size, hlen = int(binary.BigEndian.Uint16(hdr[1:3])), 3
	case c == msgpcode.Str32 || c == msgpcode.Bin32:
		if n < 5 {
			return io.ErrUnexpectedEOF
		}
		size, hlen = int(binary.BigEndian.Uint32(hdr[1:5])), 5
	}
	if size > r.Len()-hlen {
		return fmt.Errorf("string length %d exceeds the data", size)
	}
	return nil
}

func isIntegerText(s string) bool {
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
