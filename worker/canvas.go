package worker

import (
	"errors"
	"fmt"
	"maps"
	"time"

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
			w.store(j.log, &r)
		}
	}
	for _, eb := range m.Errbacks {
		// A Go worker cannot call a Python errback in-process with
		// (request, exc, traceback); it sends the old-style (task_id,) form.
		w.sendSignature(j, eb, m.ID, true, nil)
	}
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

// onChordPart records this header task's end in its chord and, when it is
// the last one, publishes the body with the list of results as its first
// argument, or stores ChordError for the body if a part failed.
func (w *Worker) onChordPart(j *job, state string, result any) {
	m := j.msg
	if m.Chord == nil || m.Group == "" {
		return
	}
	cb := w.be.chord
	if cb == nil {
		j.log.Error().Str("group", m.Group).Msg("chord part cannot be counted: chords need the Redis result backend")
		return
	}
	ctx, cancel := ioContext()
	defer cancel()
	parts, err := cb.ChordPartReturn(ctx, m.Group, m.GroupIndex, m.ID, state, result)
	if errors.Is(err, backends.ErrChordNotReady) {
		return
	}
	if err != nil {
		j.log.Error().Err(err).Str("group", m.Group).Msg("chord part cannot be counted")
		return
	}
	body := *m.Chord
	bodyID := body.TaskID()
	values := make([]any, len(parts))
	for i, p := range parts {
		if p.State == backends.StatusFailure || p.State == backends.StatusRevoked {
			exc := exceptionFromValue(p.Result)
			msg := fmt.Sprintf("Dependency %s raised %s", p.TaskID, excRepr(exc))
			j.log.Error().Str("group", m.Group).Msgf("Chord %s[%s] failed: %s", body.Task, bodyID, msg)
			if bodyID != "" {
				tb := msg
				w.store(j.log, &backends.Result{TaskID: bodyID, Status: backends.StatusFailure,
					Result: backends.ChordError(msg).Value(), Traceback: &tb, Children: []any{},
					DateDone: time.Now().UTC(), GroupID: m.Group})
			}
			if errbacks, err := optSignatures(body.Options["link_error"]); err == nil {
				for _, eb := range errbacks {
					w.sendSignature(j, eb, bodyID, true, nil)
				}
			}
			return
		}
		values[i] = p.Result
	}
	if _, ok := body.Options["group_id"]; !ok {
		body.Options = maps.Clone(body.Options)
		if body.Options == nil {
			body.Options = map[string]any{}
		}
		body.Options["group_id"] = m.Group
	}
	if id := w.sendSignature(j, body, values, true, nil); id == "" {
		return // logged; the counters stay for a redelivered part to retry
	}
	if err := cb.ChordCleanup(ctx, m.Group); err != nil {
		j.log.Warn().Err(err).Msg("chord counters not deleted (they expire)")
	}
}

// exceptionFromValue reads a stored exception dict.
func exceptionFromValue(v any) backends.ExceptionInfo {
	m, _ := v.(map[string]any)
	e := backends.ExceptionInfo{Type: "Exception", Module: "builtins"}
	if t, ok := m["exc_type"].(string); ok {
		e.Type = t
	}
	if mod, ok := m["exc_module"].(string); ok {
		e.Module = mod
	}
	switch a := m["exc_message"].(type) {
	case []any:
		e.Args = a
	case nil:
	default:
		e.Args = []any{a}
	}
	return e
}

// Composite canvas steps (a group, chord or chain as the next chain element
// or as a callback) are expanded here, as Python's worker does in-process:
// there is no broker-side helper to delegate them to.

// signaturesOf reads kwargs[key] as a list of signatures, or the tasks of
// a group signature.
func signaturesOf(v any) ([]protocol.Signature, error) {
	if m, ok := v.(map[string]any); ok {
		g, err := protocol.SignatureFromValue(m)
		if err != nil {
			return nil, err
		}
		if g.SubtaskType == "group" {
			return optSignatures(g.Kwargs["tasks"])
		}
		return []protocol.Signature{g}, nil
	}
	return optSignatures(v)
}

