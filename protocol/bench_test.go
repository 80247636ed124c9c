package protocol_test

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/celeryworker/gocelery/protocol"
)

// benchEnvelope loads a golden Celery 5.7 message as the AMQP transport
// hands it over: integer header values as int64, nested values as
// []any / map[string]any.
func benchEnvelope(b *testing.B, name string) *protocol.Envelope {
	b.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "testdata", "golden", name+".json"))
	if err != nil {
		b.Fatal(err)
	}
	var g struct {
		Properties map[string]any `json:"properties"`
		Headers    map[string]any `json:"headers"`
		Body       string         `json:"body_base64"`
	}
	if err := json.Unmarshal(raw, &g); err != nil {
		b.Fatal(err)
	}
	body, err := base64.StdEncoding.DecodeString(g.Body)
	if err != nil {
		b.Fatal(err)
	}
	str := func(k string) string { s, _ := g.Properties[k].(string); return s }
	u8 := func(k string) uint8 { f, _ := g.Properties[k].(float64); return uint8(f) }
	return &protocol.Envelope{
		ContentType:     str("content_type"),
		ContentEncoding: str("content_encoding"),
		Headers:         benchHeaderValue(g.Headers).(map[string]any),
		CorrelationID:   str("correlation_id"),
		ReplyTo:         str("reply_to"),
		DeliveryMode:    u8("delivery_mode"),
		Priority:        u8("priority"),
		Body:            body,
	}
}

func benchHeaderValue(v any) any {
	switch x := v.(type) {
	case float64:
		if x == math.Trunc(x) {
			return int64(x)
		}
		return x
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = benchHeaderValue(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = benchHeaderValue(e)
		}
		return out
	}
	return v
}

func benchDecode(b *testing.B, name string) {
	env := benchEnvelope(b, name)
	if _, err := protocol.Decode(env, protocol.DecodeOptions{}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(env.Body)))
	for b.Loop() {
		if _, err := protocol.Decode(env, protocol.DecodeOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// Decode of send_task("gocelery.add", (2, 3)) as Celery 5.7 writes it.
func BenchmarkDecodeV2JSON(b *testing.B) { benchDecode(b, "v2_json_basic") }

// The same with msgpack.
func BenchmarkDecodeV2Msgpack(b *testing.B) { benchDecode(b, "v2_msgpack") }

// A message carrying every JSON value type Celery sends.
func BenchmarkDecodeV2JSONEveryType(b *testing.B) { benchDecode(b, "v2_json_every_type") }

// zlib-compressed body.
func BenchmarkDecodeV2JSONZlib(b *testing.B) { benchDecode(b, "v2_json_zlib") }

func benchEncode(b *testing.B, serializer string) {
	m, err := protocol.Decode(benchEnvelope(b, "v2_json_basic"), protocol.DecodeOptions{})
	if err != nil {
		b.Fatal(err)
	}
	opts := protocol.EncodeOptions{Serializer: serializer}
	if _, err := protocol.Encode(m, opts); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := protocol.Encode(m, opts); err != nil {
			b.Fatal(err)
		}
	}
}

// Encode of the decoded send_task("gocelery.add", (2, 3)) message, as the
// worker does for canvas callbacks and retries.
func BenchmarkEncodeV2JSON(b *testing.B)    { benchEncode(b, "json") }
func BenchmarkEncodeV2Msgpack(b *testing.B) { benchEncode(b, "msgpack") }
