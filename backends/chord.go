package backends

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/celeryworker/gocelery/protocol"
)

// Chord bookkeeping on Redis, as Celery's Redis backend keeps it: each
// header task, when it ends, adds [1, id, state, result] to the sorted set
// celery-taskset-meta-<gid>.j (scored by group_index) and compares the
// count with the size the client stored in .s (plus .t, parts added at run
// time). The worker whose part completes the set fires the body.

// GroupKeyPrefix is the prefix of group (taskset) keys.
const GroupKeyPrefix = "celery-taskset-meta-"

// ChordPart is one finished header task.
type ChordPart struct {
	TaskID string
	State  string
	Result any
}

// ErrChordNotReady: the chord still waits for other header tasks.
var ErrChordNotReady = errors.New("backends: chord not complete")

// ChordPartReturn records a header task's end for chord gid. When this
// part completes the chord it returns every part in group_index order;
// otherwise ErrChordNotReady.
func (r *Redis) ChordPartReturn(ctx context.Context, gid string, groupIndex *int, taskID, state string, result any) ([]ChordPart, error) {
	member, err := protocol.MarshalJSON([]any{int64(1), taskID, state, result})
	if err != nil {
		return nil, fmt.Errorf("backends: encode chord part %s: %w", taskID, err)
	}
	score := math.Inf(1)
	if groupIndex != nil {
		score = float64(*groupIndex)
	}
	base := r.prefix + GroupKeyPrefix + gid
	jkey, tkey, skey := base+".j", base+".t", base+".s"
	ttl := r.ttl
	var count *redis.IntCmd
	var total, size *redis.StringCmd
	_, err = r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, jkey, redis.Z{Score: score, Member: member})
		count = p.ZCount(ctx, jkey, "-inf", "+inf")
		total = p.Get(ctx, tkey)
		size = p.Get(ctx, skey)
		if ttl > 0 {
			p.Expire(ctx, jkey, ttl)
			p.Expire(ctx, tkey, ttl)
			p.Expire(ctx, skey, ttl)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("backends: chord %s part %s: %w", gid, taskID, err)
	}
	sizeText, err := size.Result()
	if errors.Is(err, redis.Nil) {
		// No size stored: not a chord the client set up through Redis.
		return nil, ErrChordNotReady
	}
	want, err := strconv.ParseInt(sizeText, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("backends: chord %s: size %q: %w", gid, sizeText, err)
	}
	if extra, err := total.Result(); err == nil {
		n, _ := strconv.ParseInt(extra, 10, 64)
		want += n
	}
	if count.Val() != want {
		return nil, ErrChordNotReady
	}
	raw, err := r.client.ZRange(ctx, jkey, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("backends: chord %s: read parts: %w", gid, err)
	}
	parts := make([]ChordPart, 0, len(raw))
	for _, m := range raw {
		p, err := decodeChordPart([]byte(m))
		if err != nil {
			return nil, fmt.Errorf("backends: chord %s: %w", gid, err)
		}
		parts = append(parts, p)
	}
	return parts, nil
}

func decodeChordPart(b []byte) (ChordPart, error) {
	v, err := protocol.DecodeJSON(b)
	if err != nil {
		return ChordPart{}, fmt.Errorf("chord part: %w", err)
	}
	l, ok := v.([]any)
	if !ok || len(l) != 4 {
		return ChordPart{}, fmt.Errorf("chord part is not [1, id, state, result]: %s", b)
	}
	id, _ := l[1].(string)
	state, _ := l[2].(string)
	return ChordPart{TaskID: id, State: state, Result: l[3]}, nil
}

// SetChordSize stores the number of header tasks of chord gid, as the
// Python client does before publishing the header.
func (r *Redis) SetChordSize(ctx context.Context, gid string, size int) error {
	key := r.prefix + GroupKeyPrefix + gid + ".s"
	var err error
	if r.ttl > 0 {
		err = r.client.SetEx(ctx, key, size, r.ttl).Err()
	} else {
		err = r.client.Set(ctx, key, size, 0).Err()
	}
	if err != nil {
		return fmt.Errorf("backends: chord %s: set size: %w", gid, err)
	}
	return nil
}

// ChordCleanup deletes a fired chord's counters.
func (r *Redis) ChordCleanup(ctx context.Context, gid string) error {
	base := r.prefix + GroupKeyPrefix + gid
	if err := r.client.Del(ctx, base+".j", base+".t", base+".s").Err(); err != nil {
		return fmt.Errorf("backends: chord %s cleanup: %w", gid, err)
	}
	return nil
}

// ChordError is the failure stored for a chord body whose header failed.
func ChordError(msg string) ExceptionInfo {
	return ExceptionInfo{Type: "ChordError", Module: "celery.exceptions", Args: []any{msg}}
}
