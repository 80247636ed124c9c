package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
)

// TestJSONKeepsLoneSurrogates: what Python's json.dumps writes for a str
// with lone surrogates decodes to WTF-8 and encodes back byte for byte,
// where encoding/json would give U+FFFD.
func TestJSONKeepsLoneSurrogates(t *testing.T) {
	cases := []struct {
		in   string // JSON as Python writes it (ensure_ascii)
		want string // the Go string a task sees
	}{
		{`"\ud800x\udfff"`, "\xed\xa0\x80x\xed\xbf\xbf"},
		{`"\ud83d\ude00"`, "😀"},                        // a pair is one character
		{`"\ude00\ud83d"`, "\xed\xb8\x80\xed\xa0\xbd"}, // reversed: two lone ones
		{`"\ud800\u0041"`, "\xed\xa0\x80A"},
		{`"a\\ud800"`, `a\ud800`}, // an escaped backslash: plain text
		{`"\uDBFF"`, "\xed\xaf\xbf"},
	}
	for _, c := range cases {
		v, err := DecodeJSON([]byte(c.in))
		if err != nil {
			t.Fatalf("%s: %v", c.in, err)
		}
		if v != c.want {
			t.Errorf("%s decoded to %q, want %q", c.in, v, c.want)
		}
		out, err := MarshalJSON(v)
		if err != nil {
			t.Fatal(err)
		}
		// Python's json.dumps writes the pair as its escapes; either way
		// json.loads gives the same str. Compare decoded values.
		back, err := DecodeJSON(out)
		if err != nil || back != v {
			t.Errorf("%s -> %s -> %q (%v)", c.in, out, back, err)
		}
		if strings.Contains(string(out), `\ufffd`) {
			t.Errorf("%s encoded with U+FFFD: %s", c.in, out)
		}
	}
	out, _ := MarshalJSON("\xed\xa0\x80x\xed\xbf\xbf")
	if string(out) != `"\ud800x\udfff"` {
		t.Errorf("lone surrogates encode as %s", out)
	}
}

func TestJSONNotUTF8IsAnError(t *testing.T) {
	for _, in := range []string{"\"\xff\"", "[\"a\xed\xa0\x80\"]", "{\"k\xc3\": 1}"} {
		_, err := DecodeJSON([]byte(in))
		if !errors.Is(err, ErrNotUTF8) {
			t.Errorf("%q: err %v, want ErrNotUTF8", in, err)
		}
	}
}

// TestWTF8DecoderMatchesEncodingJSON: on input without surrogate escapes
// the own decoder gives what encoding/json gives, errors included.
func TestWTF8DecoderMatchesEncodingJSON(t *testing.T) {
	for _, in := range []string{
		`{"a": [1, -2.5e3, true, false, null, "x\n\"y\u00e9\/"], "b": {}, "c": []}`,
		` [ 1 , 2 ] `, `"\u0000"`, `{"a":1,}`, `[1,]`, `01`, `1.`, `-`, `"\x"`, `"abc`, `{"a" 1}`,
		`[[[[]]]]`, `nul`, `{"__type__": "uuid", "__value__": "x"}`, `"tab	"`, `1 2`,
	} {
		compareDecoders(t, []byte(in))
	}
}

func compareDecoders(t *testing.T, data []byte) {
	t.Helper()
	got, gerr := decodeJSONWTF8(data)
	want, werr := decodeJSONStd(data)
	if (gerr == nil) != (werr == nil) {
		t.Fatalf("%q: own decoder err %v, encoding/json err %v", data, gerr, werr)
	}
	if gerr == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%q: own decoder %#v, encoding/json %#v", data, got, want)
	}
}

func TestDecodeErrorNamesPackageOnce(t *testing.T) {
	env := &Envelope{ContentType: "application/json", Body: []byte("[1, 2"),
		Headers: map[string]any{"task": "t", "id": "i"}}
	_, err := Decode(env, DecodeOptions{})
	if err == nil || strings.Count(err.Error(), "protocol:") != 1 {
		t.Errorf("error %q: want one \"protocol:\"", err)
	}
}

// BenchmarkDecodeJSONStrings: what keeping strings as sent costs. "std" is
// encoding/json (DecodeJSON before), "checked" is DecodeJSON (UTF-8 check,
// then the own decoder), "wtf8" the own decoder alone.
func BenchmarkDecodeJSONStrings(b *testing.B) {
	args := `[[1, "` + strings.Repeat("abcdefgh", 8) + `", 2.5, null, {"k": "v\u00e9"}], {"x": [true, false]}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]`
	large := `["` + strings.Repeat("0123456789abcdef", 64<<10/16) + `"]`
	lone := `[["\ud800x\udfff", "` + strings.Repeat("abcdefgh", 8) + `", 1], {}, {}]`
	inputs := []struct{ name, data string }{{"args", args}, {"64KiB", large}, {"surrogates", lone}}
	decoders := []struct {
		name string
		fn   func([]byte) (any, error)
	}{{"std", decodeJSONStd}, {"checked", DecodeJSON}, {"wtf8", decodeJSONWTF8}}
	for _, in := range inputs {
		for _, d := range decoders {
			b.Run(in.name+"/"+d.name, func(b *testing.B) {
				data := []byte(in.data)
				b.SetBytes(int64(len(data)))
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					if _, err := d.fn(data); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// decodeJSONStd is encoding/json's reading, which DecodeJSON used before:
// the reference for the own decoder.
func decodeJSONStd(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("protocol: invalid JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("protocol: invalid JSON: trailing data after the value")
	}
	return v, nil
}

// hasSurrogateEscape reports whether data may hold a "\uD800".."\uDFFF"
// escape, the only input encoding/json decodes differently from Python.
// A false positive (an escaped backslash before "ud8") only costs the
// slower decoder.
func hasSurrogateEscape(data []byte) bool {
	for {
		i := bytes.Index(data, []byte(`\u`))
		if i < 0 || i+3 >= len(data) {
			return false
		}
		if d, n := data[i+2], data[i+3]; (d == 'd' || d == 'D') && (n >= '8' && n <= '9' || n >= 'a' && n <= 'f' || n >= 'A' && n <= 'F') {
			return true
		}
		data = data[i+2:]
	}
}
