package worker

import (
	"context"
	"maps"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/protocol"
)

// Canvas steps after a task ends, as Celery's tracer does them: on success
// the link callbacks and the next chain step get the result prepended to
// their arguments; on failure the remaining chain elements get the same
// FAILURE stored (so chain.get() does not hang) and errbacks are sent with
// the failed task's id as their argument.

// onSuccessCanvas publishes callbacks and the next chain step. It returns
// the children tuples to store with the result.
func (w *Worker) onSuccessCanvas(j *job, value any) []any {
	m := j.msg
	var children []any
	for _, cb := range m.Callbacks {
		if id := w.sendSignature(j, cb, value, true, nil); id != "" {
			children = append(children, []any{[]any{id, nil}, nil})
		}
	}
	if n := len(m.Chain); n > 0 {
		next := m.Chain[n-1]
		rest := m.Chain[:n-1]
		if id := w.sendSignature(j, next, value, true, rest); id != "" {
			children = append(children, []any{[]any{id, nil}, nil})
		}
	}
	return children
}

// onFailureCanvas stores the failure for the remaining chain and sends the
// errbacks.
func (w *Worker) onFailureCanvas(j *job, failure *backends.Result) {
	m := j.msg
	for _, sig := range m.Chain {
		if id := sig.TaskID(); id != "" {
			r := *failure
			r.TaskID = id
			w.store(context.Background(), &j.log, &r)
		}
	}
	for _, eb := range m.Errbacks {
		// A Go worker cannot call a Python errback in-process with
		// (request, exc, traceback); it sends the old-style (task_id,) form.
		w.sendSignature(j, eb, m.ID, true, nil)
	}
}

// sendSignature publishes sig as a task message with arg prepended unless
// the signature is immutable. It returns the new task id, or "" if the
// signature could not be sent (logged).
func (w *Worker) sendSignature(j *job, sig protocol.Signature, arg any, prepend bool, chain []protocol.Signature) string {
	parent := j.msg
	if sig.SubtaskType != "" {
		// Groups, chords and nested chains in a canvas step are expanded by
		// Python's worker in-process; gocelery does not do that yet.
		j.log.Error().Str("signature", sig.Task).Str("subtask_type", sig.SubtaskType).
			Msg("cannot send canvas step: composite signatures are not supported yet")
		return ""
	}
	id := sig.TaskID()
	if id == "" {
		id = newUUID()
	}
	args := sig.Args
	if prepend && !sig.Immutable {
		args = append([]any{arg}, sig.Args...)
	}
	opts := sig.Options
	m := &protocol.Message{
		ID:       id,
		Task:     sig.Task,
		Args:     args,
		Kwargs:   maps.Clone(sig.Kwargs),
		RootID:   parent.RootID,
		ParentID: parent.ID,
		Chain:    chain,
		Origin:   w.origin,
	}
	if m.RootID == "" {
		m.RootID = parent.ID
	}
	if g, ok := opts["group_id"].(string); ok {
		m.Group = g
	}
	if link, err := optSignatures(opts["link"]); err == nil {
		m.Callbacks = link
	}
	if linkErr, err := optSignatures(opts["link_error"]); err == nil {
		m.Errbacks = linkErr
	}
	if c, ok := opts["chord"]; ok && c != nil {
		if s, err := protocol.SignatureFromValue(c); err == nil {
			m.Chord = &s
		}
	}
	queue := w.cfg.DefaultQueue
	if q, ok := opts["queue"].(string); ok && q != "" {
		queue = q
	}
	exchange, key := "", queue
	if ex, ok := opts["exchange"].(string); ok && ex != "" {
		exchange = ex
		if rk, ok := opts["routing_key"].(string); ok {
			key = rk
		}
	}
	if err := w.publish(context.Background(), j.conn, exchange, key, m, parent.ContentType); err != nil {
		j.log.Error().Err(err).Str("signature", sig.Task).Msg("cannot send canvas step")
		return ""
	}
	return id
}

func optSignatures(v any) ([]protocol.Signature, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case map[string]any:
		s, err := protocol.SignatureFromValue(x)
		if err != nil {
			return nil, err
		}
		return []protocol.Signature{s}, nil
	case []any:
		out := make([]protocol.Signature, 0, len(x))
		for _, e := range x {
			s, err := protocol.SignatureFromValue(e)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, nil
}
