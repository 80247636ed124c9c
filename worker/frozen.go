package worker

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/celeryworker/gocelery/protocol"
)

// A message held for its ETA, or waiting for a runner or a rate limit
// token, is kept frozen: its decoded fields packed into one string (about
// the size of the message on the wire, or less), instead of the decoded
// protocol.Message (a 512-byte struct, a map and a boxed value per
// argument, a string per header). It is thawed
// back to an equal Message when it is due, taken by a runner, or listed by
// inspect. A message holding a value the packing does not know (kombu's
// datetime, decimal, ... in its arguments) stays decoded.

// thawedLine is how many jobs may wait for a runner unfrozen at least: in
// a short line packing and unpacking each message would cost more CPU than
// the memory it saves. The line is as long as the prefetch window the pool
// asks for (its size times the multiplier, up to maxThawedLine): the
// broker never sends more than that for the runners, so it bounds the
// memory too, and packing then unpacking every message of a window that is
// always full (-c 64: 256) cost 4% of the worker's CPU. Held ETA tasks,
// which widen the window, are frozen whatever the line; so are the jobs
// of an unlimited window beyond thawedLine.
const (
	thawedLine    = 64
	maxThawedLine = 1024
)

// thawedLen is the current line: see thawedLine.
func (w *Worker) thawedLen() int {
	if w.multiplier == 0 {
		return thawedLine
	}
	return min(max(thawedLine, w.pool.Size()*w.multiplier), maxThawedLine)
}

// freeze packs j's message, unless it holds a value freeze does not know.
// Only the serve loop calls it, before j is shared.
func (w *Worker) freeze(j *job) {
	if b, ok := freeze(j.msg); ok {
		j.frozen, j.msg, j.log = b, nil, nil
	}
}

// refreeze packs j's message again (a due job that will wait for a
// runner); inspect may be reading j, hence the lock.
func (w *Worker) refreeze(j *job) {
	b, ok := freeze(j.msg)
	if !ok {
		return
	}
	j.log = nil
	w.knownMu.Lock()
	j.frozen, j.msg = b, nil
	w.knownMu.Unlock()
}

// thaw gives a frozen j its message and logger back; the goroutine that
// has j calls it before it reads j.msg.
func (w *Worker) thaw(j *job) {
	if j.msg != nil {
		return
	}
	m := thaw(j.frozen)
	log := jobLogger(w.log, m.Name(), m.ID)
	j.log = &log
	w.knownMu.Lock()
	j.msg, j.frozen = m, ""
	w.knownMu.Unlock()
}

// logOf is j's logger, made for the occasion while j is frozen.
func (w *Worker) logOf(j *job) *zerolog.Logger {
	if j.log != nil {
		return j.log
	}
	m := thaw(j.frozen)
	log := jobLogger(w.log, m.Name(), m.ID)
	return &log
}

// Value tags.
const (
	fzNil byte = iota
	fzFalse
	fzTrue
	fzString
	fzNumber // json.Number
	fzInt64
	fzUint64
	fzFloat64
	fzInt
	fzBytes
	fzNilBytes
	fzList
	fzNilList
	fzMap
	fzNilMap
	fzTime
)

// common are strings many messages carry, packed as one byte.
var common = [...]string{"application/json", "utf-8", "py", "go", "application/x-msgpack",
	"binary", "{}", "()", "[]", "gzip", "zlib"}

// How a string field is packed: its length plus fzStrOffset, or one of
// these.
const (
	fzEmpty     = iota
	fzSameAsID  // the message id again (correlation id, root id)
	fzCommon    // fzCommon+i is common[i]
	fzStrOffset = fzCommon + len(common)
)

type freezer struct {
	b  []byte
	id string
}

