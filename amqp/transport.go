package amqp

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/celeryworker/gocelery/broker"
)

// Params configures the RabbitMQ transport.
type Params struct {
	// URL is a Celery broker URL (amqp://, amqps://, pyamqp://); empty
	// means Celery's default.
	URL string
	// Heartbeat is the AMQP heartbeat (Celery's broker_heartbeat); 0 means
	// 60 s, negative turns heartbeats off.
	Heartbeat time.Duration
	// FailoverStrategy orders the URLs of a ";"-separated list, as
	// Celery's broker_failover_strategy: "round-robin" (the default) or
	// "shuffle".
	FailoverStrategy string
}

// Transport dials RabbitMQ; it implements broker.Transport. With a
// failover list it moves to the next URL when one cannot be reached, and
// stays on the one that worked.
type Transport struct {
	raw       string
	uris      []amqp091.URI
	raws      []string
	heartbeat time.Duration

	mu      sync.Mutex
	current int // index of the URL to try first
}

var _ broker.Transport = (*Transport)(nil)

// NewTransport checks the URL at once, so a URL that can never work ends
// the worker before it starts (errors wrap broker.ErrMisconfigured).
func NewTransport(p Params) (*Transport, error) {
	uris, raws, err := ParseURLs(p.URL)
	if err != nil {
		return nil, broker.Misconfigured(err)
	}
	switch p.FailoverStrategy {
	case "", "round-robin":
	case "shuffle":
		rand.Shuffle(len(uris), func(i, j int) {
			uris[i], uris[j] = uris[j], uris[i]
			raws[i], raws[j] = raws[j], raws[i]
		})
	default:
		return nil, broker.Misconfigured(fmt.Errorf("amqp: broker failover strategy %q is not supported (want round-robin or shuffle)", p.FailoverStrategy))
	}
	hb := p.Heartbeat
	if hb == 0 {
		hb = 60 * time.Second
	}
	if hb < 0 {
		hb = 0
	}
	raw := p.URL
	if raw == "" {
		raw = DefaultURL
	}
	return &Transport{raw: raw, uris: uris, raws: raws, heartbeat: hb}, nil
}

// Info describes the broker in use (the current URL of a failover list),
// password redacted; URL is the whole list, redacted.
func (t *Transport) Info() broker.Info {
	t.mu.Lock()
	u := t.uris[t.current]
	t.mu.Unlock()
	return broker.Info{Transport: "amqp", URL: Redacted(t.raw), Hostname: u.Host, Port: u.Port,
		UserID: u.Username, VirtualHost: u.Vhost, SSL: u.Scheme == "amqps",
		Heartbeat: t.heartbeat.Seconds()}
}

// Dial connects to the current URL, and on a fault that may heal moves
// round the failover list until one answers; a misconfiguration ends the
// round at once. Every URL in errors and logs is redacted.
func (t *Transport) Dial(ctx context.Context, p broker.DialParams) (broker.Conn, error) {
	t.mu.Lock()
	start := t.current
	t.mu.Unlock()
	var errs []error
	for k := range t.uris {
		i := (start + k) % len(t.uris)
		c, err := dial(ctx, t.uris[i], t.heartbeat, p.Name)
		if err == nil {
			t.mu.Lock()
			t.current = i
			t.mu.Unlock()
			return c, nil
		}
		err = fmt.Errorf("amqp: connect to %s: %w", Redacted(t.raws[i]), classify(err))
		if errors.Is(err, broker.ErrMisconfigured) || ctx.Err() != nil {
			return nil, err
		}
		errs = append(errs, err)
	}
	// Next time, start after the one tried first.
	t.mu.Lock()
	t.current = (start + 1) % len(t.uris)
	t.mu.Unlock()
	return nil, errors.Join(errs...)
}

func dial(ctx context.Context, uri amqp091.URI, heartbeat time.Duration, name string) (*Conn, error) {
	cfg := amqp091.Config{
		Heartbeat: heartbeat,
		Locale:    "en_US",
		Properties: amqp091.Table{
			"connection_name": name,
			"product":         "gocelery",
		},
		Dial: amqp091.DefaultDial(10 * time.Second),
	}
	type result struct {
		c   *amqp091.Connection
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := amqp091.DialConfig(uri.String(), cfg)
		done <- result{c, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, r.err
		}
		return newConn(r.c, name), nil
	case <-ctx.Done():
		go func() {
			if r := <-done; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// classify marks the errors no retry can heal with
// broker.ErrMisconfigured, and says what to fix.
func classify(err error) error {
	var ae *amqp091.Error
	switch {
	case errors.Is(err, amqp091.ErrCredentials):
		return broker.Misconfigured(fmt.Errorf("the broker refused the login (wrong user name or password): %w", err))
	case errors.Is(err, amqp091.ErrVhost):
		return broker.Misconfigured(fmt.Errorf("the virtual host does not exist or the user may not use it: %w", err))
	case errors.Is(err, amqp091.ErrSASL):
		return broker.Misconfigured(fmt.Errorf("no authentication mechanism in common with the broker: %w", err))
	case errors.As(err, &ae):
		switch ae.Code {
		case amqp091.AccessRefused:
			return broker.Misconfigured(fmt.Errorf("access refused: %w", err))
		case amqp091.NotAllowed:
			return broker.Misconfigured(fmt.Errorf("not allowed (does the virtual host exist?): %w", err))
		case amqp091.PreconditionFailed:
			return broker.Misconfigured(fmt.Errorf("it exists with other arguments or type: %w", err))
		}
	}
	return err // refused, unreachable, timed out: may heal
}
