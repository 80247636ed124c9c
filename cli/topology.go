package cli

import (
	"fmt"
	"os"

	"github.com/celeryworker/gocelery/broker"
)

// topology builds the queue definitions from the Celery-named flags and
// --queues-file. A file that cannot be read or parsed is an error naming
// the file and the problem.
func (f *workerFlags) topology() (broker.Topology, error) {
	t := broker.Topology{
		DefaultQueue:             f.defaultQueue,
		DefaultQueueType:         f.defaultQueueType,
		DefaultExchangeType:      f.defaultExchangeType,
		NoCreateMissingQueues:    !f.createMissingQueues,
		MissingQueueType:         f.missingQueueType,
		MissingQueueExchangeType: f.missingExchType,
		MaxPriority:              f.queueMaxPriority,
	}
	if f.queuesFile != "" {
		data, err := os.ReadFile(f.queuesFile)
		if err != nil {
			return t, fmt.Errorf("--queues-file: %w", err)
		}
		if t.Queues, err = broker.ParseQueues(data); err != nil {
			return t, fmt.Errorf("--queues-file %s: %w", f.queuesFile, err)
		}
	}
	if err := t.Validate(); err != nil {
		if f.queuesFile != "" {
			return t, fmt.Errorf("--queues-file %s: %w", f.queuesFile, err)
		}
		return t, fmt.Errorf("queues: %w", err)
	}
	return t, nil
}

// queueLines names the consumed queues for the banner: -Q, else every
// defined queue, with its type when it is not classic.
func (s *session) queueLines() []string {
	t, _ := s.f.topology() // checked before the banner
	names := splitList(s.f.queues)
	if !s.f.queuesGiven {
		names = nil
		for _, q := range t.Defined() {
			names = append(names, q.Name)
		}
	}
	out := make([]string, 0, len(names))
	for _, n := range names {
		q, err := t.Lookup(n)
		if err == nil && q.Type() != "classic" {
			n += " (" + q.Type() + ")"
		}
		out = append(out, n)
	}
	return out
}
