package redisbroker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/celeryworker/gocelery/internal/redact"
	"github.com/celeryworker/gocelery/internal/redistls"
)

// Schemes this transport serves.
var Schemes = []string{"redis", "rediss", "sentinel", "sentinels"}

// Handles reports whether a broker URL is one of this transport's.
func Handles(raw string) bool {
	scheme, _, ok := strings.Cut(strings.TrimSpace(raw), "://")
	if !ok {
		return false
	}
	for _, s := range Schemes {
		if strings.EqualFold(scheme, s) {
			return true
		}
	}
	return false
}

// target is a parsed broker URL.
type target struct {
	scheme    string // redis, rediss or sentinel
	addrs     []string
	username  string
	password  string
	db        int
	tls       bool
	query     map[string]string // kombu's query options (ssl_*)
	redacted  string
	host      string
	port      int
	sentinels bool
}

// parseURL reads kombu's Redis URL forms: redis://[user:pass@]host[:port][/db],
// rediss://... (TLS), and sentinel://host:port[;sentinel://host:port...]
// (the master group is the master_name transport option).
func parseURL(raw string) (*target, error) {
	t := &target{redacted: redact.URL(raw), query: map[string]string{}}
	parts := strings.Split(raw, ";")
	for i, part := range parts {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		u, err := url.Parse(part)
		if err != nil {
			return nil, fmt.Errorf("redisbroker: broker URL: %w", redact.Error(err, part))
		}
		scheme := strings.ToLower(u.Scheme)
		switch scheme {
		case "redis", "rediss":
			if i > 0 {
				return nil, fmt.Errorf("redisbroker: broker URL %s: a list of URLs is for sentinel:// only", t.redacted)
			}
		case "sentinel", "sentinels":
			t.sentinels = true
		default:
			return nil, fmt.Errorf("redisbroker: broker URL scheme %q is not supported (want redis://, rediss:// or sentinel://)", u.Scheme)
		}
		if i > 0 && t.scheme != scheme {
			return nil, fmt.Errorf("redisbroker: broker URL %s mixes schemes", t.redacted)
		}
		t.scheme = scheme
		host := u.Hostname()
		if host == "" {
			host = "localhost"
		}
		port := 6379
		if t.sentinels {
			port = 26379
		}
		if p := u.Port(); p != "" {
			if port, err = strconv.Atoi(p); err != nil || port <= 0 || port > 65535 {
				return nil, fmt.Errorf("redisbroker: broker URL %s: bad port %q", t.redacted, p)
			}
		}
		t.addrs = append(t.addrs, net.JoinHostPort(host, strconv.Itoa(port)))
		if i == 0 || len(t.addrs) == 1 {
			t.host, t.port = host, port
			if u.User != nil {
				t.username = u.User.Username()
				t.password, _ = u.User.Password()
			}
			if db := strings.Trim(u.Path, "/"); db != "" {
				if t.db, err = strconv.Atoi(db); err != nil || t.db < 0 {
					return nil, fmt.Errorf("redisbroker: broker URL %s: the path is the database number, not %q", t.redacted, db)
				}
			}
			for k, v := range u.Query() {
				if len(v) > 0 {
					t.query[k] = v[len(v)-1]
				}
			}
		}
	}
	if len(t.addrs) == 0 {
		return nil, fmt.Errorf("redisbroker: broker URL %q names no server", t.redacted)
	}
	t.tls = t.scheme == "rediss" || t.scheme == "sentinels" || t.query["ssl"] == "true"
	return t, nil
}

// queryOptions returns the options a URL carries in its query
// (?ssl_cert_reqs=required&...), as kombu reads them.
func (t *target) queryOptions() map[string]any {
	m := map[string]any{}
	for k, v := range t.query {
		switch k {
		case "ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "master_name":
			m[k] = v
		case "visibility_timeout", "socket_timeout", "socket_connect_timeout":
			m[k] = v
		}
	}
	return m
}

// tlsConfig builds the TLS settings of rediss:// as redis-py applies
// ssl_cert_reqs, ssl_ca_certs, ssl_certfile and ssl_keyfile.
func tlsConfig(o *Options, host string) (*tls.Config, error) {
	if (o.SSLCertFile == "") != (o.SSLKeyFile == "") {
		return nil, errors.New("redisbroker: ssl_certfile and ssl_keyfile go together")
	}
	c, err := redistls.Config(redistls.Settings{ServerName: host, CertReqs: o.SSLCertReqs,
		CACerts: o.SSLCACerts, CertFile: o.SSLCertFile, KeyFile: o.SSLKeyFile})
	if err != nil {
		return nil, fmt.Errorf("redisbroker: %w", err)
	}
	return c, nil
}

// clientOptions are the go-redis settings for the target.
func (t *target) client(o *Options, name string) (redis.UniversalClient, error) {
	var tc *tls.Config
	if t.tls {
		var err error
		if tc, err = tlsConfig(o, t.host); err != nil {
			return nil, err
		}
	}
	cn := o.ClientName
	if cn == "" {
		// CLIENT SETNAME takes no spaces or special characters.
		cn = strings.Map(func(r rune) rune {
			if r <= ' ' || r > '~' {
				return '_'
			}
			return r
		}, name)
	}
	readTimeout := o.SocketTimeout
	if readTimeout == 0 {
		readTimeout = -1 // redis-py's default: wait
	}
	pool := max(o.MaxConnections, 4) + 2 // the blocking pop and pub/sub hold one each
	if t.sentinels {
		if o.MasterName == "" {
			return nil, errors.New("redisbroker: a sentinel:// broker URL needs the master_name transport option (--broker-transport-options master_name=mymaster)")
		}
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: o.MasterName, SentinelAddrs: t.addrs, SentinelPassword: o.SentinelPassword,
			Username: t.username, Password: t.password, DB: t.db, TLSConfig: tc, ClientName: cn,
			DialTimeout: o.SocketConnectTimeout, ReadTimeout: readTimeout, WriteTimeout: o.SocketTimeout,
			PoolSize: pool, Protocol: 2, DisableIdentity: true,
		}), nil
	}
	return redis.NewClient(&redis.Options{
		Addr: t.addrs[0], Username: t.username, Password: t.password, DB: t.db, TLSConfig: tc,
		ClientName: cn, DialTimeout: o.SocketConnectTimeout, ReadTimeout: readTimeout,
		WriteTimeout: o.SocketTimeout, PoolSize: pool, Protocol: 2, DisableIdentity: true,
	}), nil
}
