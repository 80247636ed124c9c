package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
)

// Conn is one connection to Redis (a go-redis client and its pool). It
// implements broker.Conn and broker.Mailbox.
type Conn struct {
	tr   *Transport
	c    redis.UniversalClient
	k    keys
	name string

	doneOnce sync.Once
	done     chan struct{}
	errMu    sync.Mutex
	err      error

	// types are the exchange types declared on this connection: as in
	// kombu, routing looks them up locally, an unknown exchange being
	// direct.
	types sync.Map // exchange -> "direct" | "topic" | "fanout"

	declaredMu sync.Mutex
	declared   map[string]bool

	consMu sync.Mutex
	cons   *consumer

	ctrlMu sync.Mutex
	ctrl   []*redis.PubSub
}

var (
	_ broker.Conn    = (*Conn)(nil)
	_ broker.Mailbox = (*Conn)(nil)
)

// Event and control exchanges, as Celery names them. On Redis Celery
// makes the event exchange a fanout (PUBLISH) instead of a topic.
const (
	EventExchange        = "celeryev"
	ControlExchange      = "celery.pidbox"
	ControlReplyExchange = "reply.celery.pidbox"
)

// controlQueueExpires is Celery's control_queue_expires (10 s), which
// makes kombu bind pidbox queues with a deadline instead of permanently.
const controlQueueExpires = 10 * time.Second

func newConn(tr *Transport, c redis.UniversalClient, name string) *Conn {
	conn := &Conn{tr: tr, c: c, k: newKeys(&tr.opts, tr.t.db), name: name, done: make(chan struct{})}
	conn.types.Store(EventExchange, "fanout")
	conn.types.Store(ControlExchange, "fanout")
	return conn
}

// Client is the underlying go-redis client.
func (c *Conn) Client() redis.UniversalClient { return c.c }

// Done is closed when the connection has failed or been closed.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err says why the connection ended (nil after Close or while it lives).
func (c *Conn) Err() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.err
}

// fail ends the connection on a fault of the server or network.
func (c *Conn) fail(err error) {
	c.errMu.Lock()
	if c.err == nil {
		c.err = fmt.Errorf("redisbroker: connection lost: %w", err)
	}
	c.errMu.Unlock()
	c.end(false)
}

// Close stops consuming, sends the acknowledgements still waiting, puts
// every unsettled delivery back at the head of its queue in delivery order
// (kombu restores unacked messages when a channel closes, too), and closes
// the client.
func (c *Conn) Close() error {
	c.end(true)
	return nil
}

func (c *Conn) end(clean bool) {
	c.doneOnce.Do(func() {
		c.consMu.Lock()
		cons := c.cons
		c.consMu.Unlock()
		if cons != nil {
			cons.close(clean)
		}
		c.ctrlMu.Lock()
		for _, ps := range c.ctrl {
			_ = ps.Close()
		}
		c.ctrlMu.Unlock()
		close(c.done)
		_ = c.c.Close()
	})
}

// settleLeftovers sends the acks and restores the deliveries that an
// earlier, dead connection could not.
func (c *Conn) settleLeftovers(ctx context.Context) error {
	l := c.tr.takeLeftovers()
	if len(l.acks) > 0 {
		if err := c.removeTags(ctx, l.acks); err != nil {
			c.tr.putBackLeftovers(l)
			return err
		}
	}
	if len(l.restore) > 0 {
		if err := c.restoreDeliveries(ctx, l.restore); err != nil {
			c.tr.putBackLeftovers(leftovers{restore: l.restore})
			return err
		}
	}
	return nil
}

// DeclareQueue declares a task queue as kombu's Redis transport does: its
// main binding and extra bindings go into the exchanges' binding tables
// (queue arguments such as x-max-priority mean nothing on Redis, where
// priorities are the priority_steps lists).
func (c *Conn) DeclareQueue(ctx context.Context, q broker.Queue) error {
	if q.NoDeclare {
		return nil
	}
	if err := c.declare(ctx, q.Name, q.Exchange.Name, q.Exchange.Kind(), q.RoutingKey); err != nil {
		return err
	}
	for _, b := range q.Bindings {
		if err := c.declare(ctx, q.Name, b.Exchange.Name, b.Exchange.Kind(), b.RoutingKey); err != nil {
			return err
		}
	}
	return nil
}

// declare binds queue to exchange as kombu's queue_bind does on Redis: a
// member of the exchange's binding table (the pattern is the routing key
// as a regular expression for topic exchanges), kept permanently. Queues
// need no declaring of their own: a list exists once it holds a message.
func (c *Conn) declare(ctx context.Context, queue, exchange, kind, routingKey string) error {
	if queue == "" {
		return errors.New("redisbroker: declare: empty queue name")
	}
	if exchange == "" {
		return nil
	}
	if prev, ok := c.types.LoadOrStore(exchange, kind); ok && prev != kind {
		return broker.Misconfigured(fmt.Errorf("redisbroker: exchange %q is declared %s here, not %s", exchange, prev, kind))
	}
	pattern := ""
	if kind == "topic" {
		pattern = topicPattern(routingKey)
	}
	m := c.k.member(routingKey, pattern, queue)
	_, err := c.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.SAdd(ctx, c.k.binding(exchange), m)
		p.SAdd(ctx, c.k.permanent(exchange), m)
		return nil
	})
	if err != nil {
		return fmt.Errorf("redisbroker: bind queue %q to %q: %w", queue, exchange, classify(err))
	}
	return nil
}

