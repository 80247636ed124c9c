package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/celeryworker/gocelery/protocol"
)

func newID() string { return protocol.NewUUID() }

// Sending canvases as Celery's canvas.py does on the producer side:
// signatures are frozen (task ids, reply_to and group ids written into
// their options), chains travel in the first message's embed "chain" (next
// step last), group members carry the group id and their index, chord
// header tasks carry the body in embed "chord" after the chord size is
// stored in Redis. Whatever worker applies the next step reads the same
// dicts a Python producer writes.

// Apply sends a signature: a task (as SendTask), a chain (the result is
// the last step's, each step's Parent set), or a chord (the body's result,
// Header set to the header group). opts are merged over the signature's
// own options as Python's sig.apply_async(**opts) merges them: for a
// chain they apply to its first task (link_error to every step, Link to
// the last), for a chord to every header task and the body. A group, or a
// chain ending in a group, has a GroupResult: use ApplyGroup. Apply
// leaves s unchanged.
func (c *Client) Apply(ctx context.Context, s *Signature, opts ...Option) (*AsyncResult, error) {
	if s == nil {
		return nil, errors.New("client: apply: nil signature")
	}
	if err := c.canSend(s); err != nil {
		return nil, err
	}
	if resultKind(s) == "group" {
		return nil, errors.New("client: apply: a group's result is a GroupResult: use ApplyGroup")
	}
	res, err := c.apply(ctx, s.Clone(), nil, nil, collect(opts))
	if err != nil {
		return nil, err
	}
	r, ok := res.(*AsyncResult)
	if !ok {
		return nil, fmt.Errorf("client: apply: unexpected result %T", res)
	}
	return r, nil
}

// ApplyGroup sends a group (or a chain ending in one) and returns the
// group's result. opts are merged over each member's options.
func (c *Client) ApplyGroup(ctx context.Context, s *Signature, opts ...Option) (*GroupResult, error) {
	if s == nil {
		return nil, errors.New("client: apply: nil signature")
	}
	if err := c.canSend(s); err != nil {
		return nil, err
	}
	if resultKind(s) != "group" {
		return nil, errors.New("client: apply group: the signature's result is not a group: use Apply")
	}
	res, err := c.apply(ctx, s.Clone(), nil, nil, collect(opts))
	if err != nil {
		return nil, err
	}
	g, ok := res.(*GroupResult)
	if !ok {
		return nil, fmt.Errorf("client: apply group: unexpected result %T", res)
	}
	return g, nil
}

// canSend checks what can be checked before anything is published: a
// chord needs the Redis backend for its counters.
func (c *Client) canSend(s *Signature) error {
	if s == nil {
		return errors.New("client: nil signature in canvas")
	}
	switch s.kind {
	case "chord":
		if s.header == nil {
			return errors.New("client: chord without a header")
		}
		if c.backend == nil && len(s.header.tasks) > 0 {
			return fmt.Errorf("client: a chord needs the result backend: %w", ErrNoBackend)
		}
		if s.body == nil {
			return errors.New("client: chord without a body")
		}
		if err := c.canSend(s.header); err != nil {
			return err
		}
		return c.canSend(s.body)
	case "chain", "group":
		for _, t := range s.tasks {
			if err := c.canSend(t); err != nil {
				return err
			}
		}
		// A group followed by a step becomes a chord.
		if s.kind == "chain" && c.backend == nil {
			for i, t := range s.tasks {
				if t.kind == "group" && len(t.tasks) > 1 && i < len(s.tasks)-1 {
					return fmt.Errorf("client: a group followed by a step is a chord, which needs the result backend: %w", ErrNoBackend)
				}
			}
		}
	case "":
		if s.Task == "" {
			return errors.New("client: signature without a task name")
		}
	}
	return nil
}

