package redisbroker

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Options are kombu's Redis transport options (Celery's
// broker_transport_options), with kombu's defaults.
type Options struct {
	// VisibilityTimeout: a message taken this long ago and not
	// acknowledged is put back in its queue by whichever consumer runs the
	// next restore (kombu's visibility_timeout, default 1 hour).
	VisibilityTimeout time.Duration
	// GlobalKeyPrefix is put before every key and pub/sub channel.
	GlobalKeyPrefix string
	// PrioritySteps are the priority sub-lists, ascending (default 0 3 6 9).
	PrioritySteps []int
	// Sep joins a queue name and its priority step, and binding fields.
	Sep string
	// FanoutPrefix is the pub/sub channel prefix, "/{db}." by default
	// ({db} is the database number); "" when fanout_prefix is false.
	FanoutPrefix string
	// FanoutPatterns adds "/<routing key>" to fanout channel names.
	FanoutPatterns bool

	UnackedKey, UnackedIndexKey, UnackedMutexKey string
	// UnackedMutexExpire bounds how long a restore holds the mutex.
	UnackedMutexExpire time.Duration
	// UnackedRestoreLimit caps the messages one restore puts back (0: all).
	UnackedRestoreLimit int
	// UnackedRestoreInterval × UnackedRestoreThrottle is how often a
	// consumer runs restore_visible (kombu: every 10 s, scanning on every
	// 10th call).
	UnackedRestoreInterval time.Duration
	UnackedRestoreThrottle int

	// HealthCheckInterval: a consumer PINGs this often, so a server gone
	// while the prefetch window is full (nothing else to send) still ends
	// the connection (kombu's health_check_interval, default 25 s; 0: off).
	HealthCheckInterval time.Duration

	// SocketTimeout bounds commands other than the blocking pop;
	// SocketConnectTimeout bounds connecting (0: the client's defaults).
	SocketTimeout, SocketConnectTimeout time.Duration
	// QueueOrderStrategy: round_robin (default), sorted or priority.
	QueueOrderStrategy string
	MaxConnections     int
	ClientName         string
	// MasterName is the Sentinel master group (sentinel:// URLs).
	MasterName string
	// SentinelPassword authenticates to the sentinels themselves
	// (sentinel_kwargs {"password": ...}).
	SentinelPassword string
	// TLS settings of rediss:// (also read from the URL's query):
	// ssl_cert_reqs (required, optional, none), ssl_ca_certs,
	// ssl_certfile, ssl_keyfile.
	SSLCertReqs, SSLCACerts, SSLCertFile, SSLKeyFile string

	// Ignored lists the options given that this transport accepts but does
	// not use (kombu's retry policy, health checks, keepalive...), for the
	// caller to log.
	Ignored []string
}

// DefaultOptions are kombu 5.7's.
func DefaultOptions() Options {
	return Options{
		VisibilityTimeout:      time.Hour,
		PrioritySteps:          []int{0, 3, 6, 9},
		Sep:                    "\x06\x16",
		FanoutPrefix:           "/{db}.",
		FanoutPatterns:         true,
		UnackedKey:             "unacked",
		UnackedIndexKey:        "unacked_index",
		UnackedMutexKey:        "unacked_mutex",
		UnackedMutexExpire:     300 * time.Second,
		UnackedRestoreInterval: 10 * time.Second,
		UnackedRestoreThrottle: 10,
		QueueOrderStrategy:     "round_robin",
		MaxConnections:         10,
		HealthCheckInterval:    25 * time.Second,
	}
}

// ignoredOptions are accepted for Celery configurations to run as they are.
var ignoredOptions = []string{
	"ack_emulation", "socket_keepalive", "socket_keepalive_options",
	"retry_on_timeout", "max_retries", "interval_start", "interval_step", "interval_max",
	"polling_interval", "reauth_check_interval", "min_other_sentinels", "sentinel_fanout_compat",
	"body_encoding", "deadletter_queue", "confirm_publish", "retry_policy",
}

// ParseOptions reads transport options written as a JSON object
// ({"visibility_timeout": 43200}) or as comma-separated key=value pairs
// (visibility_timeout=43200,global_keyprefix=app:) whose values are read
// as JSON when they parse as JSON, else as strings.
func ParseOptions(s string) (map[string]any, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	if strings.HasPrefix(s, "{") {
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			return nil, fmt.Errorf("transport options: not a JSON object: %w", err)
		}
		return m, nil
	}
	m := map[string]any{}
	for _, part := range splitTop(s) {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("transport options: %q is not key=value", part)
		}
		var val any
		if err := json.Unmarshal([]byte(v), &val); err != nil {
			val = v
		}
		m[strings.TrimSpace(k)] = val
	}
	return m, nil
}