// DeclareExchange records an exchange's type for routing, as kombu's
// exchange_declare does (its state is local to the connection).
func (c *Conn) DeclareExchange(_ context.Context, name, kind string, _ bool) error {
	if prev, ok := c.types.LoadOrStore(name, kind); ok && prev != kind {
		return broker.Misconfigured(fmt.Errorf("redisbroker: exchange %q is declared %s here, not %s", name, prev, kind))
	}
	return nil
}

// ensureQueue declares a queue once per connection before publishing to
// it, as Celery's producer declares the queue it sends to.
func (c *Conn) ensureQueue(ctx context.Context, q broker.Queue) error {
	c.declaredMu.Lock()
	defer c.declaredMu.Unlock()
	if c.declared[q.Name] {
		return nil
	}
	if err := c.DeclareQueue(ctx, q); err != nil {
		return err
	}
	if c.declared == nil {
		c.declared = map[string]bool{}
	}
	c.declared[q.Name] = true
	return nil
}

// topicPattern is kombu's regular expression for a topic binding key: "*"
// one word, "#" any words.
func topicPattern(key string) string {
	words := strings.Split(key, ".")
	for i, w := range words {
		switch w {
		case "*":
			words[i] = `[^\.]+`
		case "#":
			words[i] = `.*?`
		default:
			words[i] = regexp.QuoteMeta(w)
		}
	}
	return "^" + strings.Join(words, `\.`) + "$"
}

var patternCache sync.Map // string -> *regexp.Regexp (nil when invalid)

func matchPattern(pattern, key string) bool {
	v, ok := patternCache.Load(pattern)
	if !ok {
		re, err := regexp.Compile(pattern)
		if err != nil {
			re = nil
		}
		v, _ = patternCache.LoadOrStore(pattern, re)
	}
	re, _ := v.(*regexp.Regexp)
	return re != nil && re.MatchString(key)
}

// lookup is kombu's _lookup: the queues a message for exchange/routingKey
// goes to, by the exchange's binding table.
func (c *Conn) lookup(ctx context.Context, r redis.Cmdable, exchange, routingKey string) ([]string, error) {
	if exchange == "" {
		return []string{routingKey}, nil
	}
	members, err := r.SMembers(ctx, c.k.binding(exchange)).Result()
	if err != nil {
		return nil, err
	}
	// kombu takes the exchange's type from what this connection declared,
	// an unknown one being direct; here an unknown exchange's binding with
	// a pattern is matched as the topic binding it is, so restoring a
	// message published to a topic exchange nobody declared here does not
	// drop it.
	kind, known := c.types.Load(exchange)
	seen := map[string]bool{}
	var out []string
	for _, m := range members {
		parts := strings.SplitN(m, c.k.sep, 3)
		if len(parts) != 3 {
			continue
		}
		rk, pattern, queue := parts[0], parts[1], parts[2]
		ok := false
		switch {
		case kind == "topic" || !known && pattern != "":
			ok = matchPattern(pattern, routingKey)
		case kind == "fanout":
			ok = true
		default:
			ok = rk == routingKey
		}
		if ok && !seen[queue] {
			seen[queue] = true
			out = append(out, queue)
		}
	}
	return out, nil
}

// PublishTask pushes a task message onto the lists it routes to (LPUSH:
// consumers pop the other end), or PUBLISHes it on a fanout exchange.
func (c *Conn) PublishTask(ctx context.Context, r broker.Route, env *protocol.Envelope) error {
	switch {
	case r.Queue != nil:
		if err := c.ensureQueue(ctx, *r.Queue); err != nil {
			return err
		}
	case r.Exchange == "":
		if err := c.ensureQueue(ctx, broker.NewQueue(r.RoutingKey)); err != nil {
			return err
		}
	}
	return c.publish(ctx, r.Exchange, r.RoutingKey, env)
}

// PublishReply answers a control request: a direct route to the reply
// queue the client bound.
func (c *Conn) PublishReply(ctx context.Context, exchange, routingKey string, env *protocol.Envelope) error {
	return c.publish(ctx, exchange, routingKey, env)
}

// PublishEvent sends an event on the celeryev fanout (PUBLISH on
// "/<db>.celeryev/<routing key>"), as Celery's dispatcher does on Redis.
func (c *Conn) PublishEvent(ctx context.Context, routingKey string, env *protocol.Envelope) error {
	return c.publish(ctx, EventExchange, routingKey, env)
}

func (c *Conn) publish(ctx context.Context, exchange, routingKey string, env *protocol.Envelope) error {
	raw, _, err := encodeMessage(env, exchange, routingKey)
	if err != nil {
		return err
	}
	if kind, _ := c.types.Load(exchange); kind == "fanout" {
		if err := c.c.Publish(ctx, c.k.fanout(exchange, routingKey), raw).Err(); err != nil {
			return fmt.Errorf("redisbroker: publish to %q/%q: %w", exchange, routingKey, classify(err))
		}
		return nil
	}
	queues, err := c.lookup(ctx, c.c, exchange, routingKey)
	if err != nil {
		return fmt.Errorf("redisbroker: route %q/%q: %w", exchange, routingKey, classify(err))
	}
	pri := min(int(env.Priority), 9)
	switch len(queues) {
	case 0:
		return nil // unroutable: dropped, as kombu does without a dead-letter queue
	case 1:
		err = c.c.LPush(ctx, c.k.list(queues[0], pri), raw).Err()
	default:
		_, err = c.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, q := range queues {
				p.LPush(ctx, c.k.list(q, pri), raw)
			}
			return nil
		})
	}
	if err != nil {
		return fmt.Errorf("redisbroker: publish to %q/%q: %w", exchange, routingKey, classify(err))
	}
	return nil
}
