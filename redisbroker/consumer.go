package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
)

// brpopTimeout is kombu's brpop_timeout: how long one blocking pop waits,
// so stopping the consumer takes at most this long.
const brpopTimeout = time.Second

// maxBatch bounds the messages one pop script takes with an unlimited
// prefetch window.
const maxBatch = 100

// popScript takes up to ARGV[1] messages from the lists KEYS[3..] (one
// priority step after the other, ARGV[3] queues per step, round robin
// between the queues of a step) and records each in the unacked hash
// KEYS[1] and index KEYS[2] (score ARGV[2]) in the same step, so a message
// is always either in a list or in the unacked hash. kombu pops with BRPOP
// and records afterwards: a consumer that dies in between loses the message.
var popScript = redis.NewScript(`
local n = tonumber(ARGV[1])
local per = tonumber(ARGV[3])
local out = {}
local got = 0
local steps = (#KEYS - 2) / per
for s = 0, steps - 1 do
  local more = true
  while more and got < n do
    more = false
    for q = 1, per do
      if got >= n then break end
      local key = KEYS[2 + s * per + q]
      local item = redis.call('RPOP', key)
      if item then
        more = true
        got = got + 1
        local ok, m = pcall(cjson.decode, item)
        if ok and type(m) == 'table' and type(m['properties']) == 'table' then
          local p = m['properties']
          local tag = p['delivery_tag']
          if type(tag) == 'string' then
            local di = p['delivery_info']
            if type(di) ~= 'table' then di = {} end
            local ex = di['exchange']
            local rk = di['routing_key']
            if type(ex) ~= 'string' then ex = '' end
            if type(rk) ~= 'string' then rk = '' end
            redis.call('HSET', KEYS[1], tag, '[' .. item .. ', ' .. cjson.encode(ex) .. ', ' .. cjson.encode(rk) .. ']')
            -- 10 µs apart, so the index keeps the order they were taken in
            redis.call('ZADD', KEYS[2], tonumber(ARGV[2]) + got * 0.00001, tag)
          end
        end
        out[#out + 1] = key
        out[#out + 1] = item
      end
    end
  end
  if got >= n then break end
end
return out
`)

// consumer pops the task queues of one connection under a prefetch
// window (kombu's QoS: at most prefetch unsettled messages).
type consumer struct {
	c    *Conn
	out  chan broker.Delivery
	lost chan struct{} // closed when the connection failed

	mu        sync.Mutex
	cond      *sync.Cond
	queues    []string // in consuming order; the last served moves to the end
	strategy  string
	prefetch  int
	unsettled map[uint64]*delivery
	seq       uint64
	gen, seen uint64 // CancelQueue bumps gen; fetch sees it between pops
	stopping  bool   // CancelConsume or close: take nothing more
	cancelled bool   // CancelConsume ran: requeues go to the head, in order
	ended     bool   // close ran
	acks      []string
	requeue   []*delivery

	kick      chan struct{} // wakes the settler
	stop      chan struct{}
	fetchDone chan struct{}
	settled   chan struct{} // the settler has exited
	ending    chan struct{} // closed by close: the settler stops, close settles the rest
	stopOnce  sync.Once
	outOnce   sync.Once
}

// delivery implements broker.Delivery.
type delivery struct {
	cons   *consumer
	seq    uint64
	tag    string
	env    *protocol.Envelope
	info   broker.DeliveryInfo
	handed bool // given to the worker (under cons.mu)
}

func (d *delivery) Envelope() *protocol.Envelope {
	e := d.env
	d.env = nil
	return e
}
func (d *delivery) Info() broker.DeliveryInfo { return d.info }
func (d *delivery) Lost() <-chan struct{}     { return d.cons.lost }
func (d *delivery) Ack() error                { return d.cons.settle(d, false, false) }
func (d *delivery) Reject(requeue bool) error { return d.cons.settle(d, true, requeue) }

// Consume starts popping queues with at most prefetch unsettled
// deliveries (0: unlimited).
func (c *Conn) Consume(ctx context.Context, queues []string, prefetch int) (<-chan broker.Delivery, error) {
	if len(queues) == 0 || prefetch < 0 {
		return nil, fmt.Errorf("redisbroker: consume %v with prefetch %d", queues, prefetch)
	}
	c.consMu.Lock()
	defer c.consMu.Unlock()
	if c.cons != nil {
		return nil, errors.New("redisbroker: consume: this connection is already consuming")
	}
	select {
	case <-c.done:
		return nil, broker.ErrClosed
	default:
	}
	cs := &consumer{c: c, out: make(chan broker.Delivery), lost: make(chan struct{}),
		queues: slices.Clone(queues), strategy: c.tr.opts.QueueOrderStrategy, prefetch: prefetch,
		unsettled: map[uint64]*delivery{}, kick: make(chan struct{}, 1), stop: make(chan struct{}),
		fetchDone: make(chan struct{}), settled: make(chan struct{}), ending: make(chan struct{})}
	if cs.strategy == "sorted" {
		slices.Sort(cs.queues)
	}
	cs.cond = sync.NewCond(&cs.mu)
	c.cons = cs
	go cs.fetch()
	go cs.settler()
	go cs.maintain()
	return cs.out, nil
}

