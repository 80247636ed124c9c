package cli

import (
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/celeryworker/gocelery/broker"
)

// topoFlags are Celery's queue settings as flags (env CELERY_<SETTING>),
// shared by the worker and call commands so both declare a queue alike.
type topoFlags struct {
	defaultQueue, defaultQueueType    string
	defaultExchangeType               string
	missingQueueType, missingExchType string
	createMissingQueues               bool
	queueMaxPriority, defaultPriority int
	queuesFile                        string
	envErr                            error // the first invalid CELERY_... value
}

func (f *topoFlags) register(fs *pflag.FlagSet) {
	env := func(key, def string) string {
		if v := os.Getenv(key); v != "" {
			return v
		}
		return def
	}
	f.createMissingQueues = true
	f.defaultQueueType, f.missingQueueType = "classic", "classic"
	f.defaultExchangeType, f.missingExchType = "direct", "direct"
	fs.StringVar(&f.defaultQueue, "task-default-queue", env("CELERY_TASK_DEFAULT_QUEUE", "celery"), "queue of tasks and canvas steps that name none (env CELERY_TASK_DEFAULT_QUEUE)")
	fs.Var(f.envChoice(&f.defaultQueueType, "CELERY_TASK_DEFAULT_QUEUE_TYPE", "classic", "quorum"), "task-default-queue-type", "type of the default queue: classic or quorum (env CELERY_TASK_DEFAULT_QUEUE_TYPE)")
	fs.Var(exchangeTypeValue{f.envChoice(&f.defaultExchangeType, "CELERY_TASK_DEFAULT_EXCHANGE_TYPE", broker.ExchangeTypes...)}, "task-default-exchange-type", "type of the default exchange: direct, topic, fanout or headers (env CELERY_TASK_DEFAULT_EXCHANGE_TYPE); quorum queues need topic for native delayed delivery")
	fs.Var(f.envChoice(&f.missingQueueType, "CELERY_TASK_CREATE_MISSING_QUEUE_TYPE", "classic", "quorum"), "task-create-missing-queue-type", "type of queues named in -Q (or by a task) that --queues-file does not define (env CELERY_TASK_CREATE_MISSING_QUEUE_TYPE)")
	fs.Var(exchangeTypeValue{f.envChoice(&f.missingExchType, "CELERY_TASK_CREATE_MISSING_QUEUE_EXCHANGE_TYPE", broker.ExchangeTypes...)}, "task-create-missing-queue-exchange-type", "exchange type of those queues: direct, topic, fanout or headers (env CELERY_TASK_CREATE_MISSING_QUEUE_EXCHANGE_TYPE)")
	fs.BoolVar(&f.createMissingQueues, "task-create-missing-queues", f.envBool("CELERY_TASK_CREATE_MISSING_QUEUES", true), "create queues that --queues-file does not define (env CELERY_TASK_CREATE_MISSING_QUEUES); false: such a queue is an error")
	fs.IntVar(&f.queueMaxPriority, "task-queue-max-priority", f.envInt("CELERY_TASK_QUEUE_MAX_PRIORITY", 0), "x-max-priority of every queue that sets none: priority queues (env CELERY_TASK_QUEUE_MAX_PRIORITY; 0 = none)")
	fs.IntVar(&f.defaultPriority, "task-default-priority", f.envInt("CELERY_TASK_DEFAULT_PRIORITY", 0), "priority of tasks sent without one (env CELERY_TASK_DEFAULT_PRIORITY)")
	fs.StringVar(&f.queuesFile, "queues-file", env("GOCELERY_QUEUES_FILE", ""), "JSON list of queue definitions, kombu's Queue(...) arguments (docs/deployment.md; env GOCELERY_QUEUES_FILE)")
}

// exchangeTypeValue names its type briefly in the usage text (the four
// choices would widen every line's column).
type exchangeTypeValue struct{ choiceValue }

func (exchangeTypeValue) Type() string { return "type" }

// check reports an invalid CELERY_... value or number as a usage error.
func (f *topoFlags) check() error {
	if f.envErr != nil {
		return &usageError{f.envErr.Error()}
	}
	if f.queueMaxPriority < 0 || f.queueMaxPriority > 255 {
		return usagef("--task-queue-max-priority must be 0 (none) to 255, got %d", f.queueMaxPriority)
	}
	if f.defaultPriority < 0 || f.defaultPriority > 255 {
		return usagef("--task-default-priority must be 0 to 255, got %d", f.defaultPriority)
	}
	return nil
}

// topology builds the queue definitions from the Celery-named flags and
// --queues-file. A file that cannot be read or parsed is an error naming
// the file and the problem.
func (f *topoFlags) topology() (broker.Topology, error) {
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