// resultKind says what applying s returns: "task" or "group".
func resultKind(s *Signature) string {
	switch s.kind {
	case "group":
		return "group"
	case "chain":
		// A chain step that is a one-member group is unrolled.
		steps := flattenChain(s.tasks)
		for i := len(steps) - 1; i >= 0; i-- {
			t := steps[i]
			for t.kind == "group" && len(t.tasks) == 1 {
				t = t.tasks[0]
			}
			if t.kind == "group" && len(t.tasks) == 0 {
				continue
			}
			return resultKind(t)
		}
		return "task"
	}
	return "task"
}

func flattenChain(steps []*Signature) []*Signature {
	var out []*Signature
	for _, t := range steps {
		if t.kind == "chain" {
			out = append(out, flattenChain(t.tasks)...)
		} else {
			out = append(out, t)
		}
	}
	return out
}

// immutableOptions are kept from the signature when merging call options
// over it (Celery's Signature._IMMUTABLE_OPTIONS).
var immutableOptions = map[string]bool{"group_id": true, "stamped_headers": true}

func mergeOptions(own, call map[string]any) map[string]any {
	o := maps.Clone(own)
	if o == nil {
		o = map[string]any{}
	}
	for k, v := range call {
		if _, has := own[k]; has && immutableOptions[k] {
			continue
		}
		o[k] = v
	}
	return o
}

func pop(o map[string]any, k string) any {
	v := o[k]
	delete(o, k)
	return v
}

// apply is sig.apply_async(args, kwargs, **opts); it returns *AsyncResult
// or *GroupResult.
func (c *Client) apply(ctx context.Context, s *Signature, args []any, kwargs map[string]any, opts map[string]any) (any, error) {
	switch s.kind {
	case "chain":
		return c.applyChain(ctx, s, args, kwargs, opts)
	case "group":
		return c.applyGroup(ctx, s, args, kwargs, opts)
	case "chord":
		return c.applyChord(ctx, s, args, kwargs, opts)
	}
	o := mergeOptions(s.Options, opts)
	for k, v := range o {
		if v == nil {
			delete(o, k) // options set to None are dismissed
		}
	}
	a, kw := s.Args, s.Kwargs
	if !s.Immutable {
		if len(args) > 0 {
			a = append(slices.Clone(args), s.Args...)
		}
		if len(kwargs) > 0 {
			kw = maps.Clone(s.Kwargs)
			if kw == nil {
				kw = map[string]any{}
			}
			maps.Copy(kw, kwargs)
		}
	}
	return c.send(ctx, s.Task, a, kw, o)
}

// partial returns s with partial args/kwargs merged in (Signature.clone
// with args), unless it is immutable.
func partial(s *Signature, args []any, kwargs map[string]any) *Signature {
	if s.Immutable || (len(args) == 0 && len(kwargs) == 0) {
		return s
	}
	if len(args) > 0 {
		s.Args = append(slices.Clone(args), s.Args...)
	}
	if len(kwargs) > 0 {
		if s.Kwargs == nil {
			s.Kwargs = map[string]any{}
		}
		maps.Copy(s.Kwargs, kwargs)
	}
	return s
}

// applyChain is chain.apply_async / chain.run.
func (c *Client) applyChain(ctx context.Context, ch *Signature, args []any, kwargs map[string]any, opts map[string]any) (any, error) {
	o := maps.Clone(ch.Options)
	if o == nil {
		o = map[string]any{}
	}
	maps.Copy(o, opts)
	taskID := str(pop(o, "task_id"))
	groupID := str(pop(o, "group_id"))
	chordBody := pop(o, "chord")
	link := pop(o, "link")
	linkError := pop(o, "link_error")
	rootID := str(pop(o, "root_id"))
	parentID := str(pop(o, "parent_id"))
	var groupIndex *int
	if n, ok := toInt(pop(o, "group_index")); ok {
		i := int(n)
		groupIndex = &i
	}
	if len(args) > 0 && !ch.Immutable {
		args = append(slices.Clone(args), ch.Args...)
	} else {
		args = ch.Args
	}
	steps, results := c.prepareSteps(args, kwargs, ch.tasks, rootID, parentID, linkError, taskID, groupID, chordBody, groupIndex, true)
	if len(steps) == 0 {
		return nil, errors.New("client: empty chain")
	}
	if link != nil {
		steps[0].Options["link"] = appendAny(steps[0].Options["link"], link)
	}
	first := steps[len(steps)-1]
	rest := steps[:len(steps)-1]
	chain := make([]any, 0, len(rest))
	if cur, ok := o["chain"].([]any); ok {
		chain = append(chain, cur...)
	}
	for _, t := range rest {
		chain = append(chain, t)
	}
	o["chain"] = chain
	res, err := c.apply(ctx, first, nil, nil, o)
	if err != nil {
		return nil, err
	}
	if len(rest) == 0 {
		return res, nil
	}
	return results[0], nil
}

