package redisbroker

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/celeryworker/gocelery/protocol"
)

// restoreTags puts the messages recorded under tags back in their queues,
// as kombu's restore_by_tag: in one transaction that fails if the unacked
// hash changed meanwhile (then it runs again), the entries leave the hash
// and index and the messages, marked redelivered, go to the lists their
// exchange and routing key route to. head puts them where the next pop
// takes them (tags[0] first), otherwise behind everything queued (kombu's
// reject with requeue). A tag no longer in the hash was acked or restored
// by someone else and is skipped.
func (c *Conn) restoreTags(ctx context.Context, tags []string, head bool) error {
	if len(tags) == 0 {
		return nil
	}
	members := make([]any, len(tags))
	for i, t := range tags {
		members[i] = t
	}
	txf := func(tx *redis.Tx) error {
		vals, err := tx.HMGet(ctx, c.k.unacked, tags...).Result()
		if err != nil {
			return err
		}
		type push struct {
			list string
			raw  []byte
		}
		var pushes []push
		for _, v := range vals {
			s, ok := v.(string)
			if !ok {
				continue
			}
			raw, ex, rk, pri, err := parseUnacked(s)
			if err != nil {
				continue // not kombu's: dropped as kombu drops it
			}
			queues, err := c.lookup(ctx, tx, ex, rk)
			if err != nil {
				return err
			}
			for _, q := range queues {
				pushes = append(pushes, push{c.k.list(q, pri), raw})
			}
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.ZRem(ctx, c.k.index, members...)
			p.HDel(ctx, c.k.unacked, tags...)
			if head {
				// RPUSH the last first, so the first ends at the popping end.
				for _, ps := range slices.Backward(pushes) {
					p.RPush(ctx, ps.list, ps.raw)
				}
			} else {
				for _, ps := range pushes {
					p.LPush(ctx, ps.list, ps.raw)
				}
			}
			return nil
		})
		return err
	}
	var err error
	for range 20 {
		if err = c.c.Watch(ctx, txf, c.k.unacked); !errors.Is(err, redis.TxFailedErr) {
			return err
		}
	}
	return err
}

// parseUnacked reads an unacked hash entry [message, exchange, routing
// key] and returns the message marked redelivered and its priority.
func parseUnacked(s string) (raw []byte, exchange, routingKey string, pri int, err error) {
	var parts []json.RawMessage
	if err = json.Unmarshal([]byte(s), &parts); err != nil {
		return nil, "", "", 0, err
	}
	if len(parts) != 3 {
		return nil, "", "", 0, errors.New("redisbroker: unacked entry is not [message, exchange, routing_key]")
	}
	if err = json.Unmarshal(parts[1], &exchange); err != nil {
		return nil, "", "", 0, err
	}
	if err = json.Unmarshal(parts[2], &routingKey); err != nil {
		return nil, "", "", 0, err
	}
	var m struct {
		Properties struct {
			Priority json.Number `json:"priority"`
		} `json:"properties"`
	}
	_ = json.Unmarshal(parts[0], &m)
	if n, e := m.Properties.Priority.Int64(); e == nil {
		pri = int(min(max(n, 0), 9))
	}
	raw, err = markRedelivered(parts[0])
	return raw, exchange, routingKey, pri, err
}

// releaseScript deletes the mutex only if this holder still owns it.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// RestoreVisible is kombu's restore_visible: whoever takes the
// unacked_mutex puts back the messages taken more than visibility_timeout
// ago and still unacknowledged (a dead consumer's), oldest first at the
// head of their lists. It returns how many it put back; 0 when another
// consumer holds the mutex.
func (c *Conn) RestoreVisible(ctx context.Context) (int, error) {
	o := &c.tr.opts
	token := protocol.NewUUID()
	ok, err := c.c.SetNX(ctx, c.k.mutex, token, o.UnackedMutexExpire).Result()
	if err != nil || !ok {
		return 0, err
	}
	defer releaseScript.Run(context.WithoutCancel(ctx), c.c, []string{c.k.mutex}, token)
	ceil := float64(time.Now().Add(-o.VisibilityTimeout).UnixNano()) / 1e9
	by := &redis.ZRangeBy{Min: "-inf", Max: strconv.FormatFloat(ceil, 'f', 6, 64)}
	if o.UnackedRestoreLimit > 0 {
		by.Count = int64(o.UnackedRestoreLimit)
	}
	tags, err := c.c.ZRangeByScore(ctx, c.k.index, by).Result()
	if err != nil || len(tags) == 0 {
		return 0, err
	}
	// Oldest first: they were taken first, they go first.
	if err := c.restoreTags(ctx, tags, true); err != nil {
		return 0, err
	}
	return len(tags), nil
}

// maintain runs the consumer's periodic work: a PING every
// health_check_interval, restore_visible at start and
// every unacked_restore_interval × unacked_restore_throttle (as kombu's
// event loop does), and keeps the messages this consumer holds visible to
// no one else by moving their index score to now, so a live worker's ETA
// task or long acks_late task is never restored under it (kombu lets the
// visibility timeout run out on them and runs them twice).
func (cs *consumer) maintain() {
	o := &cs.c.tr.opts
	ctx := context.Background()
	if _, err := cs.c.RestoreVisible(ctx); err != nil && !errors.Is(err, redis.Nil) {
		cs.failed(err)
		return
	}
	period := o.UnackedRestoreInterval * time.Duration(max(o.UnackedRestoreThrottle, 1))
	if period <= 0 {
		period = 100 * time.Second
	}
	restore := time.NewTicker(period)
	defer restore.Stop()
	refresh := time.NewTicker(min(max(o.VisibilityTimeout/4, 100*time.Millisecond), time.Minute))
	defer refresh.Stop()
	var health <-chan time.Time
	if o.HealthCheckInterval > 0 {
		t := time.NewTicker(o.HealthCheckInterval)
		defer t.Stop()
		health = t.C
	}
	for {
		select {
		case <-cs.c.done:
			return
		case <-health:
			if err := cs.c.c.Ping(ctx).Err(); err != nil {
				cs.failed(err)
				return
			}
			continue
		case <-cs.stop:
			// Still refresh what the worker holds until the connection
			// closes.
		case <-restore.C:
			if _, err := cs.c.RestoreVisible(ctx); err != nil {
				cs.failed(err)
				return
			}
			continue
		case <-refresh.C:
			if err := cs.refresh(ctx); err != nil {
				cs.failed(err)
				return
			}
			continue
		}
		// stopped: only refresh.
		for {
			select {
			case <-cs.c.done:
				return
			case <-refresh.C:
				if err := cs.refresh(ctx); err != nil {
					cs.failed(err)
					return
				}
			}
		}
	}
}

// refresh moves the index score of every unsettled delivery to now (XX:
// only those still recorded).
func (cs *consumer) refresh(ctx context.Context) error {
	cs.mu.Lock()
	now := float64(time.Now().UnixNano()) / 1e9
	zs := make([]redis.Z, 0, len(cs.unsettled))
	for _, d := range cs.unsettled {
		if d.tag != "" {
			zs = append(zs, redis.Z{Score: now, Member: d.tag})
		}
	}
	cs.mu.Unlock()
	if len(zs) == 0 {
		return nil
	}
	return cs.c.c.ZAddXX(ctx, cs.c.k.index, zs...).Err()
}