// freeze packs m; ok is false when m holds a value it cannot pack.
func freeze(m *protocol.Message) (b string, ok bool) {
	f := &freezer{b: make([]byte, 0, 256), id: m.ID}
	f.str(m.ID) // first: frozenID reads it
	f.uvarint(uint64(m.Protocol))
	for _, s := range [...]string{m.Task, m.Shadow, m.Lang, m.RootID, m.ParentID, m.Group,
		m.ArgsRepr, m.KwargsRepr, m.Origin, m.ContentType, m.ContentEncoding, m.Compression,
		m.CorrelationID, m.ReplyTo, m.Expiration} {
		f.field(s)
	}
	f.optInt(m.GroupIndex)
	f.varint(int64(m.Retries))
	f.varint(int64(m.ReplacedTaskNesting))
	if !f.optTime(m.ETA) || !f.optTime(m.Expires) {
		return "", false
	}
	f.optFloat(m.TimeLimit.Hard)
	f.optFloat(m.TimeLimit.Soft)
	f.b = append(f.b, boolByte(m.IgnoreResult), m.DeliveryMode, m.Priority)
	if m.StampedHeaders == nil {
		f.uvarint(0)
	} else {
		f.uvarint(uint64(len(m.StampedHeaders)) + 1)
		for _, s := range m.StampedHeaders {
			f.str(s)
		}
	}
	ok = f.dict(m.Stamps) && f.dict(m.Headers) && f.list(m.Args) && f.dict(m.Kwargs) &&
		f.sigs(m.Callbacks) && f.sigs(m.Errbacks) && f.sigs(m.Chain)
	if !ok {
		return "", false
	}
	if m.Chord == nil {
		f.b = append(f.b, 0)
	} else {
		f.b = append(f.b, 1)
		if !f.sig(m.Chord) {
			return "", false
		}
	}
	// A string of its own size: the scratch capacity would be kept too.
	return string(f.b), true
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

func (f *freezer) uvarint(v uint64) { f.b = binary.AppendUvarint(f.b, v) }
func (f *freezer) varint(v int64)   { f.b = binary.AppendVarint(f.b, v) }
func (f *freezer) float(v float64) {
	f.b = binary.LittleEndian.AppendUint64(f.b, math.Float64bits(v))
}

// optFloat packs 0 (no time limit) in one byte.
func (f *freezer) optFloat(v float64) {
	if v == 0 && !math.Signbit(v) {
		f.b = append(f.b, 0)
		return
	}
	f.b = append(f.b, 1)
	f.float(v)
}

func (f *freezer) str(s string) {
	f.uvarint(uint64(len(s)))
	f.b = append(f.b, s...)
}

// field packs a string field: an empty, common or id-repeating one in one
// byte.
func (f *freezer) field(s string) {
	switch {
	case s == "":
		f.uvarint(fzEmpty)
		return
	case s == f.id:
		f.uvarint(fzSameAsID)
		return
	}
	for i, c := range common {
		if s == c {
			f.uvarint(uint64(fzCommon + i))
			return
		}
	}
	f.uvarint(uint64(len(s) + fzStrOffset))
	f.b = append(f.b, s...)
}

func (f *freezer) optInt(p *int) {
	if p == nil {
		f.b = append(f.b, 0)
		return
	}
	f.b = append(f.b, 1)
	f.varint(int64(*p))
}

func (f *freezer) optTime(t *time.Time) bool {
	if t == nil {
		f.b = append(f.b, 0)
		return true
	}
	f.b = append(f.b, 1)
	return f.time(*t)
}

// time packs an instant and its zone: UTC, or a fixed offset (the two
// kinds protocol's parser makes), else the time is not packed (ok false).
func (f *freezer) time(t time.Time) bool {
	name, off := t.Zone()
	switch {
	case t.Location() == time.UTC:
		f.b = append(f.b, 0)
	case name == "" && t.Location() != time.Local:
		f.b = append(f.b, 1)
		f.varint(int64(off))
	default:
		return false
	}
	f.varint(t.Unix())
	f.uvarint(uint64(t.Nanosecond()))
	return true
}

func (f *freezer) sigs(s []protocol.Signature) bool {
	if s == nil {
		f.uvarint(0)
		return true
	}
	f.uvarint(uint64(len(s)) + 1)
	for i := range s {
		if !f.sig(&s[i]) {
			return false
		}
	}
	return true
}

func (f *freezer) sig(s *protocol.Signature) bool {
	f.str(s.Task)
	f.str(s.SubtaskType)
	f.b = append(f.b, boolByte(s.Immutable))
	return f.list(s.Args) && f.dict(s.Kwargs) && f.dict(s.Options) && f.dict(s.Extra)
}

func (f *freezer) list(l []any) bool {
	if l == nil {
		f.b = append(f.b, fzNilList)
		return true
	}
	f.b = append(f.b, fzList)
	f.uvarint(uint64(len(l)))
	for _, v := range l {
		if !f.value(v) {
			return false
		}
	}
	return true
}

func (f *freezer) dict(m map[string]any) bool {
	if m == nil {
		f.b = append(f.b, fzNilMap)
		return true
	}
	f.b = append(f.b, fzMap)
	f.uvarint(uint64(len(m)))
	for k, v := range m {
		f.str(k)
		if !f.value(v) {
			return false
		}
	}
	return true
}

func (f *freezer) value(v any) bool {
	switch x := v.(type) {
	case nil:
		f.b = append(f.b, fzNil)
	case bool:
		f.b = append(f.b, fzFalse+boolByte(x))
	case string:
		f.b = append(f.b, fzString)
		f.str(x)
	case json.Number:
		f.b = append(f.b, fzNumber)
		f.str(string(x))
	case int64:
		f.b = append(f.b, fzInt64)
		f.varint(x)
	case uint64:
		f.b = append(f.b, fzUint64)
		f.uvarint(x)
	case float64:
		f.b = append(f.b, fzFloat64)
		f.float(x)
	case int:
		f.b = append(f.b, fzInt)
		f.varint(int64(x))
	case []byte:
		if x == nil {
			f.b = append(f.b, fzNilBytes)
			break
		}
		f.b = append(f.b, fzBytes)
		f.str(string(x))
	case []any:
		return f.list(x)
	case map[string]any:
		return f.dict(x)
	case time.Time:
		f.b = append(f.b, fzTime)
		return f.time(x)
	default:
		return false
	}
	return true
}

// thawer reads what freeze packed; the input is the worker's own, so a
// malformed one is a bug (it panics).
type thawer struct {
	b  string
	id string
}

// frozenID is the id of a frozen message (sharing the frozen string).
func frozenID(b string) string {
	t := &thawer{b: b}
	return t.raw()
}

// thaw rebuilds the message freeze packed.
func thaw(b string) *protocol.Message {
	t := &thawer{b: b}
	m := &protocol.Message{}
	m.ID = t.str()
	t.id = m.ID
	m.Protocol = int(t.uvarint())
	for _, p := range [...]*string{&m.Task, &m.Shadow, &m.Lang, &m.RootID, &m.ParentID, &m.Group,
		&m.ArgsRepr, &m.KwargsRepr, &m.Origin, &m.ContentType, &m.ContentEncoding, &m.Compression,
		&m.CorrelationID, &m.ReplyTo, &m.Expiration} {
		*p = t.field()
	}
	if t.byte() == 1 {
		v := int(t.varint())
		m.GroupIndex = &v
	}
	m.Retries = int(t.varint())
	m.ReplacedTaskNesting = int(t.varint())
	m.ETA = t.optTime()
	m.Expires = t.optTime()
	m.TimeLimit.Hard = t.optFloat()
	m.TimeLimit.Soft = t.optFloat()
	m.IgnoreResult = t.byte() == 1
	m.DeliveryMode = t.byte()
	m.Priority = t.byte()
	if n := t.uvarint(); n > 0 {
		m.StampedHeaders = make([]string, n-1)
		for i := range m.StampedHeaders {
			m.StampedHeaders[i] = t.str()
		}
	}
	m.Stamps = t.dict()
	m.Headers = t.dict()
	m.Args = t.list()
	m.Kwargs = t.dict()
	m.Callbacks = t.sigs()
	m.Errbacks = t.sigs()
	m.Chain = t.sigs()
	if t.byte() == 1 {
		s := t.sig()
		m.Chord = &s
	}
	return m
}

func (t *thawer) byte() byte {
	c := t.b[0]
	t.b = t.b[1:]
	return c
}

// uvarint reads what binary.AppendUvarint wrote.
func (t *thawer) uvarint() uint64 {
	var v uint64
	for shift := 0; ; shift += 7 {
		c := t.byte()
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return v
		}
	}
}

