package worker

import (
	"context"
	"maps"
	"time"

	"github.com/rs/zerolog"

	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
	"github.com/celeryworker/gocelery/tasks"
)

// The worker as a producer: retries, chain steps, callbacks, errbacks and
// chord bodies are task messages it publishes, always on the live
// connection (after a reconnect, not the one the parent came on).

// publish encodes m with the serializer of contentType (json unless it is
// msgpack) and publishes it with confirms, waiting up to 30 s for a live
// connection and the broker's confirm.
func (w *Worker) publish(ctx context.Context, log *zerolog.Logger, route broker.Route, m *protocol.Message, contentType string) error {
	serializer := protocol.SerializerName(contentType)
	if serializer != "msgpack" {
		serializer = "json"
	}
	env, err := protocol.Encode(m, protocol.EncodeOptions{Serializer: serializer})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := w.liveConn(ctx)
	if err != nil {
		return err
	}
	if q := route.Queue; q != nil && !route.ETA.IsZero() && q.Quorum() && q.Exchange.Kind() == "direct" {
		// Celery's producer warning, once per exchange rather than per
		// message.
		if _, warned := w.directWarned.LoadOrStore(q.Exchange.Name, true); !warned {
			log.Warn().Str("exchange", q.Exchange.Name).Msgf("Direct exchanges are not supported with native delayed delivery.\n"+
				"%s is a direct exchange but should be a topic exchange or a fanout exchange in order for native delayed delivery to work properly.\n"+
				"If quorum queues are used, this task may block the worker process until the ETA arrives.", q.Exchange.Name)
		}
	}
	if err := conn.PublishTask(ctx, route, env); err != nil {
		return err
	}
	log.Debug().Str("published", m.Name()).Str("published_id", m.ID).Str("exchange", route.Exchange).
		Str("routing_key", route.RoutingKey).Msg("published")
	return nil
}

// sendSignature publishes sig as a task message with arg prepended unless
// the signature is immutable. It returns the new task id, or "" if the
// signature could not be sent (logged).
func (w *Worker) sendSignature(j *job, sig protocol.Signature, arg any, prepend bool, chain []protocol.Signature) string {
	parent := j.msg
	switch sig.SubtaskType {
	case "":
	case "group":
		return w.sendGroup(j, sig, arg, prepend)
	case "chord":
		return w.sendChord(j, sig, arg, prepend)
	case "chain":
		return w.sendChain(j, sig, arg, prepend, chain)
	default:
		j.log.Error().Str("signature", sig.Task).Str("subtask_type", sig.SubtaskType).
			Msg("cannot send canvas step: this composite signature type is not supported")
		return ""
	}
	id := sig.TaskID()
	if id == "" {
		id = protocol.NewUUID()
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
	if gi, ok := protocol.Int(opts["group_index"]); ok {
		i := int(gi)
		m.GroupIndex = &i
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
	stepOptions(m, opts, time.Now())
	if _, set := opts["priority"]; !set && w.cfg.DefaultPriority > 0 {
		m.Priority = uint8(w.cfg.DefaultPriority)
	}
	queue := w.cfg.DefaultQueue
	if q, ok := opts["queue"].(string); ok && q != "" {
		queue = q
	}
	exchange, _ := opts["exchange"].(string)
	key, _ := opts["routing_key"].(string)
	route, err := w.route(queue, exchange, key, m.ETA)
	if err != nil {
		j.log.Error().Err(err).Str("signature", sig.Task).Msg("cannot send canvas step")
		return ""
	}
	if err := w.publish(context.Background(), j.log, route, m, parent.ContentType); err != nil {
		j.log.Error().Err(err).Str("signature", sig.Task).Msg("cannot send canvas step")
		return ""
	}
	return id
}

// stepOptions applies the apply_async options a step's signature carries
// (sig.set(countdown=...) and the like), as Python's worker does when it
// sends the step: countdown or eta, expires, priority, time limits,
// shadow, ignore_result, retries and extra headers. Values that are not
// of the right type are ignored, as Celery would fail on them only later.
func stepOptions(m *protocol.Message, opts map[string]any, now time.Time) {
	if c, ok := tasks.AsFloat(opts["countdown"]); ok && c != 0 {
		eta := now.Add(time.Duration(c * float64(time.Second)))
		m.ETA = &eta
	} else if eta, ok := optTime(opts["eta"]); ok {
		m.ETA = &eta
	}
	if e, ok := tasks.AsFloat(opts["expires"]); ok {
		exp := now.Add(time.Duration(e * float64(time.Second)))
		m.Expires = &exp
	} else if exp, ok := optTime(opts["expires"]); ok {
		m.Expires = &exp
	}
	if p, ok := protocol.Int(opts["priority"]); ok && p >= 0 && p <= 255 {
		m.Priority = uint8(p)
	}
	if h, ok := tasks.AsFloat(opts["time_limit"]); ok {
		m.TimeLimit.Hard = h
	}
	if s, ok := tasks.AsFloat(opts["soft_time_limit"]); ok {
		m.TimeLimit.Soft = s
	}
	if sh, ok := opts["shadow"].(string); ok {
		m.Shadow = sh
	}
	if ir, ok := opts["ignore_result"].(bool); ok {
		m.IgnoreResult = ir
	}
	if r, ok := protocol.Int(opts["retries"]); ok && r >= 0 {
		m.Retries = int(r)
	}
	if h, ok := opts["headers"].(map[string]any); ok && len(h) > 0 {
		m.Headers = maps.Clone(h)
	}
}

// optTime reads a time option: an ISO-8601 string or a kombu datetime.
func optTime(v any) (time.Time, bool) {
	switch x := v.(type) {
	case protocol.DateTime:
		return x.Time, true
	case string:
		t, _, err := protocol.ParseTime(x)
		return t, err == nil
	case time.Time:
		return x, true
	}
	return time.Time{}, false
}
