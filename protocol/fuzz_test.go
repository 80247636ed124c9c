package protocol

import (
	"reflect"
	"testing"
	"unicode/utf8"
)

// FuzzDecode feeds arbitrary bodies and content types through Decode with
// v2 and v1 shaped headers: any input must give a message or an error,
// never a panic.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]`), "application/json", true, "")
	f.Add([]byte(`{"task": "t", "id": "i", "args": [1], "kwargs": {}, "eta": "2026-01-01T00:00:00"}`), "application/json", false, "")
	f.Add([]byte{0x93, 0x92, 0x01, 0x02, 0x80, 0xc0}, "application/x-msgpack", true, "")
	f.Add([]byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01}, "application/json", true, "application/x-gzip")
	f.Add([]byte("BZh91AY&SY"), "application/json", true, "application/x-bz2")
	f.Add([]byte(`[[{"__type__": "datetime", "__value__": "2024-01-02T03:04:05"}], {}, {"chord": {"task": "x"}}]`), "application/json", true, "")
	f.Fuzz(func(t *testing.T, body []byte, contentType string, v2 bool, compression string) {
		env := &Envelope{ContentType: contentType, Body: body}
		if v2 {
			env.Headers = map[string]any{"task": "t", "id": "i", "eta": string(body[:min(len(body), 32)])}
			if compression != "" {
				env.Headers["compression"] = compression
			}
		}
		m, err := Decode(env, DecodeOptions{})
		if err == nil && m == nil {
			t.Fatal("nil message without error")
		}
		if err == nil {
			// Whatever decoded must encode again.
			if _, err := Encode(m, EncodeOptions{}); err != nil && m.ID != "" && m.Task != "" {
				// Values decoded from msgpack always fit JSON; the reverse
				// may not (big ints), so only JSON is required here.
				t.Fatalf("decoded message does not re-encode: %v", err)
			}
		}
	})
}

func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{`1`, `"x"`, `[1, 2.5, null]`, `{"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}}`, `18446744073709551621`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := DecodeJSON(data)
		if err != nil {
			return
		}
		out, err := MarshalJSON(v)
		if err != nil {
			t.Fatalf("decoded value does not encode: %v", err)
		}
		v2, err := DecodeJSON(out)
		if err != nil {
			t.Fatalf("re-encoded JSON %q does not decode: %v", out, err)
		}
		out2, _ := MarshalJSON(v2)
		if string(out) != string(out2) {
			t.Fatalf("not stable: %s vs %s", out, out2)
		}
	})
}

func FuzzDecodeMsgpack(f *testing.F) {
	f.Add([]byte{0x93, 0x01, 0xa1, 'x', 0xc0})
	f.Add([]byte{0x81, 0xa1, 'a', 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := DecodeMsgpack(data)
		if err != nil {
			return
		}
		if _, err := MarshalMsgpack(v); err != nil {
			t.Fatalf("decoded value does not encode: %v", err)
		}
	})
}

// FuzzDecodeJSONWTF8: the decoder that keeps lone surrogates agrees with
// encoding/json on every UTF-8 input without surrogate escapes (same value
// or both an error), and never panics on the rest.
func FuzzDecodeJSONWTF8(f *testing.F) {
	for _, s := range []string{`"\ud800x\udfff"`, `{"a": ["\ud83d\ude00", 1e5, null]}`, `[1, {"b": "\u00e9"}]`, `"\ud800\ud800\udc00"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !utf8.Valid(data) {
			return
		}
		if !hasSurrogateEscape(data) {
			compareDecoders(t, data)
			return
		}
		v, err := decodeJSONWTF8(data)
		if err != nil {
			return
		}
		out, err := MarshalJSON(v)
		if err != nil {
			t.Fatalf("decoded value does not encode: %v", err)
		}
		if v2, err := decodeJSONWTF8(out); err != nil || !reflect.DeepEqual(v, v2) {
			t.Fatalf("%q -> %s -> %#v (%v), want %#v", data, out, v2, err, v)
		}
	})
}
