package backends_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/backends"
)

const testRedisURL = "redis://127.0.0.1:6379/15"

// newBackend connects to the test Redis (db 15). Unreachable Redis skips
// the test locally and fails it in CI.
func newBackend(t *testing.T, p backends.RedisParams) *backends.Redis {
	t.Helper()
	if p.URL == "" {
		p.URL = testRedisURL
	}
	rb, err := backends.NewRedis(p)
	if err != nil {
		t.Fatalf("NewRedis(%q): %v", p.URL, err)
	}
	t.Cleanup(func() { rb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := rb.Ping(ctx); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("Redis at %s unreachable (%v); run scripts/services.sh", p.URL, err)
		}
		t.Fatalf("Redis at %s unreachable in CI: %v", p.URL, err)
	}
	return rb
}

// newTaskID returns a fresh id whose keys are deleted when the test ends.
func newTaskID(t *testing.T, rb *backends.Redis) string {
	t.Helper()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	id := "gocelery-test-" + hex.EncodeToString(b[:])
	t.Cleanup(func() { rb.Client().Del(context.Background(), rb.Key(id)) })
	return id
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func result(id, status string, value any) *backends.Result {
	r := &backends.Result{TaskID: id, Status: status, Result: value, Children: []any{}}
	if backends.Ready(status) {
		r.DateDone = time.Now()
	}
	return r
}

func mustEncode(t *testing.T, r *backends.Result, extended bool) []byte {
	t.Helper()
	b, err := r.Encode(extended)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func storedStatus(t *testing.T, rb *backends.Redis, id string) string {
	t.Helper()
	b, err := rb.Get(testCtx(t), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	if b == nil {
		return ""
	}
	var doc struct{ Status string }
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("stored document %q: %v", b, err)
	}
	return doc.Status
}

func TestRedisStoreTTL(t *testing.T) {
	tests := []struct {
		name       string
		expires    time.Duration
		wantMin    time.Duration
		wantMax    time.Duration
		persistent bool
	}{
		{name: "default one day", expires: 0, wantMin: 86400*time.Second - 10*time.Second, wantMax: 86400 * time.Second},
		{name: "custom", expires: 90 * time.Second, wantMin: 80 * time.Second, wantMax: 90 * time.Second},
		{name: "one week", expires: 7 * 24 * time.Hour, wantMin: 7*24*time.Hour - 10*time.Second, wantMax: 7 * 24 * time.Hour},
		{name: "negative never expires", expires: -1, persistent: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rb := newBackend(t, backends.RedisParams{Expires: tc.expires})
			ctx := testCtx(t)
			id := newTaskID(t, rb)
			res := result(id, backends.StatusSuccess, int64(4))
			if err := rb.Store(ctx, res); err != nil {
				t.Fatalf("Store: %v", err)
			}
			key := "celery-task-meta-" + id
			if rb.Key(id) != key {
				t.Fatalf("Key(%s) = %q, want %q", id, rb.Key(id), key)
			}
			raw, err := rb.Client().Get(ctx, key).Bytes()
			if err != nil {
				t.Fatalf("GET %s: %v", key, err)
			}
			if want := mustEncode(t, res, false); !bytes.Equal(raw, want) {
				t.Fatalf("stored\n%s\nwant\n%s", raw, want)
			}
			ttl, err := rb.Client().TTL(ctx, key).Result()
			if err != nil {
				t.Fatal(err)
			}
			if tc.persistent {
				if ttl != -1 {
					t.Fatalf("TTL = %v, want none (-1)", ttl)
				}
				return
			}
			if ttl < tc.wantMin || ttl > tc.wantMax {
				t.Fatalf("TTL = %v, want between %v and %v", ttl, tc.wantMin, tc.wantMax)
			}
			got, err := rb.Get(ctx, id)
			if err != nil || !bytes.Equal(got, raw) {
				t.Fatalf("Get = %q, %v; want the stored bytes", got, err)
			}
		})
	}
}

func TestRedisStorePublishes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		prefix   string
		extended bool
	}{
		{name: "plain"},
		{name: "prefixed", prefix: "gctest"},
		{name: "extended", extended: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rb := newBackend(t, backends.RedisParams{KeyPrefix: tc.prefix, Extended: tc.extended})
			ctx := testCtx(t)
			id := newTaskID(t, rb)
			key := rb.Key(id)

			sub := rb.Client().Subscribe(ctx, key)
			defer sub.Close()
			// Wait for the subscription to be confirmed before storing.
			if _, err := sub.Receive(ctx); err != nil {
				t.Fatalf("subscribe %s: %v", key, err)
			}
			res := result(id, backends.StatusSuccess, map[string]any{"v": "héllo"})
			res.Name, res.Args, res.Worker, res.Queue = "gocelery.echo", []any{"a"}, "go@test", "celery"
			if err := rb.Store(ctx, res); err != nil {
				t.Fatalf("Store: %v", err)
			}
			msg, err := sub.ReceiveMessage(ctx)
			if err != nil {
				t.Fatalf("no message on channel %s: %v", key, err)
			}
			if msg.Channel != key {
				t.Errorf("published on %q, want %q", msg.Channel, key)
			}
			want := mustEncode(t, res, tc.extended)
			if msg.Payload != string(want) {
				t.Fatalf("published\n%s\nwant\n%s", msg.Payload, want)
			}
			stored, err := rb.Get(ctx, id)
			if err != nil || string(stored) != msg.Payload {
				t.Fatalf("stored %q, %v; want the published bytes", stored, err)
			}
			if tc.extended != strings.Contains(msg.Payload, `"worker": "go@test"`) {
				t.Errorf("extended=%v but document is %s", tc.extended, msg.Payload)
			}
		})
	}
}

