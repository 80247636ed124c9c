package redisbroker

import (
	"sort"
	"strconv"
	"strings"
)

// keys names everything this transport touches in Redis, prefix included.
type keys struct {
	prefix, sep  string
	steps        []int
	fanoutPrefix string // "/<db>." formatted
	patterns     bool

	unacked, index, mutex string
	deadlines             string
}

func newKeys(o *Options, db int) keys {
	p := o.GlobalKeyPrefix
	return keys{
		prefix: p, sep: o.Sep, steps: o.PrioritySteps, patterns: o.FanoutPatterns,
		fanoutPrefix: strings.ReplaceAll(o.FanoutPrefix, "{db}", strconv.Itoa(db)),
		unacked:      p + o.UnackedKey, index: p + o.UnackedIndexKey, mutex: p + o.UnackedMutexKey,
		deadlines: p + "_kombu.binding_deadlines",
	}
}

// step is the priority step a message priority falls in (kombu's
// priority(): the largest step not above it).
func (k *keys) step(pri int) int {
	i := sort.Search(len(k.steps), func(i int) bool { return k.steps[i] > pri })
	if i == 0 {
		return k.steps[0]
	}
	return k.steps[i-1]
}

// list is the Redis list holding queue's messages of priority pri.
func (k *keys) list(queue string, pri int) string {
	if s := k.step(min(max(pri, 0), 9)); s != 0 {
		return k.prefix + queue + k.sep + strconv.Itoa(s)
	}
	return k.prefix + queue
}

// queueOf is the queue a list key belongs to.
func (k *keys) queueOf(list string) string {
	list = strings.TrimPrefix(list, k.prefix)
	if i := strings.LastIndex(list, k.sep); i >= 0 {
		return list[:i]
	}
	return list
}

// lists are the keys a consumer pops, all queues of one step before the
// next step, as kombu's BRPOP lists them.
func (k *keys) lists(queues []string) []string {
	out := make([]string, 0, len(queues)*len(k.steps))
	for _, s := range k.steps {
		for _, q := range queues {
			out = append(out, k.list(q, s))
		}
	}
	return out
}

// allLists are every priority list of queue.
func (k *keys) allLists(queue string) []string { return k.lists([]string{queue}) }

func (k *keys) binding(exchange string) string { return k.prefix + "_kombu.binding." + exchange }
func (k *keys) permanent(exchange string) string {
	return k.prefix + "_kombu.binding_permanent." + exchange
}

// member is a binding table entry: routing key, pattern, queue.
func (k *keys) member(routingKey, pattern, queue string) string {
	return routingKey + k.sep + pattern + k.sep + queue
}

// fanout is the pub/sub channel of a fanout exchange (with the routing
// key when fanout_patterns is on), prefix included.
func (k *keys) fanout(exchange, routingKey string) string {
	if routingKey != "" && k.patterns {
		return k.prefix + k.fanoutPrefix + exchange + "/" + routingKey
	}
	return k.prefix + k.fanoutPrefix + exchange
}
