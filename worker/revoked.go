package worker

import (
	"sort"
	"sync"
	"time"
)

// revokedSet remembers revoked task ids like Celery's LimitedSet: at most
// max entries; when full, entries older than ttl go first, then the
// oldest.
type revokedSet struct {
	mu    sync.Mutex
	max   int
	ttl   time.Duration
	items map[string]revokedAt
	seq   uint64
}

type revokedAt struct {
	at  time.Time
	seq uint64 // insertion order, for ties in time
}

func newRevokedSet(max int, ttl time.Duration) *revokedSet {
	return &revokedSet{max: max, ttl: ttl, items: map[string]revokedAt{}}
}

func (s *revokedSet) Add(ids ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for _, id := range ids {
		s.seq++
		s.items[id] = revokedAt{now, s.seq}
	}
	if len(s.items) <= s.max {
		return
	}
	for id, at := range s.items {
		if now.Sub(at.at) > s.ttl {
			delete(s.items, id)
		}
	}
	if over := len(s.items) - s.max; over > 0 {
		type entry struct {
			id  string
			seq uint64
		}
		all := make([]entry, 0, len(s.items))
		for id, at := range s.items {
			all = append(all, entry{id, at.seq})
		}
		sort.Slice(all, func(i, j int) bool { return all[i].seq < all[j].seq })
		for _, e := range all[:over] {
			delete(s.items, e.id)
		}
	}
}

func (s *revokedSet) Contains(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.items[id]
	return ok
}

// IDs lists the revoked ids, sorted.
func (s *revokedSet) IDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.items))
	for id := range s.items {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// Stamps returns the set as Celery's mingle exchanges it:
// {id: [unix timestamp float, id]}.
func (s *revokedSet) Stamps() map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]any, len(s.items))
	for id, at := range s.items {
		out[id] = []any{float64(at.at.UnixNano()) / 1e9, id}
	}
	return out
}