func TestRedisSuccessIsFinal(t *testing.T) {
	rb := newBackend(t, backends.RedisParams{})
	for _, later := range []string{backends.StatusFailure, backends.StatusRetry, backends.StatusStarted,
		backends.StatusRevoked, "PROGRESS", backends.StatusSuccess} {
		t.Run(later, func(t *testing.T) {
			ctx := testCtx(t)
			id := newTaskID(t, rb)
			marker := newTaskID(t, rb)
			first := result(id, backends.StatusSuccess, int64(1))
			if err := rb.Store(ctx, first); err != nil {
				t.Fatal(err)
			}
			want, _ := rb.Get(ctx, id)

			sub := rb.Client().Subscribe(ctx, rb.Key(id), rb.Key(marker))
			defer sub.Close()
			for i := 0; i < 2; i++ {
				if _, err := sub.Receive(ctx); err != nil {
					t.Fatalf("subscribe: %v", err)
				}
			}
			var value any = backends.ExceptionInfo{Type: "ValueError", Args: []any{"late"}}.Value()
			if later == backends.StatusSuccess {
				value = int64(2)
			}
			if err := rb.Store(ctx, result(id, later, value)); err != nil {
				t.Fatalf("Store(%s) after SUCCESS: %v", later, err)
			}
			got, err := rb.Get(ctx, id)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("after a %s write the document is\n%s\nwant the SUCCESS one\n%s", later, got, want)
			}
			// A dropped write publishes nothing: the first message seen
			// is the marker stored afterwards on the same connection.
			if err := rb.Store(ctx, result(marker, backends.StatusSuccess, nil)); err != nil {
				t.Fatal(err)
			}
			msg, err := sub.ReceiveMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if msg.Channel != rb.Key(marker) {
				t.Fatalf("a dropped %s write was published on %s: %s", later, msg.Channel, msg.Payload)
			}
		})
	}
}

func TestRedisOverwrites(t *testing.T) {
	rb := newBackend(t, backends.RedisParams{})
	ctx := testCtx(t)
	id := newTaskID(t, rb)
	exc := backends.ExceptionInfo{Type: "RuntimeError", Args: []any{"flaky"}}.Value()
	steps := []*backends.Result{
		result(id, backends.StatusStarted, map[string]any{"pid": int64(1), "hostname": "go@h"}),
		result(id, "PROGRESS", map[string]any{"current": int64(1), "total": int64(2)}),
		result(id, backends.StatusRetry, exc),
		result(id, backends.StatusStarted, map[string]any{"pid": int64(1), "hostname": "go@h"}),
		result(id, backends.StatusFailure, exc),
		result(id, backends.StatusRetry, exc), // a redelivery after FAILURE may still write
		result(id, backends.StatusRevoked, backends.TaskRevoked("revoked").Value()),
		result(id, backends.StatusSuccess, int64(3)),
		result(id, backends.StatusFailure, exc), // dropped
	}
	wantStatus := []string{"STARTED", "PROGRESS", "RETRY", "STARTED", "FAILURE", "RETRY", "REVOKED", "SUCCESS", "SUCCESS"}
	for i, r := range steps {
		if err := rb.Store(ctx, r); err != nil {
			t.Fatalf("step %d Store(%s): %v", i, r.Status, err)
		}
		if got := storedStatus(t, rb, id); got != wantStatus[i] {
			t.Fatalf("step %d: after storing %s the status is %q, want %q", i, r.Status, got, wantStatus[i])
		}
	}
}