func appendAny(cur, add any) []any {
	var out []any
	for _, v := range []any{cur, add} {
		switch x := v.(type) {
		case nil:
		case []any:
			out = append(out, x...)
		default:
			out = append(out, x)
		}
	}
	return out
}

// prepareSteps is chain.prepare_steps: it walks the steps from the last,
// splicing nested chains, unrolling one-member groups, turning a group
// followed by a step into a chord, and freezing each step; the last step
// gets the chain's own task id, group and chord. It returns the steps
// and their results, last step first (the wire order of embed "chain").
func (c *Client) prepareSteps(args []any, kwargs map[string]any, tasks []*Signature, rootID, parentID string, linkError any,
	lastTaskID, groupID string, chordBody any, groupIndex *int, clone bool) ([]*Signature, []any) {
	steps := slices.Clone(tasks)
	var out []*Signature
	var results []any
	var prevTask *Signature
	var prevRes any
	i := 0
	for len(steps) > 0 {
		task := steps[len(steps)-1]
		steps = steps[:len(steps)-1]
		isFirst, isLast := len(steps) == 0, i == 0
		if task.kind == "group" {
			if len(task.tasks) == 1 {
				task = task.tasks[0]
			} else if len(task.tasks) == 0 && (len(steps) > 0 || prevTask != nil) {
				continue
			}
		}
		if clone {
			task = task.Clone()
		}
		if isFirst {
			task = partial(task, args, kwargs)
		}
		if task.kind == "chain" {
			steps = append(steps, task.tasks...)
			continue
		}
		var body *AsyncResult // the step a group turned into a chord body
		if task.kind == "group" && prevTask != nil {
			// group | step is chord(group, step): the step, frozen already,
			// becomes the body and keeps its id.
			body, _ = prevRes.(*AsyncResult)
			out = out[:len(out)-1]
			results = results[:len(results)-1]
			ch := Chord(nil, prevTask)
			ch.header = task
			if body != nil {
				ch.Options["task_id"] = body.ID
			}
			if rootID != "" {
				ch.Options["root_id"] = rootID
			}
			task = ch
			prevTask, prevRes = nil, nil
			if len(out) > 0 {
				prevTask, prevRes = out[len(out)-1], results[len(results)-1]
			}
		}
		var res any
		if isLast {
			res = c.freeze(task, lastTaskID, rootID, parentID, groupID, chordBody, groupIndex)
		} else {
			res = c.freeze(task, "", rootID, "", "", nil, nil)
		}
		if r, ok := res.(*AsyncResult); ok && body != nil && r.ID == body.ID {
			// Keep the handle the later step's Parent already points to.
			body.Header = r.Header
			res = body
		}
		i++
		if prevTask != nil {
			if pr, ok := prevRes.(*AsyncResult); ok && pr.Parent == nil {
				if r, ok := res.(*AsyncResult); ok && r != pr {
					pr.Parent = r
				}
			}
		}
		if linkError != nil {
			task.Options["link_error"] = appendAny(task.Options["link_error"], linkError)
			if task.kind == "chord" && task.body != nil {
				task.body.Options["link_error"] = appendAny(task.body.Options["link_error"], linkError)
			}
		}
		out = append(out, task)
		results = append(results, res)
		prevTask, prevRes = task, res
	}
	return out, results
}

