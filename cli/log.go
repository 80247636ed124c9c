package cli

import (
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"
)

// newLogger returns the worker's logger at level, writing Celery's console
// lines or JSON to w. Writes are serialised, so w need not be safe for
// concurrent use.
func newLogger(w io.Writer, level, format string) (zerolog.Logger, error) {
	lvl, err := parseLevel(level)
	if err != nil {
		return zerolog.Logger{}, err
	}
	return buildLogger(zerolog.SyncWriter(w), lvl, format)
}

// buildLogger is newLogger for an already synchronised writer.
func buildLogger(w io.Writer, lvl zerolog.Level, format string) (zerolog.Logger, error) {
	var l zerolog.Logger
	switch format {
	case "json":
		l = zerolog.New(w)
	case "console", "":
		l = zerolog.New(consoleWriter(w))
	default:
		return zerolog.Logger{}, fmt.Errorf("--log-format must be console or json, got %q", format)
	}
	// Millisecond timestamps, as Celery's console format shows them. A hook
	// rather than zerolog.TimeFieldFormat, a global other code in the
	// process may read or set.
	return l.Level(lvl).Hook(timestampHook{}), nil
}

type timestampHook struct{}

func (timestampHook) Run(e *zerolog.Event, _ zerolog.Level, _ string) {
	e.Str(zerolog.TimestampFieldName, time.Now().Format(time.RFC3339Nano))
}

func parseLevel(s string) (zerolog.Level, error) {
	switch strings.ToUpper(s) {
	case "DEBUG":
		return zerolog.DebugLevel, nil
	case "INFO", "":
		return zerolog.InfoLevel, nil
	case "WARNING", "WARN":
		return zerolog.WarnLevel, nil
	case "ERROR":
		return zerolog.ErrorLevel, nil
	case "CRITICAL", "FATAL":
		return zerolog.FatalLevel, nil
	}
	return zerolog.NoLevel, fmt.Errorf("unknown log level %q (want DEBUG, INFO, WARNING, ERROR, CRITICAL or FATAL)", s)
}

func levelName(l zerolog.Level) string {
	switch l {
	case zerolog.DebugLevel, zerolog.TraceLevel:
		return "DEBUG"
	case zerolog.WarnLevel:
		return "WARNING"
	case zerolog.ErrorLevel:
		return "ERROR"
	case zerolog.FatalLevel, zerolog.PanicLevel:
		return "CRITICAL"
	}
	return "INFO"
}

// consoleWriter prints Celery's default worker log format:
// [2026-11-24 10:00:00,123: INFO/MainProcess] message
func consoleWriter(w io.Writer) zerolog.ConsoleWriter {
	cw := zerolog.ConsoleWriter{Out: w, NoColor: true, TimeFormat: "2006-01-02 15:04:05,000"}
	cw.PartsOrder = []string{zerolog.TimestampFieldName, zerolog.LevelFieldName, zerolog.MessageFieldName}
	cw.FormatTimestamp = func(i any) string {
		s, _ := i.(string)
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return "[" + s + ":"
		}
		return "[" + t.Format("2006-01-02 15:04:05,000") + ":"
	}
	cw.FormatLevel = func(i any) string {
		s, _ := i.(string)
		switch s {
		case "warn":
			s = "warning"
		case "fatal":
			s = "critical"
		}
		return strings.ToUpper(s) + "/MainProcess]"
	}
	// Lines a task logs itself read as Celery's worker_task_log_format:
	// "name[id]: message".
	cw.FormatPrepare = func(evt map[string]any) error {
		if evt["task_log"] == true {
			evt[zerolog.MessageFieldName] = fmt.Sprintf("%v[%v]: %v", evt["task"], evt["id"], evt[zerolog.MessageFieldName])
		}
		return nil
	}
	// Text from the wire (task names, ids, exception messages) reaches the
	// message; escaped as Python's repr does, one event stays one line and
	// cannot move the cursor or clear the screen. Field values are quoted
	// by zerolog already.
	cw.FormatMessage = func(i any) string {
		s, ok := i.(string)
		if !ok {
			if i == nil {
				return ""
			}
			s = fmt.Sprint(i)
		}
		return escapeLine(s)
	}
	// Task name and id are already in the message text.
	cw.FieldsExclude = []string{"task", "id", "runtime", "task_log"}
	return cw
}

// nodeFormat expands Celery's node_format variables in a --logfile or
// --pidfile path for node ("name@host"), as celery.utils.nodenames does:
// %p the full node name, %n its name part, %h its host part, %d the host's
// domain, %i the process index ("0": there are no pool processes), %I the
// index with a separator ("" in the main process). "%" before anything
// that is not a letter, digit or "_" stays as it is; an unknown letter is
// an error, as in Celery.
func nodeFormat(s, node string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	name, host, ok := strings.Cut(node, "@")
	if !ok {
		name, host = "celery", node
	}
	_, domain, _ := strings.Cut(host, ".")
	keys := map[byte]string{'p': node, 'n': name, 'h': host, 'd': domain, 'i': "0", 'I': ""}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' || i+1 == len(s) || !isWordByte(s[i+1]) {
			b.WriteByte(c)
			continue
		}
		i++
		v, ok := keys[s[i]]
		if !ok {
			return "", fmt.Errorf("unknown format %%%c in %q (known: %%p %%n %%h %%d %%i %%I)", s[i], s)
		}
		b.WriteString(v)
	}
	return b.String(), nil
}

func isWordByte(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// escapeLine returns s with what would break a log line escaped as
// Python's repr writes it: \n, \r, \t, other C0 and C1 controls and DEL
// as \xNN, the Unicode line and paragraph separators as \u2028/\u2029, and
// each byte that is not UTF-8 as \xNN. Everything else, non-ASCII text
// included, is kept as it is.
func escapeLine(s string) string {
	i := 0
	for i < len(s) {
		c := s[i]
		if c < 0x20 || c == 0x7f || c >= utf8.RuneSelf {
			break
		}
		i++
	}
	if i == len(s) {
		return s // the common case: printable ASCII
	}
	const hex = "0123456789abcdef"
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == utf8.RuneError && size == 1, r < 0x20, r >= 0x7f && r < 0xa0:
			c := s[i]
			if r != utf8.RuneError {
				c = byte(r)
			}
			b.WriteString(`\x`)
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		case r == 0x2028 || r == 0x2029:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}