// SetPrefetch changes the window; lowering it revokes nothing.
func (c *Conn) SetPrefetch(n int) error {
	cs := c.consumer()
	if cs == nil {
		return errors.New("redisbroker: qos: not consuming")
	}
	cs.mu.Lock()
	cs.prefetch = max(n, 0)
	cs.cond.Broadcast()
	cs.mu.Unlock()
	return nil
}

// AddQueue consumes one more queue (add_consumer).
func (c *Conn) AddQueue(_ context.Context, queue string) error {
	cs := c.consumer()
	if cs == nil {
		return errors.New("redisbroker: add queue: not consuming")
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.stopping {
		return broker.ErrClosed
	}
	if !slices.Contains(cs.queues, queue) {
		cs.queues = append(cs.queues, queue)
		if cs.strategy == "sorted" {
			slices.Sort(cs.queues)
		}
	}
	return nil
}

// CancelQueue stops consuming one queue (cancel_consumer).
func (c *Conn) CancelQueue(_ context.Context, queue string) error {
	cs := c.consumer()
	if cs == nil {
		return nil
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.queues = slices.DeleteFunc(cs.queues, func(q string) bool { return q == queue })
	// Wait for a pop that may still take from the queue (at most
	// brpopTimeout): what it takes goes back, and once this returns
	// nothing more is taken from the queue.
	cs.gen++
	target := cs.gen
	cs.cond.Broadcast()
	// Bounded: a pop ends within brpopTimeout, but handing over what it
	// took waits for the worker to read.
	timedOut := false
	timer := time.AfterFunc(3*brpopTimeout, func() {
		cs.mu.Lock()
		timedOut = true
		cs.cond.Broadcast()
		cs.mu.Unlock()
	})
	defer timer.Stop()
	for cs.seen < target && !cs.stopping && !timedOut {
		cs.cond.Wait()
	}
	return nil
}

// CancelConsume stops popping. Messages already taken but not yet handed
// to the worker go back to the head of their lists at once, in the order
// they were taken; from now on a requeued delivery goes back to the head
// too (kombu's requeue goes to the tail). Deliveries handed over stay
// valid.
func (c *Conn) CancelConsume(ctx context.Context) error {
	cs := c.consumer()
	if cs == nil {
		return nil
	}
	cs.mu.Lock()
	cs.cancelled = true
	cs.mu.Unlock()
	cs.halt()
	<-cs.fetchDone
	cs.mu.Lock()
	var back []*delivery
	for _, d := range cs.unsettled {
		if !d.handed {
			back = append(back, d)
			delete(cs.unsettled, d.seq)
		}
	}
	cs.cond.Broadcast()
	cs.mu.Unlock()
	cs.closeOut()
	if err := c.restoreDeliveries(ctx, back); err != nil {
		// They stay in the unacked hash: the next connection, or a
		// restore after the visibility timeout, puts them back.
		c.tr.leave(nil, back)
		return err
	}
	return nil
}

func (c *Conn) consumer() *consumer {
	c.consMu.Lock()
	defer c.consMu.Unlock()
	return c.cons
}

func (cs *consumer) halt() {
	cs.stopOnce.Do(func() {
		cs.mu.Lock()
		cs.stopping = true
		cs.cond.Broadcast()
		cs.mu.Unlock()
		close(cs.stop)
	})
}

func (cs *consumer) closeOut() { cs.outOnce.Do(func() { close(cs.out) }) }

// credit waits for room in the window and returns how many messages may
// be taken and the keys to pop, or 0 when stopping.
func (cs *consumer) credit() (int, []string, int) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for {
		if cs.seen != cs.gen {
			cs.seen = cs.gen
			cs.cond.Broadcast()
		}
		if cs.stopping {
			return 0, nil, 0
		}
		room := maxBatch
		if cs.prefetch > 0 {
			room = min(cs.prefetch-len(cs.unsettled), maxBatch)
		}
		if room > 0 && len(cs.queues) > 0 {
			return room, cs.c.k.lists(cs.queues), len(cs.queues)
		}
		cs.cond.Wait()
	}
}

// fetch is the popping loop: one script call takes what the window
// allows; when the lists are empty a blocking pop waits for the next.
func (cs *consumer) fetch() {
	defer close(cs.fetchDone)
	c := cs.c
	ctx := context.Background() // never cut a pop short: the message would be lost
	for {
		n, lists, per := cs.credit()
		if n == 0 {
			return
		}
		now := strconv.FormatFloat(float64(time.Now().UnixNano())/1e9, 'f', 6, 64)
		res, err := popScript.Run(ctx, c.c, append([]string{c.k.unacked, c.k.index}, lists...), n, now, per).StringSlice()
		if err != nil && !errors.Is(err, redis.Nil) {
			cs.failed(err)
			return
		}
		if len(res) == 0 {
			kv, err := c.c.BRPop(ctx, brpopTimeout, lists...).Result()
			if errors.Is(err, redis.Nil) {
				continue
			}
			if err != nil {
				cs.failed(err)
				return
			}
			if err := cs.record(ctx, kv[1]); err != nil {
				cs.failed(err)
				return
			}
			res = kv
		}
		for _, d := range cs.take(res) {
			if !cs.hand(d) {
				return // the rest stay unsettled: CancelConsume or Close restores them
			}
		}
	}
}

// record puts a message taken by BRPOP in the unacked hash and index.
func (cs *consumer) record(ctx context.Context, raw string) error {
	d, err := decodeMessage([]byte(raw))
	if err != nil || d.tag == "" {
		return nil // not kombu's; deliver reports it
	}
	c := cs.c
	now := float64(time.Now().UnixNano()) / 1e9
	_, err = c.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, c.k.index, redis.Z{Score: now, Member: d.tag})
		p.HSet(ctx, c.k.unacked, d.tag, unackedValue(raw, d.info.Exchange, d.info.RoutingKey))
		return nil
	})
	return err
}

