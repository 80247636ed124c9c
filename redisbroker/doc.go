// Package redisbroker is kombu's Redis transport in Go: the broker.Transport
// that serves `redis://`, `rediss://` and `sentinel://` broker URLs, on the
// wire exactly as kombu 5.7 lays it out, so Python workers and producers
// share the same Redis with gocelery.
//
// The layout, as kombu writes it:
//   - a task queue is a list per priority step: the queue name for the
//     lowest step, "<queue>\x06\x16<step>" for the others; producers LPUSH,
//     consumers BRPOP the keys step by step (lower numbers first), every
//     queue of a step before the next step, and the queue a message came
//     from moves to the end of the order (fair consumption of several
//     queues);
//   - a message is kombu's JSON envelope: body base64-encoded
//     (body_encoding), headers, properties with delivery_tag (a UUID),
//     delivery_info (exchange, routing_key) and priority;
//   - routing: the set "_kombu.binding.<exchange>" holds
//     "<routing key>\x06\x16<pattern>\x06\x16<queue>" members; direct
//     exchanges match the routing key, topic exchanges the pattern, fanout
//     exchanges are PUBLISH/PSUBSCRIBE on "/<db>.<exchange>" (remote
//     control);
//   - acknowledgement emulation: a consumed message is kept in the hash
//     "unacked" (tag -> [message, exchange, routing key]) and the sorted set
//     "unacked_index" (tag -> time taken) until acked; whoever holds
//     "unacked_mutex" puts back messages taken longer ago than
//     visibility_timeout (a dead worker's), as kombu's restore_visible.
//
// Where this transport does better than kombu it says so: messages taken
// and recorded in one script (no window where a popped message is in
// neither list nor hash), and unsettled messages put back at once and in
// order on shutdown or when the worker stops consuming.
package redisbroker
