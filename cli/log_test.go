package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestEscapeLine(t *testing.T) {
	cases := []struct{ in, want string }{
		{"plain text", "plain text"},
		{"a\nb", `a\nb`},
		{"a\r\nb\tc", `a\r\nb\tc`},
		{"\x1b[2J\x1b[31mred", `\x1b[2J\x1b[31mred`},
		{"del\x7f", `del\x7f`},
		{"nel\u0085x", `nel\x85x`},
		{"ls\u2028ps\u2029", `ls\u2028ps\u2029`},
		{"bad\xffutf8", `bad\xffutf8`},
		{"héllo ✓", "héllo ✓"},
	}
	for _, c := range cases {
		if got := escapeLine(c.in); got != c.want {
			t.Errorf("escapeLine(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestConsoleLogCannotBeForged: a message carrying text from the wire is
// one line in the console format, for the worker's own lines and for the
// lines a task logs.
func TestConsoleLogCannotBeForged(t *testing.T) {
	forged := "x\n[2026-01-01 00:00:00,000: ERROR/MainProcess] forged\x1b[2K"
	var buf bytes.Buffer
	log, err := buildLogger(&buf, zerolog.InfoLevel, "console")
	if err != nil {
		t.Fatal(err)
	}
	log.Error().Msgf("Received unregistered task of type %s.", forged)
	log.Info().Str("task", forged).Str("id", "id\n1").Bool("task_log", true).Msg("hello\nworld")
	log.Warn().Str("reason", forged).Msg("ack failed")
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("3 events printed as %d lines:\n%s", len(lines), buf.String())
	}
	for _, l := range lines {
		if strings.ContainsAny(l, "\x1b\r") || !strings.HasPrefix(l, "[") {
			t.Errorf("line %q not escaped", l)
		}
	}
	if !strings.Contains(lines[0], `x\n[2026-01-01 00:00:00,000: ERROR/MainProcess] forged\x1b[2K`) {
		t.Errorf("task name not shown escaped: %q", lines[0])
	}
}
