package backends

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/celeryworker/gocelery/protocol"
)

// Waiting for results the way Celery's Redis backend client does
// (celery/backends/redis.py ResultConsumer): subscribe to the channel named
// like the task's key, on which every stored document is also published,
// then read what is stored already. Nothing is polled: a waiter sleeps on
// the subscription until a document arrives.

// DocStatus reads the status of a stored or published result document.
// Documents are JSON as gocelery and Celery's default result_serializer
// write them; msgpack documents (result_serializer = "msgpack") are read
// too.
func DocStatus(doc []byte) (string, error) {
	var head struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(doc, &head); err == nil {
		return head.Status, nil
	}
	v, err := protocol.DecodeMsgpack(doc)
	if err != nil {
		return "", fmt.Errorf("backends: result document is neither JSON nor msgpack: %w", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return "", fmt.Errorf("backends: result document is a %s, not a dict", protocol.PyTypeName(v))
	}
	s, _ := m["status"].(string)
	return s, nil
}

// WaitReady waits until every task of ids is in a ready state (SUCCESS,
// FAILURE, REVOKED) and returns their documents, in the order of ids.
//
// It subscribes to the channel of each task's key first and reads the
// stored documents once the subscription is confirmed, so a result stored
// before the call is found and one stored after it is received. After a
// lost connection the subscription is renewed and the stored documents are
// read again (what was published meanwhile is gone). onUpdate, when not
// nil, is called (from the calling goroutine) with every document that is
// not ready: STARTED, RETRY, custom states such as PROGRESS; the calls for
// one task come in the order the worker stored them.
//
// WaitReady returns ctx's error when ctx ends first, and ErrClosed after
// Close.
func (r *Redis) WaitReady(ctx context.Context, ids []string, onUpdate func(taskID string, doc []byte)) ([][]byte, error) {
	out := make([][]byte, len(ids))
	type waiting struct {
		id    string
		slots []int
	}
	pending := map[string]*waiting{}
	var keys []string
	for i, id := range ids {
		k := r.Key(id)
		w, ok := pending[k]
		if !ok {
			w = &waiting{id: id}
			pending[k] = w
			keys = append(keys, k)
		}
		w.slots = append(w.slots, i)
	}
	if len(keys) == 0 {
		return out, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	ps := r.client.Subscribe(ctx, keys...)
	defer ps.Close()
	// Receive blocks on the socket; closing the subscription is what
	// interrupts it when ctx ends.
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	defer stop()

	// take records a document for key: it reports whether every task is
	// now ready.
	take := func(key string, doc []byte) (bool, error) {
		w, ok := pending[key]
		if !ok {
			return len(pending) == 0, nil // ready already
		}
		status, err := DocStatus(doc)
		if err != nil {
			return false, fmt.Errorf("backends: result of %s: %w", w.id, err)
		}
		if !Ready(status) {
			if onUpdate != nil {
				onUpdate(w.id, doc)
			}
			return false, nil
		}
		for _, i := range w.slots {
			out[i] = doc
		}
		delete(pending, key)
		return len(pending) == 0, nil
	}
	// stored reads what is stored for the keys still pending.
	stored := func() (bool, error) {
		left := make([]string, 0, len(pending))
		for _, k := range keys {
			if _, ok := pending[k]; ok {
				left = append(left, k)
			}
		}
		vals, err := r.client.MGet(ctx, left...).Result()
		if err != nil {
			return false, err
		}
		for i, v := range vals {
			s, ok := v.(string)
			if !ok {
				continue // nil: nothing stored yet (PENDING)
			}
			done, err := take(left[i], []byte(s))
			if err != nil || done {
				return done, err
			}
		}
		return false, nil
	}

	backoff := 50 * time.Millisecond
	for {
		msg, err := ps.Receive(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, redis.ErrClosed) {
				return nil, ErrClosed
			}
			// A lost connection: the next Receive dials again and renews
			// the subscription. Wait a little so a Redis that is down is
			// not hammered.
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		var done bool
		switch m := msg.(type) {
		case *redis.Subscription:
			// One confirmation per channel; the last one of a (re)newed
			// subscription counts them all.
			if m.Kind == "subscribe" && m.Count == len(keys) {
				done, err = stored()
			}
		case *redis.Message:
			done, err = take(m.Channel, []byte(m.Payload))
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		if done {
			return out, nil
		}
	}
}

// Forget deletes the stored results of ids (Celery's AsyncResult.forget).
func (r *Redis) Forget(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = r.Key(id)
	}
	if err := r.client.Del(ctx, keys...).Err(); err != nil {
		return fmt.Errorf("backends: forget %v: %w", ids, err)
	}
	return nil
}

// GroupKey is the key of a saved group result (GroupResult.save()).
func (r *Redis) GroupKey(groupID string) string { return r.prefix + GroupKeyPrefix + groupID }

// SaveGroup stores a group result document ({"result": <group tuple>}) as
// Celery's GroupResult.save() does: SETEX with the result expiry.
func (r *Redis) SaveGroup(ctx context.Context, groupID string, tuple any) error {
	doc, err := protocol.MarshalJSON(map[string]any{"result": tuple})
	if err != nil {
		return fmt.Errorf("backends: encode group %s: %w", groupID, err)
	}
	key := r.GroupKey(groupID)
	if r.ttl > 0 {
		err = r.client.SetEx(ctx, key, doc, r.ttl).Err()
	} else {
		err = r.client.Set(ctx, key, doc, 0).Err()
	}
	if err != nil {
		return fmt.Errorf("backends: save group %s: %w", groupID, err)
	}
	return nil
}

// GetGroup reads a saved group result document (nil, nil when none).
func (r *Redis) GetGroup(ctx context.Context, groupID string) ([]byte, error) {
	b, err := r.client.Get(ctx, r.GroupKey(groupID)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("backends: get group %s: %w", groupID, err)
	}
	return b, nil
}

// ForgetGroup deletes a saved group result.
func (r *Redis) ForgetGroup(ctx context.Context, groupID string) error {
	if err := r.client.Del(ctx, r.GroupKey(groupID)).Err(); err != nil {
		return fmt.Errorf("backends: forget group %s: %w", groupID, err)
	}
	return nil
}
