package protocol

import (
	"time"
)

// Envelope is a broker delivery's parts that the protocol reads: the AMQP
// basic properties, the application headers (nested tables as
// map[string]any) and the body bytes exactly as received.
type Envelope struct {
	ContentType     string
	ContentEncoding string
	Headers         map[string]any
	CorrelationID   string
	ReplyTo         string
	DeliveryMode    uint8
	Priority        uint8
	Expiration      string
	Body            []byte
}

// TimeLimit is the message's timelimit header, [hard, soft] in seconds;
// 0 means none was given.
type TimeLimit struct {
	Hard, Soft float64
}

// Message is one task message, whichever protocol version and serializer
// carried it.
type Message struct {
	Protocol int // 1 or 2

	ID       string
	Task     string
	Shadow   string
	Lang     string
	RootID   string
	ParentID string
	Group    string
	// GroupIndex is the position inside the group; nil when not in one.
	GroupIndex *int
	Retries    int
	ETA        *time.Time
	Expires    *time.Time
	TimeLimit  TimeLimit

	ArgsRepr            string
	KwargsRepr          string
	Origin              string
	IgnoreResult        bool
	ReplacedTaskNesting int
	StampedHeaders      []string
	Stamps              map[string]any
	// Headers holds every other header (user headers from apply_async's
	// headers=, broker headers such as x-death), kept for retries.
	Headers map[string]any

	Args      []any
	Kwargs    map[string]any
	Callbacks []Signature
	Errbacks  []Signature
	// Chain is the rest of the chain in wire order: the next task is last.
	Chain []Signature
	Chord *Signature

	// Properties.
	ContentType     string
	ContentEncoding string
	Compression     string
	CorrelationID   string
	ReplyTo         string
	DeliveryMode    uint8
	Priority        uint8
	Expiration      string
}

// Name is the name to show in logs: shadow when set, else the task name.
func (m *Message) Name() string {
	if m.Shadow != "" {
		return m.Shadow
	}
	return m.Task
}
