package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/amqp"
	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/broker/brokertest"
	"github.com/celeryworker/gocelery/client"
	"github.com/celeryworker/gocelery/protocol"
)

const (
	testRedisURL  = "redis://127.0.0.1:6379/13"
	testBrokerURL = "amqp://guest:guest@127.0.0.1:5672//"
)

func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// unavailable skips the test locally and fails it in CI.
func unavailable(t *testing.T, what string, err error) {
	t.Helper()
	if os.Getenv("CI") == "" {
		t.Skipf("%s unreachable (%v); run scripts/services.sh", what, err)
	}
	t.Fatalf("%s unreachable in CI: %v", what, err)
}

// newRedis connects to the test Redis (db 13).
func newRedis(t *testing.T) *backends.Redis {
	t.Helper()
	rb, err := backends.NewRedis(backends.RedisParams{URL: testRedisURL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := rb.Ping(ctx); err != nil {
		unavailable(t, "Redis at "+testRedisURL, err)
	}
	return rb
}

// newAMQP returns the RabbitMQ transport, checking the broker is up.
func newAMQP(t *testing.T) *amqp.Transport {
	t.Helper()
	tr, err := amqp.NewTransport(amqp.Params{URL: testBrokerURL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := tr.Dial(ctx, broker.DialParams{Name: "gocelery client test probe"})
	if err != nil {
		unavailable(t, "RabbitMQ at "+testBrokerURL, err)
	}
	conn.Close()
	return tr
}

// memClient is a client on an in-memory broker.
func memClient(t *testing.T, cfg client.Config) (*client.Client, *brokertest.Broker) {
	t.Helper()
	b := brokertest.New()
	cfg.Broker = b
	c, err := client.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, b
}

// published returns the message the client published with task id id.
func published(t *testing.T, b *brokertest.Broker, id string) brokertest.Sent {
	t.Helper()
	for _, s := range b.Published() {
		if s.Envelope.Headers["id"] == id {
			return s
		}
	}
	t.Fatalf("no message with id %s was published (%d published)", id, len(b.Published()))
	return brokertest.Sent{}
}

// decodeMsg decodes a published envelope as a worker would.
func decodeMsg(t *testing.T, env *protocol.Envelope) *protocol.Message {
	t.Helper()
	m, err := protocol.Decode(env, protocol.DecodeOptions{})
	if err != nil {
		t.Fatalf("published message does not decode: %v", err)
	}
	return m
}

// body decodes an envelope's body (decompressed) with its serializer.
func body(t *testing.T, env *protocol.Envelope) []any {
	t.Helper()
	raw := env.Body
	if c, ok := env.Headers["compression"].(string); ok && c != "" {
		var err error
		if raw, err = protocol.Decompress(c, raw); err != nil {
			t.Fatal(err)
		}
	}
	v, err := protocol.Unmarshal(env.ContentType, raw, []string{"json", "msgpack"})
	if err != nil {
		t.Fatalf("body: %v", err)
	}
	l, ok := v.([]any)
	if !ok || len(l) != 3 {
		t.Fatalf("body is not [args, kwargs, embed]: %v", v)
	}
	return l
}

// viaJSON renders a header value as the JSON a Python consumer would see,
// decoded with json.Number, so Go's integer types compare with Python's.
func viaJSON(t *testing.T, v any) any {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("%v does not marshal: %v", v, err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var out any
	if err := dec.Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func equalJSON(t *testing.T, a, b any) bool {
	t.Helper()
	return reflect.DeepEqual(viaJSON(t, a), viaJSON(t, b))
}