// varint reads what binary.AppendVarint wrote (zig-zag).
func (t *thawer) varint() int64 {
	u := t.uvarint()
	v := int64(u >> 1)
	if u&1 != 0 {
		v = ^v
	}
	return v
}

func (t *thawer) float() float64 {
	var u uint64
	for i := range 8 {
		u |= uint64(t.b[i]) << (8 * i)
	}
	t.b = t.b[8:]
	return math.Float64frombits(u)
}

// raw reads a length and that many bytes, sharing the frozen string.
func (t *thawer) raw() string {
	n := int(t.uvarint())
	s := t.b[:n]
	t.b = t.b[n:]
	return s
}

// str is raw copied: a thawed string may be kept long after the message
// (a task name in the stats, a revoked id), and a shared one would keep
// the whole frozen message, arguments and all.
func (t *thawer) str() string { return strings.Clone(t.raw()) }

func (t *thawer) field() string {
	switch n := int(t.uvarint()); {
	case n == fzEmpty:
		return ""
	case n == fzSameAsID:
		return t.id
	case n < fzStrOffset:
		return common[n-fzCommon]
	default:
		n -= fzStrOffset
		s := t.b[:n]
		t.b = t.b[n:]
		return strings.Clone(s)
	}
}

func (t *thawer) optFloat() float64 {
	if t.byte() == 0 {
		return 0
	}
	return t.float()
}

