package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
)

// Config configures a Client.
type Config struct {
	// Broker is the transport, e.g. amqp.NewTransport(amqp.Params{URL: ...}),
	// or brokertest.New() in unit tests.
	Broker broker.Transport
	// Backend reads results (AsyncResult) and keeps chord counters; nil
	// means results cannot be read and chords cannot be sent.
	Backend *backends.Redis
	// DefaultQueue is where tasks go without a Queue option (Celery's
	// task_default_queue, "celery"; Topology.DefaultQueue when that is
	// set).
	DefaultQueue string
	// Topology defines the queues as the worker's Config.Topology does;
	// the client declares a queue as it says before sending to it, and
	// sends countdown/ETA tasks for quorum queues through native delayed
	// delivery as Celery's producer does.
	Topology broker.Topology
	// DefaultPriority is task_default_priority, for tasks sent without a
	// priority (0: none).
	DefaultPriority int
	// Serializer and Compression are the defaults for messages (Celery's
	// task_serializer, "json", and task_compression, none).
	Serializer  string
	Compression string
	// Origin is the origin header (default gen<pid>@<hostname>, as Celery
	// writes it).
	Origin string
	// ID is the client's id, sent as the reply_to property and frozen into
	// canvas signatures (Celery's app.thread_oid); default a new UUID.
	ID string
	// Name names the broker connection (default "gocelery-client <origin>").
	Name string
}

// Client sends tasks and reads their results. It is safe for concurrent
// use. It holds one broker connection, dialed by New and again on the
// next send after it is lost.
type Client struct {
	cfg       Config
	transport broker.Transport
	backend   *backends.Redis

	mu       sync.Mutex
	conn     broker.Conn
	closed   bool
	declared map[string]bool
}

// ErrNoBackend: reading results or sending a chord needs Config.Backend.
var ErrNoBackend = errors.New("client: no result backend configured")

// ErrClosed: the client was closed.
var ErrClosed = errors.New("client: closed")

// New connects to the broker. Errors that wrap broker.ErrMisconfigured
// (a wrong URL, refused credentials) will not heal by retrying.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Broker == nil {
		return nil, errors.New("client: no broker transport")
	}
	if cfg.Topology.DefaultQueue == "" {
		cfg.Topology.DefaultQueue = cfg.DefaultQueue
	}
	cfg.DefaultQueue = cfg.Topology.Default()
	if err := cfg.Topology.Validate(); err != nil {
		return nil, fmt.Errorf("client: queues: %w", err)
	}
	if cfg.DefaultPriority < 0 || cfg.DefaultPriority > 255 {
		return nil, fmt.Errorf("client: default priority %d: want 0 to 255", cfg.DefaultPriority)
	}
	if cfg.Serializer == "" {
		cfg.Serializer = "json"
	}
	if _, _, err := protocol.ContentType(cfg.Serializer); err != nil {
		return nil, fmt.Errorf("client: serializer: %w", err)
	}
	if cfg.Origin == "" {
		host, _ := os.Hostname()
		cfg.Origin = fmt.Sprintf("gen%d@%s", os.Getpid(), host)
	}
	if cfg.ID == "" {
		cfg.ID = protocol.NewUUID()
	}
	if cfg.Name == "" {
		cfg.Name = "gocelery-client " + cfg.Origin
	}
	c := &Client{cfg: cfg, transport: cfg.Broker, backend: cfg.Backend, declared: map[string]bool{}}
	if _, err := c.liveConn(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Backend is the result backend (nil when none was configured).
func (c *Client) Backend() *backends.Redis { return c.backend }

// ID is the client's id (the reply_to property of what it sends).
func (c *Client) ID() string { return c.cfg.ID }

// Close closes the broker connection. The backend is the caller's to close.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn = nil
	return err
}

// liveConn returns the connection, dialing a new one when there is none or
// it has ended.
func (c *Client) liveConn(ctx context.Context) (broker.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if c.conn != nil {
		select {
		case <-c.conn.Done():
			c.conn.Close()
			c.conn = nil
			c.declared = map[string]bool{}
		default:
			return c.conn, nil
		}
	}
	conn, err := c.transport.Dial(ctx, broker.DialParams{Name: c.cfg.Name})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	c.conn = conn
	return conn, nil
}

// exchangeDeclarer is implemented by transports that can declare an
// exchange before publishing to it (amqp.Conn).
type exchangeDeclarer interface {
	DeclareExchange(ctx context.Context, name, kind string, durable bool) error
}

// publish sends env with confirms. When the connection was lost under it,
// it dials again and publishes again, up to three attempts, as Celery's
// default publish retry policy does.
func (c *Client) publish(ctx context.Context, route broker.Route, env *protocol.Envelope, declareExchange func(ctx context.Context, d exchangeDeclarer) error) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var conn broker.Conn
		conn, err = c.liveConn(ctx)
		if err != nil {
			return err
		}
		if route.Queue != nil {
			if err = c.declareQueue(ctx, conn, *route.Queue); err != nil {
				return err
			}
		}
		if declareExchange != nil {
			if d, ok := conn.(exchangeDeclarer); ok {
				if err = declareExchange(ctx, d); err != nil {
					return fmt.Errorf("client: %w", err)
				}
			}
		}
		if err = conn.PublishTask(ctx, route, env); err == nil {
			return nil
		}
		if ctx.Err() != nil || errors.Is(err, broker.ErrMisconfigured) {
			break
		}
		select {
		case <-conn.Done():
			// Lost: try again on a new connection.
		case <-time.After(100 * time.Millisecond):
			select {
			case <-conn.Done():
			default:
				return fmt.Errorf("client: %w", err)
			}
		}
	}
	return fmt.Errorf("client: %w", err)
}

func (c *Client) declareQueue(ctx context.Context, conn broker.Conn, q broker.Queue) error {
	queue := q.Name
	c.mu.Lock()
	done := c.declared[queue]
	c.mu.Unlock()
	if done {
		return nil
	}
	if err := conn.DeclareQueue(ctx, q); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	c.mu.Lock()
	c.declared[queue] = true
	c.mu.Unlock()
	return nil
}
