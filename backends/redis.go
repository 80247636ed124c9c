package backends

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/celeryworker/gocelery/internal/redact"
)

// KeyPrefix is the prefix of task state keys.
const KeyPrefix = "celery-task-meta-"

// RedisParams configures a Redis result backend. Zero values are Celery's
// defaults: redis://localhost:6379/0, results kept one day.
type RedisParams struct {
	URL string
	// Expires is result_expires; 0 means one day, negative means never.
	Expires time.Duration
	// Extended writes name, args, kwargs, worker, retries and queue
	// (result_extended).
	Extended bool
	// KeyPrefix is Celery's global_keyprefix transport option.
	KeyPrefix string
	// TransportOptions are result_backend_transport_options: master_name
	// (required by sentinel:// URLs), sentinel_kwargs, socket_timeout,
	// socket_connect_timeout.
	TransportOptions TransportOptions
}

// Redis is Celery's Redis result backend.
type Redis struct {
	startWriter sync.Once
	writeMu     sync.RWMutex // held for reading while queueing a write
	closed      bool
	writes      chan pendingWrite
	writerDone  chan struct{}

	client   *redis.Client
	display  string // the URL, credentials hidden
	warning  string
	ttl      time.Duration
	extended bool
	prefix   string
}

// storeScript writes a document unless the stored one is SUCCESS (a
// redelivered duplicate must not overwrite a success), and publishes it on
// the channel named like the key. Python Celery does the read and the write
// in two round trips; one script makes the check atomic.
var storeScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, doc = pcall(cjson.decode, cur)
  if ok and type(doc) == 'table' and doc['status'] == 'SUCCESS' then
    return 0
  end
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SETEX', KEYS[1], ttl, ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
`)

// storeManyScript is storeScript for a batch: KEYS are the keys, ARGV the
// documents in the same order, then the TTL. One script call per batch
// instead of one per result costs Redis (and the worker) a fraction of
// the per-call overhead; each key keeps the same never-overwrite-SUCCESS
// check. It returns 1 (written) or 0 (a SUCCESS kept) per key.
var storeManyScript = redis.NewScript(`
local ttl = tonumber(ARGV[#KEYS + 1])
local out = {}
for i, key in ipairs(KEYS) do
  local cur = redis.call('GET', key)
  local keep = false
  if cur then
    local ok, doc = pcall(cjson.decode, cur)
    keep = ok and type(doc) == 'table' and doc['status'] == 'SUCCESS'
  end
  if keep then
    out[i] = 0
  else
    if ttl > 0 then
      redis.call('SETEX', key, ttl, ARGV[i])
    else
      redis.call('SET', key, ARGV[i])
    end
    redis.call('PUBLISH', key, ARGV[i])
    out[i] = 1
  end
end
return out
`)

// NewRedis connects to the backend at p.URL: redis://, rediss:// (with
// Celery's ssl_cert_reqs, ssl_ca_certs, ssl_certfile, ssl_keyfile),
// unix:// or socket://, and sentinel:// lists, with Celery's /db suffix.
func NewRedis(p RedisParams) (*Redis, error) {
	url := p.URL
	if url == "" {
		url = "redis://localhost:6379/0"
	}
	opts, err := parseURL(url, p.TransportOptions)
	if err != nil {
		// Parse errors quote the URL, password included.
		return nil, misconfigured{fmt.Errorf("backends: result backend URL %q: %w", redact.URL(url), redact.Error(err, url))}
	}
	var client *redis.Client
	if opts.sentinel != nil {
		client = redis.NewFailoverClient(opts.sentinel)
	} else {
		client = redis.NewClient(opts.single)
	}
	ttl := p.Expires
	if ttl == 0 {
		ttl = 24 * time.Hour
	}
	prefix := p.KeyPrefix
	if prefix != "" && !strings.ContainsAny(prefix[len(prefix)-1:], ":_-.") {
		prefix += "_"
	}
	return &Redis{client: client, display: opts.display, warning: opts.warning, ttl: ttl, extended: p.Extended, prefix: prefix}, nil
}

// URL is the backend's URL with its credentials hidden, for the banner
// and inspect.
func (r *Redis) URL() string { return r.display }

// Warning says what is unsafe in the configuration (a rediss:// URL that
// does not check certificates), or is empty.
func (r *Redis) Warning() string { return r.warning }

// Client is the underlying Redis client.
func (r *Redis) Client() *redis.Client { return r.client }

// Key is the state key of a task id.
func (r *Redis) Key(taskID string) string { return r.prefix + KeyPrefix + taskID }

// Ping checks the connection and the password. go-redis logs in with
// HELLO ... AUTH default <password>, which a server without a password
// lets in whatever the password; redis-py (Python Celery) sends
// AUTH <password>, which such a server refuses. Ping sends the same AUTH,
// so a password the server does not know is reported as Celery reports it.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.client.Ping(ctx).Err(); err != nil {
		return authError(fmt.Errorf("backends: redis ping: %w", err))
	}
	if o := r.client.Options(); o.Password != "" && o.Username == "" && o.CredentialsProvider == nil {
		if err := r.client.Do(ctx, "AUTH", o.Password).Err(); err != nil {
			return authError(fmt.Errorf("backends: redis AUTH: %w", err))
		}
	}
	return nil
}

// authError marks Redis's answers to a wrong or missing password (and to
// a user without the right) as ErrMisconfigured: no retry can heal them.
// Other errors (refused, timed out) are returned as they are.
func authError(err error) error {
	// A certificate the CA does not vouch for will not change by waiting.
	var verify *tls.CertificateVerificationError
	if errors.As(err, &verify) {
		return misconfigured{err}
	}
	s := err.Error()
	for _, m := range []string{"WRONGPASS", "NOAUTH", "without any password configured", "invalid password", "NOPERM"} {
		if strings.Contains(s, m) {
			return misconfigured{err}
		}
	}
	return err
}

// ErrMisconfigured marks backend errors no retry can heal (a URL that
// cannot work).
var ErrMisconfigured = errors.New("misconfigured")

type misconfigured struct{ err error }

func (m misconfigured) Error() string   { return m.err.Error() }
func (m misconfigured) Unwrap() []error { return []error{m.err, ErrMisconfigured} }

// ErrTooLarge: the document is over Redis's 512 MB value limit.
var ErrTooLarge = errors.New("backends: result is larger than 512 MB")

// ErrClosed: the backend was closed.
var ErrClosed = errors.New("backends: closed")

const maxDocument = 512 * 1024 * 1024

// Store writes res, publishing it for waiting clients. A stored SUCCESS
// is never overwritten.
func (r *Redis) Store(ctx context.Context, res *Result) error {
	doc, err := res.Encode(r.extended)
	if err != nil {
		return fmt.Errorf("backends: encode result of %s: %w", res.TaskID, err)
	}
	if len(doc) > maxDocument {
		return ErrTooLarge
	}
	ttl := int64(r.ttl / time.Second)
	if r.ttl < 0 {
		ttl = 0
	}
	if err := storeScript.Run(ctx, r.client, []string{r.Key(res.TaskID)}, doc, ttl).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("backends: store %s for %s: %w", res.Status, res.TaskID, err)
	}
	return nil
}

// Get reads a task's stored document (nil, nil when there is none).
func (r *Redis) Get(ctx context.Context, taskID string) ([]byte, error) {
	b, err := r.client.Get(ctx, r.Key(taskID)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("backends: get %s: %w", taskID, err)
	}
	return b, nil
}

// Status reads a task's stored state: PENDING when nothing is stored.
func (r *Redis) Status(ctx context.Context, taskID string) (string, error) {
	b, err := r.Get(ctx, taskID)
	if err != nil || b == nil {
		return StatusPending, err
	}
	status, err := DocStatus(b)
	if err != nil {
		return "", fmt.Errorf("backends: stored result of %s: %w", taskID, err)
	}
	return status, nil
}

// Close writes what StoreAsync has queued, stops the writer and closes
// the connection pool.
func (r *Redis) Close() error {
	r.stopWriter()
	return r.client.Close()
}
