package amqp

import (
	"context"
	"errors"
	"fmt"
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
}

// Transport dials RabbitMQ; it implements broker.Transport.
type Transport struct {
	raw       string
	uri       amqp091.URI
	heartbeat time.Duration
}

var _ broker.Transport = (*Transport)(nil)

// NewTransport checks the URL at once, so a URL that can never work ends
// the worker before it starts (errors wrap broker.ErrMisconfigured).
func NewTransport(p Params) (*Transport, error) {
	uri, err := ParseURL(p.URL)
	if err != nil {
		return nil, broker.Misconfigured(err)
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
	return &Transport{raw: raw, uri: uri, heartbeat: hb}, nil
}

// Info describes the broker, password redacted.
func (t *Transport) Info() broker.Info {
	return broker.Info{Transport: "amqp", URL: Redacted(t.raw), Hostname: t.uri.Host, Port: t.uri.Port,
		UserID: t.uri.Username, VirtualHost: t.uri.Vhost, SSL: t.uri.Scheme == "amqps",
		Heartbeat: t.heartbeat.Seconds()}
}

// Dial connects; see broker.Transport.
func (t *Transport) Dial(ctx context.Context, p broker.DialParams) (broker.Conn, error) {
	c, err := dial(ctx, t.uri, t.heartbeat, p.Name)
	if err != nil {
		return nil, fmt.Errorf("amqp: connect to %s: %w", Redacted(t.raw), classify(err))
	}
	return c, nil
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