func TestRedisOverwritesForeignDocuments(t *testing.T) {
	rb := newBackend(t, backends.RedisParams{})
	tests := []struct {
		name      string
		existing  string
		overwrite bool
	}{
		{name: "not JSON", existing: "garbage", overwrite: true},
		{name: "JSON list", existing: `[1, 2]`, overwrite: true},
		{name: "pending", existing: `{"status": "PENDING", "result": null, "task_id": "x"}`, overwrite: true},
		{name: "Python failure", existing: `{"status": "FAILURE", "result": {"exc_type": "KeyError", "exc_message": [5], "exc_module": "builtins"}, "traceback": "tb", "children": [], "date_done": "2026-01-01T00:00:00+00:00", "task_id": "x"}`, overwrite: true},
		{name: "Python success", existing: `{"status": "SUCCESS", "result": 4, "traceback": null, "children": [], "date_done": "2026-01-01T00:00:00.123456", "task_id": "x"}`},
		{name: "compact success", existing: `{"status":"SUCCESS","result":null}`},
		{name: "success with a huge integer", existing: `{"status": "SUCCESS", "result": 1180591620717411303424, "task_id": "x"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			id := newTaskID(t, rb)
			if err := rb.Client().Set(ctx, rb.Key(id), tc.existing, time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			res := result(id, backends.StatusFailure, backends.ExceptionInfo{Type: "ValueError"}.Value())
			if err := rb.Store(ctx, res); err != nil {
				t.Fatalf("Store: %v", err)
			}
			got, _ := rb.Get(ctx, id)
			want := tc.existing
			if tc.overwrite {
				want = string(mustEncode(t, res, false))
			}
			if string(got) != want {
				t.Fatalf("stored %s, want %s", got, want)
			}
		})
	}
}

// Concurrent writers: once SUCCESS has been written nothing replaces it,
// whatever the interleaving.
func TestRedisSuccessIsFinalConcurrent(t *testing.T) {
	rb := newBackend(t, backends.RedisParams{})
	ctx := testCtx(t)
	for round := 0; round < 5; round++ {
		id := newTaskID(t, rb)
		var wg sync.WaitGroup
		errs := make(chan error, 40)
		successStored := make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(successStored)
			errs <- rb.Store(ctx, result(id, backends.StatusSuccess, int64(round)))
		}()
		for i := 0; i < 30; i++ {
			status := []string{backends.StatusFailure, backends.StatusRetry, backends.StatusStarted}[i%3]
			wg.Add(1)
			go func() {
				defer wg.Done()
				if i >= 15 {
					<-successStored // half of them surely after the success
				}
				errs <- rb.Store(ctx, result(id, status, nil))
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("Store: %v", err)
			}
		}
		if got := storedStatus(t, rb, id); got != backends.StatusSuccess {
			t.Fatalf("round %d: final status %q, want SUCCESS", round, got)
		}
	}
}

func TestRedisKeyPrefix(t *testing.T) {
	tests := []struct {
		prefix string
		want   string // key prefix before the task id
	}{
		{"", "celery-task-meta-"},
		{"p", "p_celery-task-meta-"},
		{"p:", "p:celery-task-meta-"},
		{"p_", "p_celery-task-meta-"},
		{"p-", "p-celery-task-meta-"},
		{"p.", "p.celery-task-meta-"},
		{"a:b", "a:b_celery-task-meta-"},
	}
	for _, tc := range tests {
		t.Run(tc.prefix, func(t *testing.T) {
			rb := newBackend(t, backends.RedisParams{KeyPrefix: tc.prefix})
			plain := newBackend(t, backends.RedisParams{})
			ctx := testCtx(t)
			id := newTaskID(t, rb)
			want := tc.want + id
			if got := rb.Key(id); got != want {
				t.Fatalf("Key = %q, want %q", got, want)
			}
			t.Cleanup(func() { plain.Client().Del(context.Background(), plain.Key(id)) })
			if err := rb.Store(ctx, result(id, backends.StatusSuccess, int64(1))); err != nil {
				t.Fatal(err)
			}
			if n, err := rb.Client().Exists(ctx, want).Result(); err != nil || n != 1 {
				t.Fatalf("EXISTS %s = %d, %v; want 1", want, n, err)
			}
			if tc.prefix != "" {
				if n, _ := rb.Client().Exists(ctx, "celery-task-meta-"+id).Result(); n != 0 {
					t.Fatal("a prefixed backend also wrote the unprefixed key")
				}
				if b, err := plain.Get(ctx, id); err != nil || b != nil {
					t.Fatalf("unprefixed Get = %q, %v; want nil", b, err)
				}
			}
			if b, err := rb.Get(ctx, id); err != nil || b == nil {
				t.Fatalf("prefixed Get = %q, %v", b, err)
			}
		})
	}
}

func TestRedisGetMissing(t *testing.T) {
	rb := newBackend(t, backends.RedisParams{})
	b, err := rb.Get(testCtx(t), newTaskID(t, rb))
	if err != nil || b != nil {
		t.Fatalf("Get(missing) = %q, %v; want nil, nil", b, err)
	}
}

func TestRedisBadURL(t *testing.T) {
	tests := []struct {
		url     string
		mention string // what the error must show of the URL
		secret  string // what it must not show
	}{
		{url: "http://127.0.0.1:6379/0", mention: "http://127.0.0.1:6379/0"},
		{url: "redis://127.0.0.1:6379/notadb", mention: "redis://127.0.0.1:6379/notadb"},
		{url: "redis://127.0.0.1:6379/0/extra", mention: "redis://127.0.0.1:6379/0/extra"},
		{url: "redis://user:s3cret@127.0.0.1:6379/abc", mention: "redis://user:****@127.0.0.1:6379/abc", secret: "s3cret"},
		{url: "redis://user:s3cret@127.0.0.1:bad port/0", mention: "127.0.0.1:bad port/0", secret: "s3cret"},
		{url: "redis://:s3cret@127.0.0.1:6379/0?bogus=1", mention: "127.0.0.1:6379/0?bogus=1", secret: "s3cret"},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			rb, err := backends.NewRedis(backends.RedisParams{URL: tc.url})
			if err == nil {
				rb.Close()
				t.Fatalf("NewRedis(%q): no error", tc.url)
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("error %q does not name the URL %q", err, tc.mention)
			}
			if tc.secret != "" && strings.Contains(err.Error(), tc.secret) {
				t.Errorf("error %q leaks the password", err)
			}
		})
	}
}

func TestRedisUnreachable(t *testing.T) {
	// Port 1 on localhost refuses connections at once.
	rb, err := backends.NewRedis(backends.RedisParams{URL: "redis://127.0.0.1:1/0"})
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	// Bounded: the client retries dials; the errors are what matters.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := rb.Ping(ctx); err == nil {
		t.Fatal("Ping of a closed port: no error")
	}
	err = rb.Store(ctx, result("tid-1", backends.StatusSuccess, nil))
	if err == nil || !strings.Contains(err.Error(), "tid-1") || !strings.Contains(err.Error(), "SUCCESS") {
		t.Fatalf("Store error = %v, want one naming the task and state", err)
	}
	if _, err := rb.Get(ctx, "tid-1"); err == nil {
		t.Fatal("Get from a closed port: no error")
	}
}

func TestRedisStoreEncodeError(t *testing.T) {
	rb, err := backends.NewRedis(backends.RedisParams{URL: testRedisURL})
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	err = rb.Store(context.Background(), &backends.Result{TaskID: "bad-1", Status: "SUCCESS", Result: make(chan int)})
	if err == nil || !strings.Contains(err.Error(), "bad-1") {
		t.Fatalf("Store of an unencodable result = %v, want an error naming the task", err)
	}
}

func ExampleRedis_Key() {
	rb, _ := backends.NewRedis(backends.RedisParams{KeyPrefix: "app"})
	defer rb.Close()
	fmt.Println(rb.Key("4a60e875"))
	// Output: app_celery-task-meta-4a60e875
}

// A password the server refuses is a misconfiguration (no retry heals it),
// also on a server without a password, where go-redis's own login would
// let any password in; an unreachable server is not.
func TestPingClassifiesAuth(t *testing.T) {
	newBackend(t, backends.RedisParams{URL: testRedisURL}) // skips when Redis is down
	ctx := context.Background()
	refused, err := backends.NewRedis(backends.RedisParams{URL: "redis://:N0pe-s3cret@127.0.0.1:6379/15"})
	if err != nil {
		t.Fatal(err)
	}
	defer refused.Close()
	if err := refused.Ping(ctx); !errors.Is(err, backends.ErrMisconfigured) {
		t.Errorf("refused password: %v, want ErrMisconfigured", err)
	}
	down, err := backends.NewRedis(backends.RedisParams{URL: "redis://127.0.0.1:1/0"})
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	if err := down.Ping(ctx); err == nil || errors.Is(err, backends.ErrMisconfigured) {
		t.Errorf("unreachable: %v, want a transient error", err)
	}
}

// TestRedisStoreAsyncBatches: results queued together are written per
// batch, each key with its own check: a stored SUCCESS is kept (and nothing
// published for it), every other result is written with its TTL and
// published. Small batches (one script call that writes and publishes the
// new keys) and large ones (pipelines) keep the same rules.
func TestRedisStoreAsyncBatches(t *testing.T) {
	for _, tc := range []struct {
		name    string
		group   int // results queued before waiting for them
		expires time.Duration
	}{
		{"burst", 300, time.Hour},
		{"one at a time", 1, time.Hour},
		{"groups of 5", 5, time.Hour},
		{"one at a time, no expiry", 1, -1},
		{"burst, no expiry", 300, -1},
	} {
		t.Run(tc.name, func(t *testing.T) { testStoreAsyncBatches(t, tc.group, tc.expires) })
	}
}

func testStoreAsyncBatches(t *testing.T, group int, expires time.Duration) {
	rb := newBackend(t, backends.RedisParams{Expires: expires})
	ctx := testCtx(t)
	const n = 300
	ids := make([]string, n)
	channels := make([]string, n)
	for i := range ids {
		ids[i] = newTaskID(t, rb)
		channels[i] = rb.Key(ids[i])
		// A third already succeeded (kept), a third already started
		// (overwritten, as a key that exists), a third are new keys.
		switch i % 3 {
		case 0:
			if err := rb.Store(ctx, result(ids[i], backends.StatusSuccess, int64(i))); err != nil {
				t.Fatal(err)
			}
		case 1:
			if err := rb.Store(ctx, result(ids[i], backends.StatusStarted, nil)); err != nil {
				t.Fatal(err)
			}
		}
	}
	sub := rb.Client().Subscribe(ctx, channels...)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	errs := make(chan error, n)
	for i := 0; i < n; i += group {
		for _, id := range ids[i:min(i+group, n)] {
			rb.StoreAsync(result(id, backends.StatusFailure, backends.ExceptionInfo{Type: "ValueError"}.Value()), func(err error) { errs <- err })
		}
		for range ids[i:min(i+group, n)] {
			if err := <-errs; err != nil {
				t.Fatalf("StoreAsync: %v", err)
			}
		}
	}
	published := map[string]int{}
	msgs := sub.Channel()
	for len(published) < n-n/3 {
		select {
		case m := <-msgs:
			published[m.Channel]++
			if !strings.Contains(m.Payload, backends.StatusFailure) {
				t.Fatalf("%s: published %s, want the FAILURE written", m.Channel, m.Payload)
			}
		case <-ctx.Done():
			t.Fatalf("%d results published, want %d", len(published), n-n/3)
		}
	}
	for i, id := range ids {
		want := backends.StatusFailure
		if i%3 == 0 {
			want = backends.StatusSuccess
		}
		if got := storedStatus(t, rb, id); got != want {
			t.Fatalf("task %d: stored %s, want %s", i, got, want)
		}
		if wantN := map[bool]int{true: 1}[want == backends.StatusFailure]; published[rb.Key(id)] != wantN {
			t.Fatalf("task %d (%s): published %d times, want %d", i, want, published[rb.Key(id)], wantN)
		}
		ttl := rb.Client().TTL(ctx, rb.Key(id)).Val()
		switch {
		case want == backends.StatusFailure && expires > 0 && (ttl <= 0 || ttl > expires):
			t.Fatalf("task %d: TTL %v, want up to %v", i, ttl, expires)
		case want == backends.StatusFailure && expires < 0 && ttl != -1:
			t.Fatalf("task %d: TTL %v, want none", i, ttl)
		}
	}
}
