package protocol

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"
)

// The value model. Decoded arguments, results and header values are built from
// nil, bool, string, json.Number (JSON numbers, kept as their exact text),
// int64 / uint64 / float64 (msgpack numbers), []any, map[string]any, []byte,
// and the kombu tagged types below. Encoders also accept Go's other integer
// and float types, *big.Int, time.Time, and fall back to encoding/json for
// anything else (structs a task returns).

// DateTime is kombu's "datetime". Naive is true when the producer sent no UTC
// offset; Time then holds the wall clock in UTC.
type DateTime struct {
	Time  time.Time
	Naive bool
}

func (d DateTime) String() string { return formatPyDateTime(d.Time, d.Naive) }

// Date is kombu's "date" (a calendar day, no time zone).
type Date struct {
	Year  int
	Month time.Month
	Day   int
}

func (d Date) String() string { return fmt.Sprintf("%04d-%02d-%02d", d.Year, int(d.Month), d.Day) }

// TimeOfDay is kombu's "time", kept as Python's isoformat text ("01:02:03",
// "01:02:03.000004", possibly with an offset).
type TimeOfDay string

// Decimal is kombu's "decimal", kept as its exact decimal text.
type Decimal string

// UUID is kombu's "uuid".
type UUID [16]byte

func (u UUID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
}

// NewUUID returns a random version 4 UUID string, as Celery's uuid() makes
// task ids.
func NewUUID() string {
	var u UUID
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u.String()
}

// Hex is the 32-digit form kombu writes.
func (u UUID) Hex() string { return hex.EncodeToString(u[:]) }

// ParseUUID reads the hex form with or without dashes.
func ParseUUID(s string) (UUID, error) {
	var u UUID
	clean := make([]byte, 0, 32)
	for i := 0; i < len(s); i++ {
		if s[i] != '-' {
			clean = append(clean, s[i])
		}
	}
	if len(clean) != 32 {
		return u, fmt.Errorf("protocol: uuid %q: want 32 hex digits", s)
	}
	if _, err := hex.Decode(u[:], clean); err != nil {
		return u, fmt.Errorf("protocol: uuid %q: %w", s, err)
	}
	return u, nil
}