// unackedValue is kombu's unacked hash entry: [message, exchange, routing key].
func unackedValue(raw, exchange, routingKey string) string {
	b := make([]byte, 0, len(raw)+len(exchange)+len(routingKey)+16)
	b = append(b, '[')
	b = append(b, raw...)
	b = append(b, ", "...)
	b = appendString(b, exchange)
	b = append(b, ", "...)
	b = appendString(b, routingKey)
	return string(append(b, ']'))
}

// take registers the popped messages (key, message pairs) as unsettled
// deliveries before any is handed over, so a stop midway leaves none
// untracked.
func (cs *consumer) take(res []string) []*delivery {
	out := make([]*delivery, 0, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		list, raw := res[i], res[i+1]
		queue := cs.c.k.queueOf(list)
		m, err := decodeMessage([]byte(raw))
		if err != nil {
			// Not kombu's envelope: hand it over undecoded, so the worker
			// logs and rejects it as any invalid message.
			m = &decoded{env: &protocol.Envelope{Body: []byte(raw)}, info: deliveryInfo{RoutingKey: queue}}
		}
		cs.mu.Lock()
		if !slices.Contains(cs.queues, queue) {
			// Taken by a pop that began before CancelQueue: back it goes.
			cs.mu.Unlock()
			cs.putBack(list, raw, m.tag)
			continue
		}
		cs.seq++
		d := &delivery{cons: cs, seq: cs.seq, tag: m.tag, env: m.env, info: broker.DeliveryInfo{
			Exchange: m.info.Exchange, RoutingKey: m.info.RoutingKey, Redelivered: m.info.Redelivered, Priority: m.env.Priority}}
		cs.unsettled[d.seq] = d
		if cs.strategy == "round_robin" {
			// kombu's fair cycle: the queue just served goes last.
			if i := slices.Index(cs.queues, queue); i >= 0 && i < len(cs.queues)-1 {
				cs.queues = append(slices.Delete(cs.queues, i, i+1), queue)
			}
		}
		cs.mu.Unlock()
		out = append(out, d)
	}
	return out
}

// hand gives one delivery to the worker; false when stopping.
func (cs *consumer) hand(d *delivery) bool {
	select {
	case cs.out <- d:
		cs.mu.Lock()
		d.handed = true
		cs.mu.Unlock()
		return true
	case <-cs.stop:
		return false
	}
}

// putBack returns a message popped for a queue no longer consumed to
// the head of its list.
func (cs *consumer) putBack(list, raw, tag string) {
	ctx := context.Background()
	var err error
	if tag == "" {
		err = cs.c.c.RPush(ctx, list, raw).Err()
	} else {
		err = cs.c.restoreTags(ctx, []string{tag}, true)
	}
	if err != nil {
		cs.failed(err)
	}
}

// failed ends the connection after a fault of the server or network.
func (cs *consumer) failed(err error) {
	go cs.c.fail(err) // fail waits for this loop to end
}

