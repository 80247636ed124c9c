package client

import (
	"fmt"
	"maps"
	"slices"

	"github.com/celeryworker/gocelery/protocol"
)

// Signature is a task call to make later, Celery's signature: a task name
// with partial arguments and options, or a composite (chain, group,
// chord). Built in Go, it serializes to the same dict a Python producer
// writes, so a chain, group or chord sent from Go runs on Python and Go
// workers alike.
//
// Signatures are values to build and send; Apply does not change the
// signature it is given (it works on a copy).
type Signature struct {
	Task      string
	Args      []any
	Kwargs    map[string]any
	Options   map[string]any
	Immutable bool

	kind   string       // "", "chain", "group", "chord"
	tasks  []*Signature // chain steps, group members
	header *Signature   // chord header (a group)
	body   *Signature   // chord body
}

// S is Python's task.s(*args): a signature whose parent's result, when it
// is a callback or a chain step, is prepended to args.
func S(task string, args ...any) *Signature {
	return &Signature{Task: task, Args: args, Kwargs: map[string]any{}, Options: map[string]any{}}
}

// SI is Python's task.si(*args): an immutable signature, called with its
// own arguments only.
func SI(task string, args ...any) *Signature {
	s := S(task, args...)
	s.Immutable = true
	return s
}

// WithKwargs sets keyword arguments (merged over those already set) and
// returns s.
func (s *Signature) WithKwargs(kw map[string]any) *Signature {
	if s.Kwargs == nil {
		s.Kwargs = map[string]any{}
	}
	maps.Copy(s.Kwargs, kw)
	return s
}

// Set sets options (Queue, Countdown, TaskID, Link, ...) and returns s, as
// Python's sig.set(...).
func (s *Signature) Set(opts ...Option) *Signature {
	if s.Options == nil {
		s.Options = map[string]any{}
	}
	for _, f := range opts {
		if f != nil {
			f(s.Options)
		}
	}
	return s
}

// SetImmutable marks s (every member, for a group) immutable or not and
// returns s.
func (s *Signature) SetImmutable(v bool) *Signature {
	if s.kind == "group" {
		for _, t := range s.tasks {
			t.SetImmutable(v)
		}
		return s
	}
	s.Immutable = v
	return s
}

// Kind is "" for a task, else "chain", "group" or "chord".
func (s *Signature) Kind() string { return s.kind }

// Tasks are a chain's steps, a group's members or a chord's header tasks.
func (s *Signature) Tasks() []*Signature {
	if s.kind == "chord" {
		return s.header.tasks
	}
	return s.tasks
}

// Body is a chord's body.
func (s *Signature) Body() *Signature { return s.body }

// ID is the task id frozen in the signature's options (options.task_id),
// "" before it is sent.
func (s *Signature) ID() string {
	id, _ := s.Options["task_id"].(string)
	return id
}

// Chain runs steps one after the other, each step's result prepended to
// the next one's arguments (unless it is immutable). Nested chains are
// spliced in; a group followed by a step becomes a chord, as in Celery.
func Chain(steps ...*Signature) *Signature {
	return &Signature{Task: "celery.chain", Kwargs: map[string]any{}, Options: map[string]any{},
		kind: "chain", tasks: slices.Clone(steps)}
}

// Group runs members in parallel; its result is the list of theirs.
func Group(members ...*Signature) *Signature {
	return &Signature{Task: "celery.group", Kwargs: map[string]any{}, Options: map[string]any{},
		kind: "group", tasks: slices.Clone(members)}
}

// Chord runs header in parallel and then body with the list of the
// header's results prepended to its arguments. It needs the Redis result
// backend (the header's workers count the finished parts there).
func Chord(header []*Signature, body *Signature) *Signature {
	h := Group(header...)
	if len(header) == 1 && header[0] != nil && header[0].kind == "group" {
		h = header[0]
	}
	return &Signature{Task: "celery.chord", Kwargs: map[string]any{}, Options: map[string]any{},
		kind: "chord", header: h, body: body}
}

// Clone is a deep copy of the signature tree (option maps and argument
// slices copied, argument values shared).
func (s *Signature) Clone() *Signature {
	if s == nil {
		return nil
	}
	c := *s
	c.Args = slices.Clone(s.Args)
	c.Kwargs = maps.Clone(s.Kwargs)
	if c.Kwargs == nil {
		c.Kwargs = map[string]any{}
	}
	c.Options = cloneOptions(s.Options)
	if s.tasks != nil {
		c.tasks = make([]*Signature, len(s.tasks))
		for i, t := range s.tasks {
			c.tasks[i] = t.Clone()
		}
	}
	c.header = s.header.Clone()
	c.body = s.body.Clone()
	return &c
}

func cloneOptions(o map[string]any) map[string]any {
	c := make(map[string]any, len(o))
	for k, v := range o {
		switch x := v.(type) {
		case *Signature:
			c[k] = x.Clone()
		case []any:
			l := make([]any, len(x))
			for i, e := range x {
				if s, ok := e.(*Signature); ok {
					l[i] = s.Clone()
				} else {
					l[i] = e
				}
			}
			c[k] = l
		case map[string]any:
			c[k] = maps.Clone(x)
		default:
			c[k] = v
		}
	}
	return c
}

