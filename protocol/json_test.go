package protocol

import (
	"encoding/json"
	"math"
	"math/big"
	"reflect"
	"testing"
	"time"
)

func TestJSONRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // canonical re-encoding; "" = same as in
	}{
		{"int", `42`, ""},
		{"negative", `-7`, ""},
		{"beyond 2^53", `9007199254740993`, ""},
		{"beyond int64", `18446744073709551621`, ""},
		{"huge negative", `-1180591620717411303424`, ""},
		{"float keeps fraction", `4.0`, ""},
		{"float", `0.1`, ""},
		{"exponent", `1e+100`, ""},
		{"negative zero", `-0.0`, ""},
		{"unicode", `"h\u00e9llo \ud83d\ude00 \u4e2d"`, `"héllo 😀 中"`},
		{"escapes", `"a\"b\\c\n\t\u0001"`, ""},
		{"nested", `{"a": [1, {"b": null}], "c": true, "d": false}`, ""},
		{"sorted keys", `{"b": 1, "a": 2}`, `{"a": 2, "b": 1}`},
		{"datetime aware", `{"__type__": "datetime", "__value__": "2024-01-02T03:04:05.000678+00:00"}`, ""},
		{"datetime naive", `{"__type__": "datetime", "__value__": "2024-01-02T03:04:05"}`, ""},
		{"datetime offset", `{"__type__": "datetime", "__value__": "2024-01-02T03:04:05+02:00"}`, ""},
		{"date", `{"__type__": "date", "__value__": "2024-01-02"}`, ""},
		{"time", `{"__type__": "time", "__value__": "01:02:03"}`, ""},
		{"decimal", `{"__type__": "decimal", "__value__": "1.10"}`, ""},
		{"uuid", `{"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}}`, ""},
		{"uuid with version", `{"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678", "version": 4}}`, `{"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}}`},
		{"bytes utf8", `{"__type__": "bytes", "__value__": "abc"}`, ""},
		{"bytes base64", `{"__type__": "base64", "__value__": "/wA="}`, ""},
		{"three keys is a plain dict", `{"__type__": "x", "__value__": 1, "y": 2}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := DecodeJSON([]byte(tt.in))
			if err != nil {
				t.Fatalf("DecodeJSON(%s): %v", tt.in, err)
			}
			got, err := MarshalJSON(v)
			if err != nil {
				t.Fatalf("MarshalJSON: %v", err)
			}
			want := tt.want
			if want == "" {
				want = tt.in
			}
			if string(got) != want {
				t.Errorf("round trip of %s\n got %s\nwant %s", tt.in, got, want)
			}
		})
	}
}

func TestJSONDecodeErrors(t *testing.T) {
	for _, in := range []string{
		``, `{`, `[1,]`, `1 2`, `{"a": 1} x`,
		`{"__type__": "nope", "__value__": 1}`,
		`{"__type__": "datetime", "__value__": "yesterday"}`,
		`{"__type__": "uuid", "__value__": {"hex": "zz"}}`,
		`{"__type__": "base64", "__value__": "%%%"}`,
		`{"__type__": "date", "__value__": 5}`,
	} {
		if v, err := DecodeJSON([]byte(in)); err == nil {
			t.Errorf("DecodeJSON(%q) = %v, want an error", in, v)
		}
	}
}

func TestJSONDecodedTypes(t *testing.T) {
	v, err := DecodeJSON([]byte(`[9007199254740993, 2.5, {"__type__": "datetime", "__value__": "2024-01-02T03:04:05.5+00:00"}, {"__type__": "base64", "__value__": "/wA="}]`))
	if err != nil {
		t.Fatal(err)
	}
	list := v.([]any)
	if list[0] != json.Number("9007199254740993") {
		t.Errorf("big int decoded as %#v", list[0])
	}
	if list[1] != json.Number("2.5") {
		t.Errorf("float decoded as %#v", list[1])
	}
	want := DateTime{Time: time.Date(2024, 1, 2, 3, 4, 5, 500000000, time.UTC)}
	if dt := list[2].(DateTime); !dt.Time.Equal(want.Time) || dt.Naive {
		t.Errorf("datetime decoded as %#v", list[2])
	}
	if !reflect.DeepEqual(list[3], []byte{0xff, 0}) {
		t.Errorf("base64 decoded as %#v", list[3])
	}
}

func TestMarshalGoValues(t *testing.T) {
	bi, _ := new(big.Int).SetString("-123456789012345678901234567890", 10)
	tests := []struct {
		in   any
		want string
	}{
		{int64(math.MaxInt64), `9223372036854775807`},
		{uint64(math.MaxUint64), `18446744073709551615`},
		{bi, `-123456789012345678901234567890`},
		{4.0, `4.0`},
		{1e16, `1e+16`},
		{1.5e-5, `1.5e-05`},
		{123456789.0, `123456789.0`},
		{math.Inf(1), `Infinity`},
		{[]int{1, 2}, `[1, 2]`},
		{map[string]float64{"a": 1}, `{"a": 1.0}`},
		{[]string(nil), `null`},
		{struct {
			A int `json:"a"`
		}{3}, `{"a":3}`},
		{time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), `{"__type__": "datetime", "__value__": "2024-01-02T03:04:05+00:00"}`},
		{"<&>", `"<&>"`},
		{"bad \xff utf8", `"bad \ufffd utf8"`},
	}
	for _, tt := range tests {
		got, err := MarshalJSON(tt.in)
		if err != nil {
			t.Errorf("MarshalJSON(%#v): %v", tt.in, err)
			continue
		}
		if string(got) != tt.want {
			t.Errorf("MarshalJSON(%#v) = %s, want %s", tt.in, got, tt.want)
		}
	}
	if _, err := MarshalJSON(json.Number("12abc")); err == nil {
		t.Error("invalid json.Number encoded without error")
	}
}

func TestMsgpackRoundTrip(t *testing.T) {
	in := []any{
		int64(1), int64(-1), int64(math.MaxInt64), uint64(math.MaxUint64), 2.5, "héllo 😀",
		[]byte{0, 0xff}, nil, true, map[string]any{"a": []any{int64(1)}},
	}
	b, err := MarshalMsgpack(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := DecodeMsgpack(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, in) {
		t.Errorf("msgpack round trip\n got %#v\nwant %#v", out, in)
	}
	// json.Number converts exactly; beyond 64 bits is a clear error.
	b, err = MarshalMsgpack([]any{json.Number("9007199254740993"), json.Number("0.5")})
	if err != nil {
		t.Fatal(err)
	}
	out, _ = DecodeMsgpack(b)
	if !reflect.DeepEqual(out, []any{int64(9007199254740993), 0.5}) {
		t.Errorf("json.Number to msgpack: %#v", out)
	}
	if _, err := MarshalMsgpack(json.Number("18446744073709551621")); err == nil {
		t.Error("an integer beyond 64 bits was encoded as msgpack")
	}
	if _, err := DecodeMsgpack(append(b, 0x01)); err == nil {
		t.Error("trailing data accepted")
	}
	if _, err := DecodeMsgpack([]byte{0xdd, 0xff, 0xff, 0xff, 0xff}); err == nil {
		t.Error("an array longer than its data was accepted")
	}
}

func TestParseTime(t *testing.T) {
	tests := []struct {
		in    string
		want  time.Time
		naive bool
	}{
		{"2026-11-23T21:40:08.663126+00:00", time.Date(2026, 11, 23, 21, 40, 8, 663126000, time.UTC), false},
		{"2026-11-23T21:40:08Z", time.Date(2026, 11, 23, 21, 40, 8, 0, time.UTC), false},
		{"2026-11-23T23:40:08+0200", time.Date(2026, 11, 23, 21, 40, 8, 0, time.UTC), false},
		{"2026-11-23T23:40:08+02", time.Date(2026, 11, 23, 21, 40, 8, 0, time.UTC), false},
		{"2026-11-23T16:40:08-05:00", time.Date(2026, 11, 23, 21, 40, 8, 0, time.UTC), false},
		{"2026-11-23T21:40:08.5", time.Date(2026, 11, 23, 21, 40, 8, 500000000, time.UTC), true},
		{"2026-11-23 21:40", time.Date(2026, 11, 23, 21, 40, 0, 0, time.UTC), true},
		{"2026-11-23", time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC), true},
	}
	for _, tt := range tests {
		got, naive, err := ParseTime(tt.in)
		if err != nil {
			t.Errorf("ParseTime(%q): %v", tt.in, err)
			continue
		}
		if !got.Equal(tt.want) || naive != tt.naive {
			t.Errorf("ParseTime(%q) = %v naive=%v, want %v naive=%v", tt.in, got, naive, tt.want, tt.naive)
		}
	}
	for _, bad := range []string{"", "yesterday", "2026-13-01", "2026-02-30T00:00:00", "2026-11-23T25:00", "2026-11-23T21:40:08+25:00", "2026-11-23X21"} {
		if _, _, err := ParseTime(bad); err == nil {
			t.Errorf("ParseTime(%q) accepted", bad)
		}
	}
	if s := FormatTime(time.Date(2026, 11, 23, 21, 40, 8, 663126000, time.UTC)); s != "2026-11-23T21:40:08.663126+00:00" {
		t.Errorf("FormatTime = %s", s)
	}
	if s := FormatTime(time.Date(2026, 11, 23, 21, 40, 8, 0, time.FixedZone("", -5*3600-1800))); s != "2026-11-23T21:40:08-05:30" {
		t.Errorf("FormatTime = %s", s)
	}
}
