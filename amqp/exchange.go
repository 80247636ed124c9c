package amqp

import (
	"context"
	"fmt"
)

// DeclareExchange declares an exchange (not auto-delete, not internal, no
// arguments), as kombu does before a producer publishes to it, e.g. the
// celery.pidbox fanout exchange (kind "fanout", not durable) that
// app.control.revoke broadcasts on. Declaring an exchange that exists with
// the same attributes is a no-op; other attributes give an error wrapping
// broker.ErrMisconfigured.
func (c *Conn) DeclareExchange(_ context.Context, name, kind string, durable bool) error {
	ch, err := c.channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	if err := ch.ExchangeDeclare(name, kind, durable, false, false, false, nil); err != nil {
		return fmt.Errorf("amqp: declare exchange %q (%s): %w", name, kind, classify(err))
	}
	return nil
}