// settle acks or rejects d.
func (cs *consumer) settle(d *delivery, reject, requeue bool) error {
	cs.mu.Lock()
	select {
	case <-cs.lost:
		cs.mu.Unlock()
		return broker.ErrClosed
	default:
	}
	if cs.ended {
		cs.mu.Unlock()
		return broker.ErrClosed
	}
	if _, ok := cs.unsettled[d.seq]; !ok {
		cs.mu.Unlock()
		return fmt.Errorf("redisbroker: delivery %s already settled", d.tag)
	}
	delete(cs.unsettled, d.seq)
	cs.cond.Broadcast()
	if d.tag == "" {
		cs.mu.Unlock()
		return nil // never recorded: nothing to remove
	}
	switch {
	case !requeue:
		cs.acks = append(cs.acks, d.tag)
	case cs.cancelled:
		// Put back with the rest when the consumer closes: one batch in
		// delivery order, so the list keeps the order they were taken in.
		cs.requeue = append(cs.requeue, d)
		cs.mu.Unlock()
		return nil
	default:
		cs.mu.Unlock()
		// kombu's reject(requeue=True): back at the tail of the queue.
		return cs.c.restore(context.Background(), []*delivery{d}, false)
	}
	cs.mu.Unlock()
	select {
	case cs.kick <- struct{}{}:
	default:
	}
	return nil
}

// settler sends acks in batches (every ack waiting when it wakes goes in
// one round trip) and puts requeued deliveries back at the head, in
// delivery order.
func (cs *consumer) settler() {
	defer close(cs.settled)
	for {
		select {
		case <-cs.kick:
		case <-cs.stop:
			// Keep settling until close: a stopped consumer's
			// deliveries are still acked and requeued.
			select {
			case <-cs.kick:
			case <-cs.ending:
				return // close takes what is still waiting
			}
		}
		if !cs.flush() {
			return
		}
	}
}

// flush sends the waiting acks and requeues; false when the connection
// failed.
func (cs *consumer) flush() bool {
	cs.mu.Lock()
	acks, requeue := cs.acks, cs.requeue
	cs.acks, cs.requeue = nil, nil
	if cs.cancelled {
		// Requeues after cancel wait for close (see settle).
		cs.requeue, requeue = requeue, nil
	}
	cs.mu.Unlock()
	ctx := context.Background()
	if len(acks) > 0 {
		if err := cs.c.removeTags(ctx, acks); err != nil {
			cs.c.tr.leave(acks, requeue)
			cs.failed(err)
			return false
		}
	}
	if len(requeue) > 0 {
		if err := cs.c.restoreDeliveries(ctx, requeue); err != nil {
			cs.c.tr.leave(nil, requeue)
			cs.failed(err)
			return false
		}
	}
	return true
}

// close ends the consumer with its connection: on a clean close the
// unsettled deliveries go back to the head of their lists in delivery
// order; on a failed connection they are marked lost and left for the
// next connection to restore.
func (cs *consumer) close(clean bool) {
	cs.halt()
	<-cs.fetchDone
	// Wait out a flush in flight: what it could not send must be left for
	// the next connection before this one reports itself done.
	close(cs.ending)
	<-cs.settled
	cs.mu.Lock()
	cs.ended = true
	var rest []*delivery
	for _, d := range cs.unsettled {
		rest = append(rest, d)
	}
	clear(cs.unsettled)
	acks, requeue := cs.acks, cs.requeue
	cs.acks, cs.requeue = nil, nil
	cs.mu.Unlock()
	rest = append(rest, requeue...)
	if clean {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if len(acks) > 0 {
			if err := cs.c.removeTags(ctx, acks); err != nil {
				cs.c.tr.leave(acks, nil)
			}
		}
		if err := cs.c.restoreDeliveries(ctx, rest); err != nil {
			cs.c.tr.leave(nil, rest)
		}
	} else {
		cs.c.tr.leave(acks, rest)
	}
	close(cs.lost)
	cs.closeOut()
}

// removeTags is kombu's ack: the tags leave the unacked index and hash.
func (c *Conn) removeTags(ctx context.Context, tags []string) error {
	members := make([]any, len(tags))
	for i, t := range tags {
		members[i] = t
	}
	_, err := c.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRem(ctx, c.k.index, members...)
		p.HDel(ctx, c.k.unacked, tags...)
		return nil
	})
	return err
}

// restoreDeliveries puts deliveries back at the head of their lists, the
// earliest taken to be popped first.
func (c *Conn) restoreDeliveries(ctx context.Context, ds []*delivery) error {
	if len(ds) == 0 {
		return nil
	}
	slices.SortFunc(ds, func(a, b *delivery) int { return int(a.seq) - int(b.seq) })
	return c.restore(ctx, ds, true)
}

func (c *Conn) restore(ctx context.Context, ds []*delivery, head bool) error {
	tags := make([]string, 0, len(ds))
	for _, d := range ds {
		if d.tag != "" {
			tags = append(tags, d.tag)
		}
	}
	return c.restoreTags(ctx, tags, head)
}