// withOptions returns sig with extra options set (copying the map).
func withOptions(sig protocol.Signature, kv map[string]any) protocol.Signature {
	opts := maps.Clone(sig.Options)
	if opts == nil {
		opts = map[string]any{}
	}
	for k, v := range kv {
		opts[k] = v
	}
	sig.Options = opts
	return sig
}

// sendGroup publishes each member with the group id and its index.
func (w *Worker) sendGroup(j *job, sig protocol.Signature, arg any, prepend bool) string {
	members, err := optSignatures(sig.Kwargs["tasks"])
	if err != nil {
		j.log.Error().Err(err).Msg("cannot send group: bad member signature")
		return ""
	}
	gid := sig.TaskID()
	if gid == "" {
		gid = protocol.NewUUID()
	}
	for i, m := range members {
		m = withOptions(m, map[string]any{"group_id": gid, "group_index": int64(i)})
		if id := w.sendSignature(j, m, arg, prepend && !sig.Immutable, nil); id == "" {
			return ""
		}
	}
	return gid
}

// sendChord sets the chord's size in the backend, then publishes the
// header tasks carrying the body; an empty header runs the body at once.
func (w *Worker) sendChord(j *job, sig protocol.Signature, arg any, prepend bool) string {
	header, err := signaturesOf(sig.Kwargs["header"])
	if err != nil {
		j.log.Error().Err(err).Msg("cannot send chord: bad header")
		return ""
	}
	body, err := protocol.SignatureFromValue(sig.Kwargs["body"])
	if err != nil {
		j.log.Error().Err(err).Msg("cannot send chord: bad body")
		return ""
	}
	gid := sig.TaskID()
	if hm, ok := sig.Kwargs["header"].(map[string]any); ok {
		if hs, err := protocol.SignatureFromValue(hm); err == nil && hs.TaskID() != "" {
			gid = hs.TaskID()
		}
	}
	if gid == "" {
		gid = protocol.NewUUID()
	}
	bodyID := body.TaskID()
	if bodyID == "" {
		bodyID = protocol.NewUUID()
	}
	body = withOptions(body, map[string]any{"task_id": bodyID, "group_id": gid})
	if len(header) == 0 {
		return w.sendSignature(j, body, []any{}, true, nil)
	}
	cs := w.be.chord
	if cs == nil {
		j.log.Error().Msg("cannot send chord: chords need the Redis result backend")
		return ""
	}
	ctx, cancel := ioContext()
	defer cancel()
	if err := cs.SetChordSize(ctx, gid, len(header)); err != nil {
		j.log.Error().Err(err).Msg("cannot send chord")
		return ""
	}
	bodyValue := body.Value()
	for i, h := range header {
		h = withOptions(h, map[string]any{"group_id": gid, "group_index": int64(i), "chord": bodyValue})
		if id := w.sendSignature(j, h, arg, prepend && !sig.Immutable, nil); id == "" {
			return ""
		}
	}
	return bodyID
}

// sendChain publishes a nested chain's first task carrying the rest (and
// what followed the nested chain) in wire order, next task last.
func (w *Worker) sendChain(j *job, sig protocol.Signature, arg any, prepend bool, outer []protocol.Signature) string {
	steps, err := optSignatures(sig.Kwargs["tasks"])
	if err != nil || len(steps) == 0 {
		j.log.Error().Err(err).Msg("cannot send chain: no valid steps")
		return ""
	}
	wire := append([]protocol.Signature(nil), outer...)
	for i := len(steps) - 1; i >= 1; i-- {
		wire = append(wire, steps[i])
	}
	return w.sendSignature(j, steps[0], arg, prepend && !sig.Immutable, wire)
}