// freeze is Signature.freeze: it writes the task id (kept when already
// set), reply_to and the given ids into the options, and returns the
// result handle (*AsyncResult or *GroupResult).
func (c *Client) freeze(s *Signature, id, rootID, parentID, groupID string, chord any, groupIndex *int) any {
	if s.Options == nil {
		s.Options = map[string]any{}
	}
	switch s.kind {
	case "group":
		return c.freezeGroup(s, id, rootID, parentID, groupID, chord, groupIndex)
	case "chain":
		_, results := c.prepareSteps(s.Args, s.Kwargs, s.tasks, rootID, parentID, nil, id, groupID, chord, groupIndex, false)
		if len(results) == 0 {
			return c.AsyncResult(id)
		}
		return results[0]
	case "chord":
		header := c.freezeGroup(s.header, "", rootID, parentID, "", s.body, nil)
		bodyRes, _ := c.freeze(s.body, id, rootID, "", groupID, chord, groupIndex).(*AsyncResult)
		if bodyRes != nil && bodyRes.Header == nil {
			bodyRes.Header = header
		}
		return bodyRes
	}
	tid := str(s.Options["task_id"])
	if tid == "" {
		tid = id
		if tid == "" {
			tid = newID()
		}
		s.Options["task_id"] = tid
	}
	if rootID != "" {
		s.Options["root_id"] = rootID
	}
	if parentID != "" {
		s.Options["parent_id"] = parentID
	}
	if _, ok := s.Options["reply_to"]; !ok {
		s.Options["reply_to"] = c.cfg.ID
	}
	if _, ok := s.Options["group_id"]; groupID != "" && !ok {
		s.Options["group_id"] = groupID
	}
	if chord != nil {
		s.Options["chord"] = chord
	}
	if groupIndex != nil {
		s.Options["group_index"] = int64(*groupIndex)
	}
	return c.AsyncResult(tid)
}

// freezeGroup is group._freeze_group_tasks: the group's id is its task_id
// option (or groupID, or a new one); members, nested groups flattened, are
// frozen with groupID (the enclosing group or chord, if any), the chord
// body and their index.
func (c *Client) freezeGroup(g *Signature, id, rootID, parentID, groupID string, chord any, groupIndex *int) *GroupResult {
	if g.Options == nil {
		g.Options = map[string]any{}
	}
	gid := str(g.Options["task_id"])
	if gid == "" {
		gid = groupID
		if gid == "" {
			gid = id
		}
		if gid == "" {
			gid = newID()
		}
		g.Options["task_id"] = gid
	}
	if groupID != "" {
		g.Options["group_id"] = groupID
	}
	if chord != nil {
		g.Options["chord"] = chord
	}
	if groupIndex != nil {
		g.Options["group_index"] = int64(*groupIndex)
	}
	if _, ok := g.Options["root_id"]; !ok && rootID != "" {
		g.Options["root_id"] = rootID
	}
	if _, ok := g.Options["parent_id"]; !ok && parentID != "" {
		g.Options["parent_id"] = parentID
	}
	members := flattenGroup(g.tasks)
	res := &GroupResult{ID: gid, c: c}
	for i, m := range members {
		idx := i
		if r, ok := c.freeze(m, "", rootID, parentID, groupID, chord, &idx).(*AsyncResult); ok {
			res.Results = append(res.Results, r)
		}
	}
	g.tasks = members
	return res
}

func flattenGroup(tasks []*Signature) []*Signature {
	var out []*Signature
	for _, t := range tasks {
		if t.kind == "group" {
			out = append(out, flattenGroup(t.tasks)...)
		} else {
			out = append(out, t)
		}
	}
	return out
}

// chordSize counts what completes a chord's header (chord._descend): one
// per task, the members of a group, a chain's last step, a nested chord's
// body.
func chordSize(s *Signature) int {
	switch s.kind {
	case "group":
		n := 0
		for _, t := range s.tasks {
			n += chordSize(t)
		}
		return n
	case "chain":
		for i := len(s.tasks) - 1; i >= 0; i-- {
			if n := chordSize(s.tasks[i]); n > 0 {
				return n
			}
		}
		return 0
	case "chord":
		if s.body == nil {
			return 0
		}
		return chordSize(s.body)
	}
	return 1
}

