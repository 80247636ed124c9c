package backends

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Pipelined writes: results handed to StoreAsync are written by one
// goroutine, as many per round trip as are waiting, so a busy worker pays
// one Redis round trip per batch instead of one per task while each write
// keeps the same atomic never-overwrite-SUCCESS script.

type pendingWrite struct {
	key  string
	doc  []byte
	id   string
	done func(error)
}

const maxBatch = 256

// StoreAsync queues res for a pipelined write and calls done with the
// outcome from the writer goroutine. done must not block for long.
func (r *Redis) StoreAsync(res *Result, done func(error)) {
	doc, err := res.Encode(r.extended)
	if err != nil {
		done(fmt.Errorf("backends: encode result of %s: %w", res.TaskID, err))
		return
	}
	if len(doc) > maxDocument {
		done(ErrTooLarge)
		return
	}
	r.writeMu.RLock()
	defer r.writeMu.RUnlock()
	if r.closed {
		done(ErrClosed)
		return
	}
	r.startWriter.Do(func() {
		r.writes = make(chan pendingWrite, 4096)
		r.writerDone = make(chan struct{})
		go r.writer()
	})
	r.writes <- pendingWrite{key: r.Key(res.TaskID), doc: doc, id: res.TaskID, done: done}
}

// stopWriter lets the writer finish what is queued and waits for it.
func (r *Redis) stopWriter() {
	r.writeMu.Lock()
	if r.closed {
		r.writeMu.Unlock()
		return
	}
	r.closed = true
	started := r.writes != nil
	if started {
		close(r.writes)
	}
	r.writeMu.Unlock()
	if started {
		<-r.writerDone
	}
}

func (r *Redis) writer() {
	defer close(r.writerDone)
	batch := make([]pendingWrite, 0, maxBatch)
	for w := range r.writes {
		batch = append(batch[:0], w)
	drain:
		for len(batch) < maxBatch {
			select {
			case w, ok := <-r.writes:
				if !ok {
					break drain
				}
				batch = append(batch, w)
			default:
				break drain
			}
		}
		r.writeBatch(batch)
	}
}

func (r *Redis) writeBatch(batch []pendingWrite) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ttl := int64(r.ttl / time.Second)
	if r.ttl < 0 {
		ttl = 0
	}
	// Most results are the first document of their task: SET NX writes
	// those as plainly as SETEX would (the script's GET and Lua calls cost
	// Redis more than the write itself), and only the published ones are
	// announced. A key that exists (STARTED, RETRY, a duplicate) goes
	// through the script, which keeps a SUCCESS.
	written, err := r.setNew(ctx, batch, ttl)
	if err != nil {
		for _, w := range batch {
			w.done(err)
		}
		return
	}
	rest := batch[:0:0]
	for i, w := range batch {
		if !written[i] {
			rest = append(rest, w)
		}
	}
	if len(rest) < len(batch) {
		err = r.publishWritten(ctx, batch, written)
		for i, w := range batch {
			if written[i] {
				w.done(err)
			}
		}
	}
	if len(rest) > 0 {
		r.writeScripted(ctx, rest, ttl)
	}
}

// setNew writes each document whose key does not exist yet (SET NX, with
// the TTL) in one pipeline and reports which were written.
func (r *Redis) setNew(ctx context.Context, batch []pendingWrite, ttl int64) ([]bool, error) {
	exp := time.Duration(ttl) * time.Second
	cmds := make([]*redis.BoolCmd, len(batch))
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, w := range batch {
			cmds[i] = p.SetNX(ctx, w.key, w.doc, exp)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	written := make([]bool, len(batch))
	for i, c := range cmds {
		written[i] = c.Val()
	}
	return written, nil
}

// publishWritten announces the documents SET NX wrote, on the channel
// named like their key, as the script does for the others.
func (r *Redis) publishWritten(ctx context.Context, batch []pendingWrite, written []bool) error {
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, w := range batch {
			if written[i] {
				p.Publish(ctx, w.key, w.doc)
			}
		}
		return nil
	})
	return err
}

// writeScripted writes the batch with the never-overwrite-SUCCESS script.
func (r *Redis) writeScripted(ctx context.Context, batch []pendingWrite, ttl int64) {
	var err error
	if len(batch) == 1 {
		w := batch[0]
		err = storeScript.EvalSha(ctx, r.client, []string{w.key}, w.doc, ttl).Err()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// First use on this server: Run loads the script.
			err = storeScript.Run(ctx, r.client, []string{w.key}, w.doc, ttl).Err()
		}
	} else {
		keys := make([]string, len(batch))
		args := make([]any, len(batch)+1)
		for i, w := range batch {
			keys[i], args[i] = w.key, w.doc
		}
		args[len(batch)] = ttl
		err = storeManyScript.EvalSha(ctx, r.client, keys, args...).Err()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			err = storeManyScript.Run(ctx, r.client, keys, args...).Err()
		}
	}
	if errors.Is(err, redis.Nil) {
		err = nil
	}
	for _, w := range batch {
		w.done(err)
	}
}