func (t *thawer) optTime() *time.Time {
	if t.byte() == 0 {
		return nil
	}
	v := t.time()
	return &v
}

func (t *thawer) time() time.Time {
	loc := time.UTC
	if t.byte() == 1 {
		loc = time.FixedZone("", int(t.varint()))
	}
	sec := t.varint()
	return time.Unix(sec, int64(t.uvarint())).In(loc)
}

func (t *thawer) sigs() []protocol.Signature {
	n := t.uvarint()
	if n == 0 {
		return nil
	}
	s := make([]protocol.Signature, n-1)
	for i := range s {
		s[i] = t.sig()
	}
	return s
}

func (t *thawer) sig() protocol.Signature {
	s := protocol.Signature{Task: t.str(), SubtaskType: t.str(), Immutable: t.byte() == 1}
	s.Args = t.list()
	s.Kwargs = t.dict()
	s.Options = t.dict()
	s.Extra = t.dict()
	return s
}

func (t *thawer) list() []any {
	if v, _ := t.value().([]any); v != nil {
		return v
	}
	return nil
}

func (t *thawer) dict() map[string]any {
	if v, _ := t.value().(map[string]any); v != nil {
		return v
	}
	return nil
}

func (t *thawer) value() any {
	switch tag := t.byte(); tag {
	case fzNil:
		return nil
	case fzFalse, fzTrue:
		return tag == fzTrue
	case fzString:
		return t.str()
	case fzNumber:
		return json.Number(t.str())
	case fzInt64:
		return t.varint()
	case fzUint64:
		return t.uvarint()
	case fzFloat64:
		return t.float()
	case fzInt:
		return int(t.varint())
	case fzBytes:
		return []byte(t.raw())
	case fzNilBytes:
		return []byte(nil)
	case fzList:
		l := make([]any, t.uvarint())
		for i := range l {
			l[i] = t.value()
		}
		return l
	case fzNilList:
		return []any(nil)
	case fzMap:
		n := int(t.uvarint())
		m := make(map[string]any, n)
		for range n {
			k := t.str()
			m[k] = t.value()
		}
		return m
	case fzNilMap:
		return map[string]any(nil)
	case fzTime:
		return t.time()
	}
	panic("worker: corrupt frozen message")
}
