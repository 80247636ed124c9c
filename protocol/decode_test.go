package protocol

import (
	"bytes"
	"compress/zlib"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"
)

func v2Headers(extra map[string]any) map[string]any {
	h := map[string]any{
		"lang": "py", "task": "gocelery.add", "id": "tid-1", "shadow": nil, "eta": nil, "expires": nil,
		"group": nil, "group_index": nil, "retries": int64(0), "timelimit": []any{nil, nil},
		"root_id": "tid-1", "parent_id": nil, "argsrepr": "(2, 3)", "kwargsrepr": "{}",
		"origin": "gen1@host", "ignore_result": false, "replaced_task_nesting": int64(0),
		"stamped_headers": nil, "stamps": map[string]any{},
	}
	for k, v := range extra {
		h[k] = v
	}
	return h
}

const emptyEmbed = `{"callbacks": null, "errbacks": null, "chain": null, "chord": null}`

func TestDecodeV2(t *testing.T) {
	env := &Envelope{
		ContentType: ContentTypeJSON, ContentEncoding: "utf-8",
		Headers: v2Headers(map[string]any{
			"eta": "2026-11-23T21:42:13.463566+00:00", "expires": "2026-11-23T21:43:08+00:00",
			"timelimit": []any{int64(10), 5.5}, "retries": int32(2), "group": "g1", "group_index": int64(1),
			"custom": "x",
		}),
		Body: []byte(`[[2, 3], {"z": 1}, {"callbacks": [{"task": "cb", "args": [1], "kwargs": {}, "options": {"task_id": "c1"}, "subtask_type": null, "immutable": false}], "errbacks": null, "chain": [{"task": "n2", "args": [], "kwargs": {}, "options": {"task_id": "n2id"}, "subtask_type": null, "immutable": true}], "chord": {"task": "xsum", "args": [], "kwargs": {}, "options": {"task_id": "body"}, "subtask_type": null, "immutable": false}}]`),
	}
	m, err := Decode(env, DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Protocol != 2 || m.Task != "gocelery.add" || m.ID != "tid-1" || m.Retries != 2 || m.Group != "g1" || *m.GroupIndex != 1 {
		t.Errorf("decoded %+v", m)
	}
	if !reflect.DeepEqual(m.Args, []any{json.Number("2"), json.Number("3")}) || m.Kwargs["z"] != json.Number("1") {
		t.Errorf("args %v kwargs %v", m.Args, m.Kwargs)
	}
	if !m.ETA.Equal(time.Date(2026, 11, 23, 21, 42, 13, 463566000, time.UTC)) || !m.Expires.Equal(time.Date(2026, 11, 23, 21, 43, 8, 0, time.UTC)) {
		t.Errorf("eta %v expires %v", m.ETA, m.Expires)
	}
	if m.TimeLimit != (TimeLimit{Hard: 10, Soft: 5.5}) {
		t.Errorf("timelimit %+v", m.TimeLimit)
	}
	if m.Headers["custom"] != "x" || len(m.Headers) != 1 {
		t.Errorf("extra headers %v", m.Headers)
	}
	if len(m.Callbacks) != 1 || m.Callbacks[0].Task != "cb" || m.Callbacks[0].TaskID() != "c1" {
		t.Errorf("callbacks %+v", m.Callbacks)
	}
	if len(m.Chain) != 1 || !m.Chain[0].Immutable || m.Chord == nil || m.Chord.TaskID() != "body" {
		t.Errorf("chain %+v chord %+v", m.Chain, m.Chord)
	}
}

func TestDecodeV1(t *testing.T) {
	env := &Envelope{ContentType: ContentTypeJSON, Body: []byte(`{"task": "gocelery.add", "id": "v1id", "args": [1, 2], "kwargs": {}, "retries": 1, "eta": "2026-01-01T00:00:00", "expires": null, "utc": true, "taskset": "g", "timelimit": [null, 3], "callbacks": null, "errbacks": null, "chord": null}`)}
	m, err := Decode(env, DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Protocol != 1 || m.ID != "v1id" || m.Retries != 1 || m.Group != "g" || m.TimeLimit.Soft != 3 || m.RootID != "v1id" {
		t.Errorf("decoded %+v", m)
	}
	if !m.ETA.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("naive eta read as %v, want UTC", m.ETA)
	}
}

func TestDecodeCompressed(t *testing.T) {
	var buf bytes.Buffer
	zw := zlib.NewWriter(&buf)
	zw.Write([]byte(`[[1], {}, ` + emptyEmbed + `]`))
	zw.Close()
	env := &Envelope{ContentType: ContentTypeJSON, Headers: v2Headers(map[string]any{"compression": "application/x-gzip"}), Body: buf.Bytes()}
	m, err := Decode(env, DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Compression != "application/x-gzip" || len(m.Args) != 1 {
		t.Errorf("decoded %+v", m)
	}
}

func TestDecodeErrors(t *testing.T) {
	good := []byte(`[[1], {}, ` + emptyEmbed + `]`)
	tests := []struct {
		name     string
		env      Envelope
		sentinel error
		id       string
	}{
		{"bad json", Envelope{ContentType: ContentTypeJSON, Headers: v2Headers(nil), Body: []byte(`[[1], {`)}, nil, "tid-1"},
		{"pickle refused", Envelope{ContentType: ContentTypePickle, Headers: v2Headers(nil), Body: []byte{0x80, 4}}, ErrNotAccepted, "tid-1"},
		{"yaml refused", Envelope{ContentType: ContentTypeYAML, Headers: v2Headers(nil), Body: []byte("- 1")}, ErrNotAccepted, "tid-1"},
		{"unknown content type", Envelope{ContentType: "text/weird", Headers: v2Headers(nil), Body: good}, ErrUnknownContentType, "tid-1"},
		{"unknown compression", Envelope{ContentType: ContentTypeJSON, Headers: v2Headers(map[string]any{"compression": "application/x-rar"}), Body: good}, ErrUnknownCompression, "tid-1"},
		{"corrupt zlib", Envelope{ContentType: ContentTypeJSON, Headers: v2Headers(map[string]any{"compression": "zlib"}), Body: []byte("nope")}, nil, "tid-1"},
		{"missing id", Envelope{ContentType: ContentTypeJSON, Headers: map[string]any{"task": "t"}, Body: good}, ErrMalformed, ""},
		{"body not a list", Envelope{ContentType: ContentTypeJSON, Headers: v2Headers(nil), Body: []byte(`"hi"`)}, ErrMalformed, "tid-1"},
		{"body of two", Envelope{ContentType: ContentTypeJSON, Headers: v2Headers(nil), Body: []byte(`[[], {}]`)}, ErrMalformed, "tid-1"},
		{"args not a list", Envelope{ContentType: ContentTypeJSON, Headers: v2Headers(nil), Body: []byte(`[1, {}, null]`)}, ErrMalformed, "tid-1"},
		{"kwargs not a dict", Envelope{ContentType: ContentTypeJSON, Headers: v2Headers(nil), Body: []byte(`[[], [], null]`)}, ErrMalformed, "tid-1"},
		{"bad eta", Envelope{ContentType: ContentTypeJSON, Headers: v2Headers(map[string]any{"eta": "soon"}), Body: good}, ErrMalformed, "tid-1"},
		{"bad timelimit", Envelope{ContentType: ContentTypeJSON, Headers: v2Headers(map[string]any{"timelimit": "x"}), Body: good}, ErrMalformed, "tid-1"},
		{"bad retries", Envelope{ContentType: ContentTypeJSON, Headers: v2Headers(map[string]any{"retries": "x"}), Body: good}, ErrMalformed, "tid-1"},
		{"bad callback", Envelope{ContentType: ContentTypeJSON, Headers: v2Headers(nil), Body: []byte(`[[], {}, {"callbacks": [1]}]`)}, ErrMalformed, "tid-1"},
		{"empty body no headers", Envelope{}, ErrMalformed, ""},
		{"v1 without task", Envelope{ContentType: ContentTypeJSON, Body: []byte(`{"id": "x"}`)}, ErrMalformed, "x"},
		{"v1 not a dict", Envelope{ContentType: ContentTypeJSON, Body: []byte(`[1, 2, 3]`)}, ErrMalformed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(&tt.env, DecodeOptions{})
			if err == nil {
				t.Fatal("decoded without error")
			}
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %T is not a *DecodeError: %v", err, err)
			}
			if tt.sentinel != nil && !errors.Is(err, tt.sentinel) {
				t.Errorf("error %v is not %v", err, tt.sentinel)
			}
			if de.TaskID != tt.id {
				t.Errorf("TaskID = %q, want %q", de.TaskID, tt.id)
			}
			if de.Error() == "" {
				t.Error("empty error message")
			}
		})
	}
	// pickle is decodable only when the caller accepts it, and then it is
	// still not supported: the error says so.
	_, err := Decode(&Envelope{ContentType: ContentTypePickle, Headers: v2Headers(nil), Body: []byte{0x80}}, DecodeOptions{Accept: []string{"json", "pickle"}})
	if !errors.Is(err, ErrUnknownContentType) {
		t.Errorf("accepted pickle: %v", err)
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	eta := time.Date(2026, 11, 23, 21, 42, 13, 463566000, time.UTC)
	gi := 2
	m := &Message{
		ID: "id-1", Task: "gocelery.add", RootID: "root", ParentID: "parent", Group: "g", GroupIndex: &gi,
		Retries: 3, ETA: &eta, TimeLimit: TimeLimit{Hard: 10, Soft: 2.5},
		Args:    []any{json.Number("9007199254740993"), "é"},
		Kwargs:  map[string]any{"k": []any{true, nil}},
		Headers: map[string]any{"custom": "x"},
		Chain:   []Signature{{Task: "next", Args: []any{json.Number("1")}, Options: map[string]any{"task_id": "n1"}}},
	}
	for _, ser := range []string{"json", "msgpack"} {
		for _, comp := range []string{"", "zlib"} {
			env, err := Encode(m, EncodeOptions{Serializer: ser, Compression: comp})
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(env, DecodeOptions{})
			if err != nil {
				t.Fatalf("%s/%s: %v", ser, comp, err)
			}
			if got.ID != m.ID || got.Task != m.Task || got.RootID != "root" || got.ParentID != "parent" || got.Group != "g" ||
				*got.GroupIndex != 2 || got.Retries != 3 || !got.ETA.Equal(eta) || got.TimeLimit != m.TimeLimit || got.Headers["custom"] != "x" {
				t.Errorf("%s/%s: round trip %+v", ser, comp, got)
			}
			a0, _ := MarshalJSON(got.Args)
			if string(a0) != `[9007199254740993, "é"]` {
				t.Errorf("%s/%s: args %s", ser, comp, a0)
			}
			if len(got.Chain) != 1 || got.Chain[0].TaskID() != "n1" {
				t.Errorf("%s/%s: chain %+v", ser, comp, got.Chain)
			}
			if env.Headers["argsrepr"] != "(9007199254740993, 'é')" {
				t.Errorf("argsrepr %q", env.Headers["argsrepr"])
			}
		}
	}
}
