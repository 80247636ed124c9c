package protocol

import (
	"fmt"
	"strings"
	"time"
)

// ParseTime reads an ISO-8601 timestamp the way Python's isoparse does for the
// forms Celery producers write: "2026-11-23T21:40:08.663126+00:00", with "Z",
// "+0200", "+02", no fraction, or no offset. naive reports that no offset was
// given; the time is then read as UTC (what Celery does for eta/expires).
func ParseTime(s string) (t time.Time, naive bool, err error) {
	orig := s
	if len(s) < 10 {
		return time.Time{}, false, fmt.Errorf("protocol: bad ISO-8601 time %q", orig)
	}
	date := s[:10]
	rest := s[10:]
	y, m, d, ok := parseDate(date)
	if !ok {
		return time.Time{}, false, fmt.Errorf("protocol: bad ISO-8601 date in %q", orig)
	}
	var hh, mm, ss, nsec int
	loc := time.UTC
	naive = true
	if rest != "" {
		if rest[0] != 'T' && rest[0] != ' ' {
			return time.Time{}, false, fmt.Errorf("protocol: bad ISO-8601 time %q", orig)
		}
		rest = rest[1:]
		// Split off the offset.
		off := ""
		if i := strings.IndexAny(rest, "Z+-"); i >= 0 {
			off = rest[i:]
			rest = rest[:i]
		}
		hh, mm, ss, nsec, ok = parseClock(rest)
		if !ok {
			return time.Time{}, false, fmt.Errorf("protocol: bad ISO-8601 clock in %q", orig)
		}
		if off != "" {
			secs, ok := parseOffset(off)
			if !ok {
				return time.Time{}, false, fmt.Errorf("protocol: bad UTC offset in %q", orig)
			}
			naive = false
			if secs != 0 {
				loc = time.FixedZone("", secs)
			}
		}
	}
	t = time.Date(y, time.Month(m), d, hh, mm, ss, nsec, loc)
	if t.Year() != y || int(t.Month()) != m || t.Day() != d {
		return time.Time{}, false, fmt.Errorf("protocol: date out of range in %q", orig)
	}
	return t, naive, nil
}

func atoiN(s string) (int, bool) {
	if s == "" {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func parseDate(s string) (y, m, d int, ok bool) {
	if len(s) != 10 || s[4] != '-' || s[7] != '-' {
		return 0, 0, 0, false
	}
	y, ok1 := atoiN(s[0:4])
	m, ok2 := atoiN(s[5:7])
	d, ok3 := atoiN(s[8:10])
	if !ok1 || !ok2 || !ok3 || m < 1 || m > 12 || d < 1 || d > 31 || y < 1 {
		return 0, 0, 0, false
	}
	return y, m, d, true
}

// parseClock reads HH[:MM[:SS[.ffffff]]] (also the basic HHMMSS form).
func parseClock(s string) (hh, mm, ss, nsec int, ok bool) {
	frac := ""
	if i := strings.IndexAny(s, ".,"); i >= 0 {
		frac = s[i+1:]
		s = s[:i]
	}
	s = strings.ReplaceAll(s, ":", "")
	switch len(s) {
	case 2, 4, 6:
	default:
		return 0, 0, 0, 0, false
	}
	if hh, ok = atoiN(s[0:2]); !ok || hh > 24 {
		return 0, 0, 0, 0, false
	}
	if len(s) >= 4 {
		if mm, ok = atoiN(s[2:4]); !ok || mm > 59 {
			return 0, 0, 0, 0, false
		}
	}
	if len(s) == 6 {
		if ss, ok = atoiN(s[4:6]); !ok || ss > 60 {
			return 0, 0, 0, 0, false
		}
	}
	if frac != "" {
		if len(frac) > 9 {
			frac = frac[:9]
		}
		n, ok := atoiN(frac)
		if !ok {
			return 0, 0, 0, 0, false
		}
		for i := len(frac); i < 9; i++ {
			n *= 10
		}
		nsec = n
	}
	return hh, mm, ss, nsec, true
}

func parseOffset(s string) (int, bool) {
	if s == "Z" || s == "z" {
		return 0, true
	}
	sign := 1
	switch s[0] {
	case '+':
	case '-':
		sign = -1
	default:
		return 0, false
	}
	s = strings.ReplaceAll(s[1:], ":", "")
	var h, m int
	var ok bool
	switch len(s) {
	case 2:
		h, ok = atoiN(s)
	case 4:
		var ok2 bool
		h, ok = atoiN(s[:2])
		m, ok2 = atoiN(s[2:])
		ok = ok && ok2
	default:
		return 0, false
	}
	if !ok || h > 23 || m > 59 {
		return 0, false
	}
	return sign * (h*3600 + m*60), true
}

// FormatTime writes t as Python's datetime.isoformat() does for an aware
// value: microseconds only when non-zero, offset as +HH:MM.
func FormatTime(t time.Time) string { return formatPyDateTime(t, false) }

func formatPyDateTime(t time.Time, naive bool) string {
	var buf [40]byte
	return string(appendPyDateTime(buf[:0], t, naive))
}

// AppendTime appends FormatTime(t) to b.
func AppendTime(b []byte, t time.Time) []byte { return appendPyDateTime(b, t, false) }

func appendPyDateTime(b []byte, t time.Time, naive bool) []byte {
	b = t.AppendFormat(b, "2006-01-02T15:04:05")
	if us := t.Nanosecond() / 1000; us != 0 {
		b = append(b, '.')
		var digits [6]byte
		for i := 5; i >= 0; i-- {
			digits[i] = byte('0' + us%10)
			us /= 10
		}
		b = append(b, digits[:]...)
	}
	if naive {
		return b
	}
	_, off := t.Zone()
	sign := byte('+')
	if off < 0 {
		sign = '-'
		off = -off
	}
	b = append(b, sign)
	return append(b, byte('0'+off/36000), byte('0'+off/3600%10), ':', byte('0'+off%3600/600), byte('0'+off%3600/60%10))
}
