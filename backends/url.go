package backends

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/celeryworker/gocelery/internal/redact"
	"github.com/celeryworker/gocelery/internal/redistls"
)

// TransportOptions are Celery's result_backend_transport_options that a
// Redis backend reads: master_name and sentinel_kwargs for sentinel://
// URLs, and the socket timeouts.
type TransportOptions map[string]any

// options is how go-redis is to connect, read from a result backend URL.
type options struct {
	single   *redis.Options         // redis://, rediss://, unix://
	sentinel *redis.FailoverOptions // sentinel://a;sentinel://b
	display  string                 // the URL without credentials
	warning  string                 // logged once: e.g. certificates not checked
}

// Query parameters of rediss:// URLs that Celery (redis-py) takes and
// go-redis does not: they are read here and removed before go-redis parses
// the rest.
var sslParams = []string{"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile"}

// parseURL reads a result backend URL as Celery does: redis://, rediss://
// (whose ssl_cert_reqs is required, as Celery requires it), unix:// and
// socket://, and sentinel:// lists separated by ";" with the master named
// by the transport option master_name.
func parseURL(raw string, topts TransportOptions) (*options, error) {
	if strings.HasPrefix(raw, "sentinel://") || strings.HasPrefix(raw, "sentinel+ssl://") {
		return parseSentinel(raw, topts)
	}
	o, err := parseOne(raw)
	if err != nil {
		return nil, err
	}
	if err := applyTimeouts(topts, &o.single.DialTimeout, &o.single.ReadTimeout); err != nil {
		return nil, err
	}
	return o, nil
}

func parseOne(raw string) (*options, error) {
	// Passwords are often written unencoded; escaping them first keeps
	// them whole (and out of parse errors).
	u, err := url.Parse(redact.EscapeUserinfo(raw))
	if err != nil {
		return nil, err
	}
	o := &options{display: redact.URL(raw)}
	q := u.Query()
	ssl := map[string]string{}
	for _, k := range sslParams {
		if q.Has(k) {
			ssl[k] = q.Get(k)
			q.Del(k)
		}
	}
	switch u.Scheme {
	case "redis", "unix":
		if len(ssl) > 0 {
			return nil, fmt.Errorf("ssl parameters (%s) need a rediss:// URL", strings.Join(keys(ssl), ", "))
		}
	case "socket":
		// Celery's socket:///path?virtual_host=N spelling of a Unix socket.
		u.Scheme = "unix"
		if db := q.Get("virtual_host"); db != "" {
			q.Del("virtual_host")
			q.Set("db", db)
		}
	case "rediss":
	default:
		return nil, fmt.Errorf("scheme %q is not a Redis result backend (redis://, rediss://, unix://, sentinel://)", u.Scheme)
	}
	u.RawQuery = q.Encode()
	single, err := redis.ParseURL(u.String())
	if err != nil {
		return nil, err
	}
	o.single = single
	if u.Scheme == "rediss" {
		tc, warning, err := tlsConfig(ssl, single.TLSConfig)
		if err != nil {
			return nil, err
		}
		single.TLSConfig, o.warning = tc, warning
	}
	return o, nil
}

// tlsConfig builds the TLS settings of a rediss:// URL from Celery's
// ssl_* parameters. Like Celery, it refuses a URL that does not say
// whether the server's certificate is checked; unlike Python's client
// (which does not compare the name unless asked), a checked certificate
// must also name the host.
func tlsConfig(ssl map[string]string, base *tls.Config) (*tls.Config, string, error) {
	warning := ""
	reqs := strings.TrimPrefix(strings.ToLower(ssl["ssl_cert_reqs"]), "cert_")
	switch reqs {
	case "required", "optional":
	case "none":
		warning = "rediss:// with ssl_cert_reqs=CERT_NONE: the server's certificate is not checked (open to man-in-the-middle attacks)"
	case "":
		return nil, "", errors.New("a rediss:// URL must say ssl_cert_reqs=CERT_REQUIRED, CERT_OPTIONAL or CERT_NONE (as Celery requires)")
	default:
		return nil, "", fmt.Errorf("ssl_cert_reqs=%q: want CERT_REQUIRED, CERT_OPTIONAL or CERT_NONE", ssl["ssl_cert_reqs"])
	}
	keyFile := ssl["ssl_keyfile"]
	if keyFile == "" {
		keyFile = ssl["ssl_certfile"] // a PEM holding both, as Python's load_cert_chain takes
	}
	serverName := ""
	if base != nil {
		serverName = base.ServerName
	}
	tc, err := redistls.Config(redistls.Settings{ServerName: serverName, CertReqs: reqs,
		CACerts: ssl["ssl_ca_certs"], CertFile: ssl["ssl_certfile"], KeyFile: keyFile})
	if err != nil {
		return nil, "", err
	}
	return tc, warning, nil
}

// parseSentinel reads "sentinel://[:pw@]host:port/db;sentinel://..." as
// Celery's SentinelBackend does: each URL names a sentinel; the database
// and the password (which is the master's) come from the first.
func parseSentinel(raw string, topts TransportOptions) (*options, error) {
	master, _ := topts["master_name"].(string)
	if master == "" {
		return nil, errors.New("a sentinel:// result backend needs the transport option master_name (--result-backend-transport-options '{\"master_name\": \"mymaster\"}')")
	}
	fo := &redis.FailoverOptions{MasterName: master}
	var shown []string
	for i, part := range strings.Split(raw, ";") {
		part = strings.TrimSpace(part)
		scheme := "redis"
		if strings.HasPrefix(part, "sentinel+ssl://") {
			scheme = "rediss"
		}
		_, rest, ok := strings.Cut(part, "://")
		if !ok {
			return nil, fmt.Errorf("%q is not a sentinel:// URL", redact.URL(part))
		}
		one, err := parseOne(scheme + "://" + rest)
		if err != nil {
			return nil, err
		}
		shown = append(shown, redact.URL(part))
		fo.SentinelAddrs = append(fo.SentinelAddrs, one.single.Addr)
		if i == 0 {
			fo.DB, fo.Username, fo.Password = one.single.DB, one.single.Username, one.single.Password
			fo.TLSConfig = one.single.TLSConfig
		}
	}
	if kw, ok := topts["sentinel_kwargs"].(map[string]any); ok {
		fo.SentinelUsername, _ = kw["username"].(string)
		fo.SentinelPassword, _ = kw["password"].(string)
	}
	if err := applyTimeouts(topts, &fo.DialTimeout, &fo.ReadTimeout); err != nil {
		return nil, err
	}
	return &options{sentinel: fo, display: strings.Join(shown, ";")}, nil
}

// applyTimeouts reads socket_connect_timeout and socket_timeout (seconds).
func applyTimeouts(topts TransportOptions, dial, read *time.Duration) error {
	for key, dst := range map[string]*time.Duration{"socket_connect_timeout": dial, "socket_timeout": read} {
		v, ok := topts[key]
		if !ok || v == nil {
			continue
		}
		secs, err := seconds(v)
		if err != nil {
			return fmt.Errorf("transport option %s: %w", key, err)
		}
		*dst = time.Duration(secs * float64(time.Second))
	}
	return nil
}

func seconds(v any) (float64, error) {
	switch n := v.(type) {
	case float64:
		return n, nil
	case int:
		return float64(n), nil
	case string:
		return strconv.ParseFloat(n, 64)
	}
	return 0, fmt.Errorf("%v is not a number of seconds", v)
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, k := range sslParams {
		if _, ok := m[k]; ok {
			out = append(out, k)
		}
	}
	return out
}
