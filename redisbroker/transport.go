package redisbroker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/celeryworker/gocelery/broker"
)

// Params configures the Redis transport.
type Params struct {
	// URL is a kombu Redis broker URL: redis://[user:password@]host[:port][/db],
	// rediss://... (TLS) or sentinel://host:port[;sentinel://host:port...].
	URL string
	// Options are kombu's transport options by kombu's names
	// (broker_transport_options), e.g. {"visibility_timeout": 43200}.
	Options map[string]any
}

// Transport dials Redis; it implements broker.Transport.
type Transport struct {
	t    *target
	opts Options

	mu sync.Mutex
	// left are the unsettled deliveries and unsent acks of connections
	// that died: the next connection settles them (acks sent, the others
	// put back at once) instead of leaving them to the visibility timeout.
	left leftovers
}

type leftovers struct {
	acks    []string
	restore []*delivery
}

var _ broker.Transport = (*Transport)(nil)

// NewTransport checks the URL and options at once, so a configuration that
// can never work ends the worker before it starts (errors wrap
// broker.ErrMisconfigured).
func NewTransport(p Params) (*Transport, error) {
	t, err := parseURL(p.URL)
	if err != nil {
		return nil, broker.Misconfigured(err)
	}
	o := DefaultOptions()
	if err := o.Apply(t.queryOptions()); err != nil {
		return nil, broker.Misconfigured(fmt.Errorf("redisbroker: broker URL %s: %w", t.redacted, err))
	}
	if err := o.Apply(p.Options); err != nil {
		return nil, broker.Misconfigured(fmt.Errorf("redisbroker: %w", err))
	}
	if t.sentinels && o.MasterName == "" {
		return nil, broker.Misconfigured(errors.New("redisbroker: a sentinel:// broker URL needs the master_name transport option (e.g. master_name=mymaster)"))
	}
	if o.VisibilityTimeout <= 0 {
		return nil, broker.Misconfigured(errors.New("redisbroker: visibility_timeout must be more than 0 seconds"))
	}
	if t.tls {
		if _, err := tlsConfig(&o, t.host); err != nil {
			return nil, broker.Misconfigured(err)
		}
	}
	return &Transport{t: t, opts: o}, nil
}

// Options are the transport options in force.
func (tr *Transport) Options() Options { return tr.opts }

// Info describes the broker, password redacted.
func (tr *Transport) Info() broker.Info {
	return broker.Info{Transport: "redis", URL: tr.t.redacted, Hostname: tr.t.host, Port: tr.t.port,
		UserID: tr.t.username, VirtualHost: fmt.Sprint(tr.t.db), SSL: tr.t.tls}
}

// Dial connects and checks the login as redis-py does; refused credentials,
// a database index the server does not have and TLS certificate errors
// wrap broker.ErrMisconfigured, a refused connection does not.
func (tr *Transport) Dial(ctx context.Context, p broker.DialParams) (broker.Conn, error) {
	client, err := tr.t.client(&tr.opts, p.Name)
	if err != nil {
		return nil, broker.Misconfigured(err)
	}
	if err := ping(ctx, client, tr.t); err != nil {
		client.Close()
		return nil, fmt.Errorf("redisbroker: connect to %s: %w", tr.t.redacted, err)
	}
	c := newConn(tr, client, p.Name)
	if err := c.settleLeftovers(ctx); err != nil {
		client.Close()
		return nil, fmt.Errorf("redisbroker: connect to %s: %w", tr.t.redacted, err)
	}
	return c, nil
}

// ping checks the connection, and sends AUTH as redis-py does: go-redis
// logs in with HELLO, which a server without a password accepts whatever
// the password, where redis-py's AUTH is refused.
func ping(ctx context.Context, c redis.UniversalClient, t *target) error {
	if err := c.Ping(ctx).Err(); err != nil {
		return classify(err)
	}
	if t.password != "" && t.username == "" {
		if err := c.Do(ctx, "AUTH", t.password).Err(); err != nil {
			return classify(err)
		}
	}
	return nil
}

// classify marks the errors no retry can heal.
func classify(err error) error {
	if err == nil {
		return nil
	}
	s := err.Error()
	for _, m := range []string{"WRONGPASS", "NOAUTH", "without any password configured", "invalid password",
		"NOPERM", "invalid username-password", "DB index is out of range", "invalid DB index"} {
		if strings.Contains(s, m) {
			return broker.Misconfigured(fmt.Errorf("the server refused the login or database (fix the user, password or /db of the URL): %w", err))
		}
	}
	var ue x509.UnknownAuthorityError
	var he x509.HostnameError
	var ce *tls.CertificateVerificationError
	if errors.As(err, &ue) || errors.As(err, &he) || errors.As(err, &ce) {
		return broker.Misconfigured(fmt.Errorf("TLS certificate refused (ssl_ca_certs, ssl_cert_reqs): %w", err))
	}
	return err
}

// leave records what a dead connection could not settle.
func (tr *Transport) leave(acks []string, restore []*delivery) {
	if len(acks) == 0 && len(restore) == 0 {
		return
	}
	tr.mu.Lock()
	tr.left.acks = append(tr.left.acks, acks...)
	tr.left.restore = append(tr.left.restore, restore...)
	tr.mu.Unlock()
}

func (tr *Transport) takeLeftovers() leftovers {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	l := tr.left
	tr.left = leftovers{}
	return l
}

func (tr *Transport) putBackLeftovers(l leftovers) {
	tr.leave(l.acks, l.restore)
}
