package client

import (
	"maps"
	"time"
)

// Option is one apply_async option. Options are kept under Celery's own
// option names (task_id, countdown, queue, link, ...), so the same option
// works on SendTask and on a Signature, where the worker that applies the
// signature later (Go or Python) reads it back from the signature's
// "options" dict.
type Option func(o map[string]any)

// collect applies opts to a fresh map.
func collect(opts []Option) map[string]any {
	o := map[string]any{}
	for _, f := range opts {
		if f != nil {
			f(o)
		}
	}
	return o
}

// seconds is a duration as Celery's numeric options take it: an int when
// whole, a float otherwise.
func seconds(d time.Duration) any {
	if d%time.Second == 0 {
		return int64(d / time.Second)
	}
	return d.Seconds()
}

// TaskID sets the task id (default: a new UUID). For a group it is the
// group id, for a chord the body's id.
func TaskID(id string) Option { return func(o map[string]any) { o["task_id"] = id } }

// Countdown delays the task: eta = now + d.
func Countdown(d time.Duration) Option { return func(o map[string]any) { o["countdown"] = seconds(d) } }

// ETA sets when the task may run at the earliest.
func ETA(t time.Time) Option { return func(o map[string]any) { o["eta"] = t } }

// Expires makes the task expire d after it is sent: a worker that receives
// it later stores REVOKED ("expired") instead of running it, and RabbitMQ
// drops it from the queue after d (the expiration property).
func Expires(d time.Duration) Option { return func(o map[string]any) { o["expires"] = seconds(d) } }

// ExpiresAt makes the task expire at t.
func ExpiresAt(t time.Time) Option { return func(o map[string]any) { o["expires"] = t } }

// Priority sets the message priority, 0..255 (RabbitMQ honours it on queues
// declared with x-max-priority).
func Priority(p int) Option { return func(o map[string]any) { o["priority"] = int64(p) } }

// Queue routes the task to queue (default: the client's default queue,
// "celery"). The queue is declared as kombu declares a missing queue: a
// durable direct exchange of the same name, a durable queue, bound by its
// name.
func Queue(name string) Option { return func(o map[string]any) { o["queue"] = name } }

// Exchange and RoutingKey publish to an exchange of your own: with both
// set the message goes to that exchange with that routing key (the queue,
// given or default, is still declared first, as Celery does); with only
// one of them set Celery ignores it and publishes to the queue.
func Exchange(name string) Option { return func(o map[string]any) { o["exchange"] = name } }

// RoutingKey: see Exchange.
func RoutingKey(key string) Option { return func(o map[string]any) { o["routing_key"] = key } }

// TimeLimit is the hard time limit of this call.
func TimeLimit(d time.Duration) Option {
	return func(o map[string]any) { o["time_limit"] = seconds(d) }
}

// SoftTimeLimit is the soft time limit of this call.
func SoftTimeLimit(d time.Duration) Option {
	return func(o map[string]any) { o["soft_time_limit"] = seconds(d) }
}

// Retries sets the retries header (the request's retry count).
func Retries(n int) Option { return func(o map[string]any) { o["retries"] = int64(n) } }

// IgnoreResult asks the worker not to store the result. The AsyncResult
// returned is marked Ignored: Get returns nil at once, as in Celery.
func IgnoreResult() Option { return func(o map[string]any) { o["ignore_result"] = true } }

// Serializer chooses the body encoding: "json" (default) or "msgpack".
func Serializer(name string) Option { return func(o map[string]any) { o["serializer"] = name } }

// Compression compresses the body: "zlib" (or "gzip", the same zlib stream
// under kombu's name).
func Compression(name string) Option { return func(o map[string]any) { o["compression"] = name } }

// Headers adds message headers (apply_async(headers=...)); they land in
// the same header table as Celery's own. Values must fit an AMQP table:
// strings, integers, floats, booleans, nil, lists and maps of those.
func Headers(h map[string]any) Option {
	return func(o map[string]any) {
		cur, _ := o["headers"].(map[string]any)
		cur = maps.Clone(cur)
		if cur == nil {
			cur = map[string]any{}
		}
		maps.Copy(cur, h)
		o["headers"] = cur
	}
}

// Link adds callbacks, applied with this task's result prepended to their
// arguments when it succeeds.
func Link(sigs ...*Signature) Option {
	return func(o map[string]any) { o["link"] = appendSigs(o["link"], sigs) }
}

// LinkError adds errbacks, applied with the failed task's id as their
// first argument when it fails.
func LinkError(sigs ...*Signature) Option {
	return func(o map[string]any) { o["link_error"] = appendSigs(o["link_error"], sigs) }
}

func appendSigs(cur any, sigs []*Signature) any {
	var out []any
	switch c := cur.(type) {
	case []any:
		out = append(out, c...)
	case nil:
	default:
		out = append(out, c)
	}
	for _, s := range sigs {
		if s != nil {
			out = append(out, s)
		}
	}
	return out
}

// Shadow sets the name logs and monitors show instead of the task name.
func Shadow(name string) Option { return func(o map[string]any) { o["shadow"] = name } }

// ReplyTo sets the reply_to property (Celery's per-client id; only the rpc
// result backend reads it). Default: the client's own id.
func ReplyTo(id string) Option { return func(o map[string]any) { o["reply_to"] = id } }

// RootID and ParentID set the workflow ids explicitly. Inside a running
// task (ctx carries tasks.RequestFromContext) they default to the running
// task's root and id, as Celery sets them.
func RootID(id string) Option { return func(o map[string]any) { o["root_id"] = id } }

// ParentID: see RootID.
func ParentID(id string) Option { return func(o map[string]any) { o["parent_id"] = id } }

// Set sets any apply_async option by its Celery name, for options this
// package has no helper for. The value is sent as is.
func Set(name string, value any) Option { return func(o map[string]any) { o[name] = value } }
