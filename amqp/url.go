package amqp

import (
	"fmt"
	"net/url"
	"strings"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/celeryworker/gocelery/internal/redact"
)

// DefaultURL is Celery's default broker.
const DefaultURL = "amqp://guest:guest@localhost:5672//"

// ParseURLs reads a ";"-separated failover list (Celery's broker_url
// with alternates), every URL as ParseURL reads one.
func ParseURLs(raw string) ([]amqp091.URI, []string, error) {
	if raw == "" {
		raw = DefaultURL
	}
	var uris []amqp091.URI
	var raws []string
	for _, part := range strings.Split(raw, ";") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		u, err := ParseURL(part)
		if err != nil {
			return nil, nil, err
		}
		uris, raws = append(uris, u), append(raws, part)
	}
	if len(uris) == 0 {
		return nil, nil, fmt.Errorf("amqp: broker URL %q names no broker", Redacted(raw))
	}
	return uris, raws, nil
}

// ParseURL reads a broker URL as Celery/kombu write it and returns the URI
// amqp091 dials. Differences from amqp091's own parser: "amqp://host//"
// and "amqp://host/" both mean vhost "/" (kombu's default), the pyamqp and
// librabbitmq schemes are aliases of amqp, a user name or password may hold
// unencoded "@", "#", "/", ":" or "%" (redact.EscapeUserinfo), and of a
// ";"-separated failover list the first URL is read (ParseURLs reads them
// all).
func ParseURL(raw string) (amqp091.URI, error) {
	if raw == "" {
		raw = DefaultURL
	}
	if i := strings.IndexByte(raw, ';'); i >= 0 {
		raw = raw[:i]
	}
	// Passwords are often written unencoded; read them as kombu users mean.
	u, err := url.Parse(redact.EscapeUserinfo(raw))
	if err != nil {
		return amqp091.URI{}, fmt.Errorf("amqp: broker URL: %w", redact.Error(err, raw))
	}
	switch u.Scheme {
	case "amqp", "pyamqp", "librabbitmq":
		u.Scheme = "amqp"
	case "amqps", "pyamqps":
		u.Scheme = "amqps"
	default:
		return amqp091.URI{}, fmt.Errorf("amqp: broker URL scheme %q is not supported (want amqp:// or amqps://)", u.Scheme)
	}
	vhost := "/"
	if p := u.Path; p != "" && p != "/" {
		vhost, err = url.PathUnescape(strings.TrimPrefix(u.EscapedPath(), "/"))
		if err != nil {
			return amqp091.URI{}, fmt.Errorf("amqp: broker URL vhost: %w", err)
		}
	}
	u.Path = ""
	u.RawPath = ""
	uri, err := amqp091.ParseURI(u.String())
	if err != nil {
		return amqp091.URI{}, fmt.Errorf("amqp: broker URL: %w", redact.Error(err, raw))
	}
	uri.Vhost = vhost
	return uri, nil
}

// Redacted returns the URL with its password hidden, for logs and errors.
func Redacted(raw string) string { return redact.URL(raw) }
