package cli

import (
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/celeryworker/gocelery/amqp"
	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/redisbroker"
)

// envTransportOptions is where --broker-transport-options is read from
// when the flag is not given (Celery's broker_transport_options).
const envTransportOptions = "CELERY_BROKER_TRANSPORT_OPTIONS"

// transportParams are the broker settings a command was given.
type transportParams struct {
	url string
	// options: kombu's transport options, as JSON or key=value pairs.
	options   string
	heartbeat time.Duration // AMQP only
	failover  string        // broker_failover_strategy; AMQP only
}

// openTransport picks the transport by the URL's scheme: redis://,
// rediss:// and sentinel:// are kombu's Redis transport, anything else
// goes to the AMQP transport (which names the schemes it takes when it
// refuses one). This is the only place that knows the transports.
func openTransport(p transportParams) (broker.Transport, error) {
	if redisbroker.Handles(p.url) {
		// go-redis logs each failed dial on its own; the worker's log
		// already says the broker cannot be reached, with the retry delay.
		redis.SetLogger(quietRedis{})
		opts, err := redisbroker.ParseOptions(p.options)
		if err != nil {
			return nil, broker.Misconfigured(fmt.Errorf("--broker-transport-options: %w", err))
		}
		tr, err := redisbroker.NewTransport(redisbroker.Params{URL: p.url, Options: opts})
		if err != nil {
			return nil, err
		}
		return tr, nil
	}
	if p.options != "" {
		return nil, broker.Misconfigured(fmt.Errorf("--broker-transport-options: the AMQP transport takes none (they are for redis://, rediss:// and sentinel:// brokers)"))
	}
	tr, err := amqp.NewTransport(amqp.Params{URL: p.url, Heartbeat: p.heartbeat, FailoverStrategy: p.failover})
	if err != nil {
		return nil, err
	}
	return tr, nil
}

// transportNotes are what the transport was given but does not use, for
// the start-up log.
func transportNotes(tr broker.Transport) []string {
	if rt, ok := tr.(*redisbroker.Transport); ok && len(rt.Options().Ignored) > 0 {
		return []string{fmt.Sprintf("--broker-transport-options: %v accepted and ignored (they tune redis-py/kombu internals)", rt.Options().Ignored)}
	}
	return nil
}