// Value is the dict Celery serializes a signature as: task, args, kwargs,
// options, subtask_type, immutable. A chain is
// {"task": "celery.chain", "kwargs": {"tasks": [...]}, "subtask_type": "chain"},
// a group {"task": "celery.group", "kwargs": {"tasks": [...]}, ...}, a
// chord {"task": "celery.chord", "kwargs": {"kwargs": {}, "header": <group>,
// "body": <sig>}, ...}.
func (s *Signature) Value() map[string]any {
	args := s.Args
	if args == nil {
		args = []any{}
	}
	kwargs := map[string]any{}
	var subtask any
	switch s.kind {
	case "":
		for k, v := range s.Kwargs {
			kwargs[k] = v
		}
	case "chain", "group":
		tasks := make([]any, len(s.tasks))
		for i, t := range s.tasks {
			tasks[i] = t.Value()
		}
		kwargs["tasks"] = tasks
		subtask = s.kind
	case "chord":
		header := s.header
		if header == nil {
			header = Group()
		}
		var body any
		if s.body != nil {
			body = s.body.Value()
		}
		inner := map[string]any{}
		if kw, ok := s.Kwargs["kwargs"].(map[string]any); ok {
			inner = kw
		}
		kwargs["kwargs"] = inner
		kwargs["header"] = header.Value()
		kwargs["body"] = body
		subtask = "chord"
	}
	return map[string]any{
		"task":         s.Task,
		"args":         plainValue(args),
		"kwargs":       plainValue(kwargs),
		"options":      plainValue(s.Options),
		"subtask_type": subtask,
		"immutable":    s.Immutable,
	}
}

// plainValue replaces signatures inside option values (link, link_error,
// chord, chain) by their dicts.
func plainValue(v any) any {
	switch x := v.(type) {
	case *Signature:
		if x == nil {
			return nil
		}
		return x.Value()
	case []*Signature:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = plainValue(e)
		}
		return l
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = plainValue(e)
		}
		return l
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = plainValue(e)
		}
		return m
	}
	return v
}

// SignatureFromValue reads a signature dict (as found in a message's embed
// or a result), composites included.
func SignatureFromValue(v any) (*Signature, error) {
	ps, err := protocol.SignatureFromValue(v)
	if err != nil {
		return nil, err
	}
	s := &Signature{Task: ps.Task, Args: ps.Args, Kwargs: ps.Kwargs, Options: ps.Options, Immutable: ps.Immutable}
	if s.Kwargs == nil {
		s.Kwargs = map[string]any{}
	}
	if s.Options == nil {
		s.Options = map[string]any{}
	}
	switch ps.SubtaskType {
	case "":
	case "chain", "group":
		s.kind = ps.SubtaskType
		list, _ := ps.Kwargs["tasks"].([]any)
		for _, e := range list {
			t, err := SignatureFromValue(e)
			if err != nil {
				return nil, err
			}
			s.tasks = append(s.tasks, t)
		}
		s.Kwargs = map[string]any{}
	case "chord":
		s.kind = "chord"
		switch h := ps.Kwargs["header"].(type) {
		case map[string]any:
			g, err := SignatureFromValue(h)
			if err != nil {
				return nil, err
			}
			if g.kind != "group" {
				g = Group(g)
			}
			s.header = g
		case []any:
			var members []*Signature
			for _, e := range h {
				t, err := SignatureFromValue(e)
				if err != nil {
					return nil, err
				}
				members = append(members, t)
			}
			s.header = Group(members...)
		default:
			s.header = Group()
		}
		if b := ps.Kwargs["body"]; b != nil {
			body, err := SignatureFromValue(b)
			if err != nil {
				return nil, err
			}
			s.body = body
		}
		kw := map[string]any{}
		if inner, ok := ps.Kwargs["kwargs"].(map[string]any); ok {
			kw["kwargs"] = inner
		}
		s.Kwargs = kw
	default:
		return nil, fmt.Errorf("client: signature type %q is not supported", ps.SubtaskType)
	}
	return s, nil
}

// wire converts option values holding signatures (link, link_error,
// chain, chord) to the protocol's form.
func wireSignatures(v any) ([]protocol.Signature, error) {
	var items []any
	switch x := v.(type) {
	case nil:
		return nil, nil
	case []any:
		items = x
	case []*Signature:
		for _, s := range x {
			items = append(items, s)
		}
	default:
		items = []any{x}
	}
	out := make([]protocol.Signature, 0, len(items))
	for _, e := range items {
		s, err := wireSignature(e)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func wireSignature(v any) (protocol.Signature, error) {
	switch x := v.(type) {
	case *Signature:
		return protocol.SignatureFromValue(x.Value())
	case protocol.Signature:
		return x, nil
	case map[string]any:
		return protocol.SignatureFromValue(plainValue(x))
	}
	return protocol.Signature{}, fmt.Errorf("client: %T is not a signature", v)
}
