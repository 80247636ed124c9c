package worker

import "github.com/celeryworker/gocelery/protocol"

// The known jobs are a list threaded through the jobs themselves: an entry
// costs no allocation (a sync.Map entry cost about 100 bytes per held
// message).

func (w *Worker) addKnown(j *job) {
	w.knownMu.Lock()
	j.next = w.knownHead
	if j.next != nil {
		j.next.prev = j
	}
	w.knownHead = j
	w.knownMu.Unlock()
}

func (w *Worker) removeKnown(j *job) {
	w.knownMu.Lock()
	defer w.knownMu.Unlock()
	switch {
	case j.prev != nil:
		j.prev.next = j.next
	case w.knownHead == j:
		w.knownHead = j.next
	default:
		return // not listed
	}
	if j.next != nil {
		j.next.prev = j.prev
	}
	j.prev, j.next = nil, nil
}

// eachKnown calls f for each known job, under the lock: f must be quick.
func (w *Worker) eachKnown(f func(*job)) {
	w.knownMu.Lock()
	defer w.knownMu.Unlock()
	for j := w.knownHead; j != nil; j = j.next {
		f(j)
	}
}

// jobView is a known job with its message.
type jobView struct {
	j   *job
	msg *protocol.Message
}

// knownJobs lists the known jobs keep selects (called under the lock),
// frozen ones thawed for the caller alone.
func (w *Worker) knownJobs(keep func(*job) bool) []jobView {
	var out []jobView
	var frozen []string
	w.eachKnown(func(j *job) {
		if keep(j) {
			out = append(out, jobView{j: j, msg: j.msg})
			frozen = append(frozen, j.frozen)
		}
	})
	for i := range out {
		if out[i].msg == nil {
			out[i].msg = thaw(frozen[i])
		}
	}
	return out
}

// messageOf is j's message for a caller that does not have j (a runner
// may be thawing it meanwhile): read under the lock, a frozen one thawed
// for the caller alone.
func (w *Worker) messageOf(j *job) *protocol.Message {
	w.knownMu.Lock()
	m, frozen := j.msg, j.frozen
	w.knownMu.Unlock()
	if m == nil {
		m = thaw(frozen)
	}
	return m
}

// id is j's task id; the caller holds w.knownMu or has j.
func (j *job) id() string {
	if j.msg != nil {
		return j.msg.ID
	}
	return frozenID(j.frozen)
}