// splitTop splits at the commas outside brackets, so a list value
// (priority_steps=[0,3,6,9]) stays whole.
func splitTop(s string) []string {
	var out []string
	depth, start := 0, 0
	for i, r := range s {
		switch r {
		case '[', '{':
			depth++
		case ']', '}':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

// Apply sets the options named in m (kombu's names) on o.
func (o *Options) Apply(m map[string]any) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var errs []error
	for _, k := range keys {
		if err := o.apply(k, m[k]); err != nil {
			errs = append(errs, fmt.Errorf("transport option %s: %w", k, err))
		}
	}
	return errors.Join(errs...)
}

func (o *Options) apply(k string, v any) error {
	var err error
	switch k {
	case "visibility_timeout":
		o.VisibilityTimeout, err = seconds(v, false)
	case "global_keyprefix":
		o.GlobalKeyPrefix, err = str(v)
	case "priority_steps":
		o.PrioritySteps, err = steps(v)
	case "sep":
		o.Sep, err = str(v)
		if err == nil && o.Sep == "" {
			err = errors.New("must not be empty")
		}
	case "fanout_prefix":
		switch x := v.(type) {
		case bool:
			o.FanoutPrefix = ""
			if x {
				o.FanoutPrefix = "/{db}."
			}
		case string:
			o.FanoutPrefix = x
		default:
			err = fmt.Errorf("want true, false or a prefix string, got %v", v)
		}
	case "fanout_patterns":
		o.FanoutPatterns, err = boolean(v)
	case "unacked_key":
		o.UnackedKey, err = str(v)
	case "unacked_index_key":
		o.UnackedIndexKey, err = str(v)
	case "unacked_mutex_key":
		o.UnackedMutexKey, err = str(v)
	case "unacked_mutex_expire":
		o.UnackedMutexExpire, err = seconds(v, false)
	case "unacked_restore_limit":
		o.UnackedRestoreLimit, err = integer(v)
	case "unacked_restore_interval":
		o.UnackedRestoreInterval, err = seconds(v, false)
	case "unacked_restore_throttle":
		o.UnackedRestoreThrottle, err = integer(v)
	case "health_check_interval":
		o.HealthCheckInterval, err = seconds(v, true)
	case "socket_timeout":
		o.SocketTimeout, err = seconds(v, true)
	case "socket_connect_timeout":
		o.SocketConnectTimeout, err = seconds(v, true)
	case "queue_order_strategy":
		o.QueueOrderStrategy, err = str(v)
		if err == nil && !slices.Contains([]string{"round_robin", "sorted", "priority"}, o.QueueOrderStrategy) {
			err = fmt.Errorf("want round_robin, sorted or priority, got %q", o.QueueOrderStrategy)
		}
	case "max_connections":
		o.MaxConnections, err = integer(v)
	case "client_name":
		o.ClientName, err = str(v)
	case "master_name":
		o.MasterName, err = str(v)
	case "sentinel_kwargs":
		kw, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("want an object, got %v", v)
		}
		if p, ok := kw["password"]; ok {
			o.SentinelPassword, err = str(p)
		}
	case "ssl_cert_reqs":
		o.SSLCertReqs, err = certReqs(v)
	case "ssl_ca_certs":
		o.SSLCACerts, err = str(v)
	case "ssl_certfile":
		o.SSLCertFile, err = str(v)
	case "ssl_keyfile":
		o.SSLKeyFile, err = str(v)
	default:
		if !slices.Contains(ignoredOptions, k) {
			return errors.New("unknown option (see docs/redis-broker.md for those this transport reads)")
		}
		o.Ignored = append(o.Ignored, k)
	}
	return err
}

// certReqs reads ssl_cert_reqs as Celery takes it: CERT_REQUIRED,
// required, CERT_OPTIONAL, optional, CERT_NONE, none (any case).
func certReqs(v any) (string, error) {
	s, err := str(v)
	if err != nil {
		return "", err
	}
	switch strings.ToLower(strings.TrimPrefix(strings.ToUpper(s), "CERT_")) {
	case "required":
		return "required", nil
	case "optional":
		return "optional", nil
	case "none":
		return "none", nil
	}
	return "", fmt.Errorf("want required, optional or none (CERT_REQUIRED, ...), got %q", s)
}

func str(v any) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("want a string, got %v", v)
	}
	return s, nil
}

func boolean(v any) (bool, error) {
	switch x := v.(type) {
	case bool:
		return x, nil
	case string:
		b, err := strconv.ParseBool(x)
		if err != nil {
			return false, fmt.Errorf("want true or false, got %q", x)
		}
		return b, nil
	}
	return false, fmt.Errorf("want true or false, got %v", v)
}

func number(v any) (float64, error) {
	switch x := v.(type) {
	case float64:
		return x, nil
	case json.Number:
		return x.Float64()
	case string:
		f, err := strconv.ParseFloat(x, 64)
		if err != nil {
			return 0, fmt.Errorf("want a number, got %q", x)
		}
		return f, nil
	case int:
		return float64(x), nil
	}
	return 0, fmt.Errorf("want a number, got %v", v)
}

func integer(v any) (int, error) {
	f, err := number(v)
	if err != nil {
		return 0, err
	}
	if f != math.Trunc(f) || f < 0 {
		return 0, fmt.Errorf("want a whole number >= 0, got %v", v)
	}
	return int(f), nil
}

// seconds reads a duration in seconds; null is 0 where nullable.
func seconds(v any, nullable bool) (time.Duration, error) {
	if v == nil && nullable {
		return 0, nil
	}
	f, err := number(v)
	if err != nil {
		return 0, err
	}
	if f < 0 || math.IsNaN(f) {
		return 0, fmt.Errorf("want seconds >= 0, got %v", v)
	}
	return time.Duration(f * float64(time.Second)), nil
}

func steps(v any) ([]int, error) {
	list, ok := v.([]any)
	if !ok || len(list) == 0 {
		return nil, fmt.Errorf("want a list of numbers such as [0, 3, 6, 9], got %v", v)
	}
	out := make([]int, 0, len(list))
	for _, e := range list {
		n, err := integer(e)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	if !slices.IsSorted(out) {
		return nil, fmt.Errorf("want ascending steps, got %v", out)
	}
	return out, nil
}
