package worker

import "time"

// Observer is told what the worker does, for metrics (package metrics
// implements it for Prometheus). Its methods run on the worker's hot path:
// they must be quick and never block. Gauges (running, reserved, held,
// abandoned) are read from Worker.Snapshot instead.
type Observer interface {
	// TaskReceived: a message of a registered task was accepted; queue is
	// the routing key it came with.
	TaskReceived(task, queue string)
	// TaskStarted: a runner started it, wait after it was received (or
	// after its ETA, for a held task).
	TaskStarted(task, queue string, wait time.Duration)
	// TaskDone: it ended in state (SUCCESS, FAILURE, RETRY, REVOKED)
	// after runtime (0 for tasks discarded without running); exception is
	// the Python exception type of a FAILURE.
	TaskDone(task, queue, state, exception string, runtime time.Duration)
	// TaskRejected: a message that is no task here (unregistered,
	// undecodable) was rejected; task is "" when it was unreadable.
	TaskRejected(task, queue, reason string)
	// BrokerConnection: the broker connection came up or went down.
	BrokerConnection(up bool)
	// ResultStore: one write to the result backend succeeded or failed
	// (failed writes are retried; final says this was the last try).
	ResultStore(err error, final bool)
}

// nopObserver is the default Observer.
type nopObserver struct{}

func (nopObserver) TaskReceived(string, string)                            {}
func (nopObserver) TaskStarted(string, string, time.Duration)              {}
func (nopObserver) TaskDone(string, string, string, string, time.Duration) {}
func (nopObserver) TaskRejected(string, string, string)                    {}
func (nopObserver) BrokerConnection(bool)                                  {}
func (nopObserver) ResultStore(error, bool)                                {}

// Snapshot is the worker's state at one moment, for gauges and health.
type Snapshot struct {
	Node      string
	Runners   int   // tasks that may run at once now
	Running   int64 // tasks running
	Reserved  int   // prefetched, waiting for a runner or a rate-limit token
	Scheduled int   // held until their ETA
	Abandoned int64 // goroutines still running after a hard time limit
	Processed int64 // tasks finished since start
	Prefetch  int   // the prefetch window asked of the broker (0: unlimited)
	// ResultsPending: task results not yet stored (written, or held while
	// the backend is down); bounded, runners wait when it is full.
	ResultsPending int
	// BrokerUp: a broker connection is live. BackendUp: the last write to
	// the result backend succeeded (true while none was made, or with no
	// backend).
	BrokerUp, BackendUp bool
	Queues              []string
}

// Snapshot reads the worker's state.
func (w *Worker) Snapshot() Snapshot {
	s := Snapshot{Node: w.nodeName, Runners: w.pool.Size(), Running: w.running.Load(),
		Abandoned: w.abandoned.Load(), Processed: w.processed.Load(), Prefetch: w.prefetchWindow(),
		ResultsPending: len(w.resultSlots),
		BrokerUp:       w.currentConn() != nil, BackendUp: !w.backendDown.Load(), Queues: w.queueList()}
	w.eachKnown(func(j *job) {
		switch j.state.Load() {
		case stateReserved:
			s.Reserved++
		case stateScheduled:
			s.Scheduled++
		}
	})
	return s
}
