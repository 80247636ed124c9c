package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The queue flags read Celery's setting names from the environment, the
// flag winning; a bad value in either is a usage error naming it.
func TestTopologyFlags(t *testing.T) {
	t.Setenv("CELERY_TASK_DEFAULT_QUEUE_TYPE", "quorum")
	t.Setenv("CELERY_TASK_DEFAULT_PRIORITY", "7")
	t.Setenv("CELERY_BROKER_FAILOVER_STRATEGY", "shuffle")
	f, err := parseWorkerFlags("w", nil, strings.Fields("--task-default-exchange-type topic --task-queue-max-priority 3"))
	if err != nil {
		t.Fatal(err)
	}
	if f.defaultQueueType != "quorum" || f.defaultExchangeType != "topic" || f.queueMaxPriority != 3 ||
		f.defaultPriority != 7 || f.failoverStrategy != "shuffle" || f.queuesGiven {
		t.Errorf("flags %+v", f)
	}
	// A quorum queue cannot take x-max-priority: said before connecting.
	if _, err := f.topology(); err == nil || !strings.Contains(err.Error(), "x-max-priority") {
		t.Errorf("quorum with max priority: %v", err)
	}
	f.queueMaxPriority = 0
	topo, err := f.topology()
	if err != nil {
		t.Fatal(err)
	}
	q, _ := topo.Lookup("celery")
	if !q.Quorum() || q.Exchange.Kind() != "topic" {
		t.Errorf("default queue %+v", q)
	}
	f, err = parseWorkerFlags("w", nil, strings.Fields("--task-default-queue-type classic"))
	if err != nil || f.defaultQueueType != "classic" {
		t.Errorf("flag over env: %+v %v", f, err)
	}

	for _, c := range []struct {
		env, val, args, want string
	}{
		{"CELERY_TASK_DEFAULT_QUEUE_TYPE", "stream", "", "CELERY_TASK_DEFAULT_QUEUE_TYPE"},
		{"CELERY_TASK_QUEUE_MAX_PRIORITY", "high", "", "CELERY_TASK_QUEUE_MAX_PRIORITY"},
		{"CELERY_TASK_CREATE_MISSING_QUEUES", "maybe", "", "CELERY_TASK_CREATE_MISSING_QUEUES"},
		{"", "", "--task-queue-max-priority 300", "--task-queue-max-priority"},
		{"", "", "--task-default-priority -1", "--task-default-priority"},
		{"", "", "--task-default-exchange-type fan", "--task-default-exchange-type"},
		{"", "", "--broker-failover-strategy random", "--broker-failover-strategy"},
	} {
		t.Run(c.want+c.val+c.args, func(t *testing.T) {
			if c.env != "" {
				t.Setenv(c.env, c.val)
			}
			if _, err := parseWorkerFlags("w", nil, strings.Fields(c.args)); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want one naming %s", err, c.want)
			}
		})
	}
}

// A queues file that cannot be used ends the worker with exit 1 and a line
// naming the file and the problem, before anything connects.
func TestMalformedQueuesFile(t *testing.T) {
	dir := t.TempDir()
	for name, c := range map[string]struct{ text, want string }{
		"syntax":       {`[{"name": "a",}]`, "invalid character"},
		"unknown key":  {`[{"name": "a", "exchange_typ": "topic"}]`, `unknown field "exchange_typ"`},
		"no name":      {`[{"exchange": "x"}]`, `no "name"`},
		"bad type":     {`[{"name": "a", "exchange": "a", "exchange_type": "fan"}]`, `type "fan"`},
		"priority":     {`[{"name": "a", "max_priority": 1000}]`, "x-max-priority"},
		"twice":        {`[{"name": "a"}, {"name": "a"}]`, "defined twice"},
		"not a list":   {`{"name": "a"}`, "not a JSON list"},
		"missing file": {"", "no such file"},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".json")
			if c.text != "" {
				if err := os.WriteFile(path, []byte(c.text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			code, _, errb := run(t, testProgram(), "worker", "-b", "amqp://guest:guest@127.0.0.1:1//", "--result-backend", "disabled", "--queues-file", path)
			if code != 1 || !strings.Contains(errb, "--queues-file") || !strings.Contains(errb, c.want) {
				t.Errorf("exit %d, stderr %q; want 1, --queues-file and %q", code, errb, c.want)
			}
			if c.text != "" && !strings.Contains(errb, path) {
				t.Errorf("stderr %q does not name %s", errb, path)
			}
		})
	}
}

// `call` declares the queue it sends to as the queue flags and file say,
// and routes a countdown for a quorum queue with its ETA (native delayed
// delivery on RabbitMQ).
func TestCallUsesTopology(t *testing.T) {
	b := memBroker(t)
	path := filepath.Join(t.TempDir(), "queues.json")
	if err := os.WriteFile(path, []byte(`[{"name": "jobs", "exchange": "jobs", "exchange_type": "topic", "routing_key": "jobs",
		"queue_arguments": {"x-queue-type": "quorum"}}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errb := run(t, testProgram(), "call", "orders.noop", "--queue", "jobs", "--countdown", "30", "--queues-file", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb)
	}
	q, ok := b.Declared("jobs")
	pub := b.Published()
	if !ok || !q.Quorum() || len(pub) != 1 || pub[0].Route.Exchange != "jobs" || pub[0].Route.ETA.IsZero() {
		t.Errorf("declared %+v, published %+v", q, pub)
	}
	if code, _, errb := run(t, testProgram(), "call", "orders.noop", "--queues-file", filepath.Join(t.TempDir(), "none.json")); code != 1 || !strings.Contains(errb, "--queues-file") {
		t.Errorf("missing queues file: exit %d, %q", code, errb)
	}
}