// applyGroup is group.apply_async.
func (c *Client) applyGroup(ctx context.Context, g *Signature, args []any, kwargs map[string]any, opts map[string]any) (any, error) {
	if len(g.tasks) == 0 {
		return c.freezeGroup(g, "", "", "", "", nil, nil), nil
	}
	if len(args) == 0 {
		args = g.Args
	}
	o := mergeOptions(g.Options, opts)
	gid := str(pop(o, "task_id"))
	if gid == "" {
		gid = newID()
	}
	o["group_id"] = gid
	rootID := str(o["root_id"])
	chordObj := pop(o, "chord")
	members := flattenGroup(g.tasks)
	res := &GroupResult{ID: gid, c: c}
	list := make([]*Signature, len(members))
	for i, m := range members {
		m = m.Clone()
		idx := i
		r := c.freeze(m, "", rootID, "", gid, nil, &idx)
		switch x := r.(type) {
		case *AsyncResult:
			res.Results = append(res.Results, x)
		case *GroupResult:
			res.Results = append(res.Results, x.Results...)
		}
		list[i] = m
	}
	size := 0
	for i, m := range list {
		co := chordObj
		if co == nil {
			co = m.Options["chord"]
		}
		size += chordSize(m)
		if co != nil && i == len(list)-1 {
			if c.backend == nil {
				return nil, fmt.Errorf("client: chord %s: %w", gid, ErrNoBackend)
			}
			if err := c.backend.SetChordSize(ctx, gid, size); err != nil {
				return nil, fmt.Errorf("client: %w", err)
			}
		}
		mo := maps.Clone(o)
		if co != nil {
			mo["chord"] = co
		}
		if _, err := c.apply(ctx, m, args, kwargs, mo); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// applyChord is chord.apply_async / chord.run.
func (c *Client) applyChord(ctx context.Context, ch *Signature, args []any, kwargs map[string]any, opts map[string]any) (any, error) {
	if len(args) > 0 && !ch.Immutable {
		args = append(slices.Clone(args), ch.Args...)
	} else {
		args = ch.Args
	}
	inner, _ := ch.Kwargs["kwargs"].(map[string]any)
	kw := maps.Clone(inner)
	if kw == nil {
		kw = map[string]any{}
	}
	maps.Copy(kw, kwargs)
	body := ch.body.Clone()
	body.Options = mergeOptions(body.Options, opts)
	header := ch.header.Clone()
	if header == nil {
		header = Group()
	}
	options := maps.Clone(ch.Options)
	if options == nil {
		options = map[string]any{}
	}
	maps.Copy(options, opts)
	taskID := str(pop(options, "task_id"))

	gid := str(header.Options["task_id"])
	if gid == "" {
		gid = newID()
	}
	rootID := str(body.Options["root_id"])
	maps.Copy(body.Options, options)
	if taskID == "" {
		taskID = newID()
	}
	bodyRes, _ := c.freeze(body, taskID, rootID, "", gid, nil, nil).(*AsyncResult)
	delete(options, "chain")
	delete(options, "chord")
	delete(options, "link") // a chord's link is its body's
	header.Options["task_id"] = gid
	headerRes := c.freezeGroup(header, "", rootID, "", gid, body, nil)
	if len(header.tasks) > 0 {
		ho := maps.Clone(options)
		ho["task_id"] = gid
		if _, err := c.applyGroup(ctx, header, args, kw, ho); err != nil {
			return nil, err
		}
	} else {
		if _, err := c.apply(ctx, body, []any{[]any{}}, nil, nil); err != nil {
			return nil, err
		}
	}
	if bodyRes == nil {
		bodyRes = c.AsyncResult(taskID)
	}
	bodyRes.Header = headerRes
	return bodyRes, nil
}
