package cli

import (
	"bytes"
	"encoding/json"
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

func TestMaxMessageSizeFlag(t *testing.T) {
	cases := []struct {
		args []string
		env  string
		want int64
		bad  bool
	}{
		{want: 64 << 20},
		{args: []string{"--max-message-size", "1048576"}, want: 1 << 20},
		{args: []string{"--max-message-size", "2MiB"}, want: 2 << 20},
		{args: []string{"--max-message-size", "512k"}, want: 512 << 10},
		{args: []string{"--max-message-size", "1 GB"}, want: 1 << 30},
		{args: []string{"--max-message-size", "0"}, want: 0},
		{env: "3MiB", want: 3 << 20},
		{args: []string{"--max-message-size", "1KiB"}, env: "3MiB", want: 1 << 10}, // the flag wins
		{args: []string{"--max-message-size", "-1"}, bad: true},
		{args: []string{"--max-message-size", "lots"}, bad: true},
		{env: "12XB", bad: true},
	}
	for _, c := range cases {
		t.Setenv("CELERY_MAX_MESSAGE_SIZE", c.env)
		f, err := parseWorkerFlags("gocelery", nil, c.args)
		if c.bad {
			if err == nil {
				t.Errorf("%v env %q: no error", c.args, c.env)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v env %q: %v", c.args, c.env, err)
		}
		if f.maxMessageSize != c.want {
			t.Errorf("%v env %q: %d, want %d", c.args, c.env, f.maxMessageSize, c.want)
		}
	}
	if got := maxMessageSize(0); got >= 0 {
		t.Errorf("flag 0 (no limit) gives the library %d, want negative", got)
	}
}

// TestJSONLogCannotBeForged: the JSON format escapes control characters
// itself; each event is one line that parses, with the text intact.
func TestJSONLogCannotBeForged(t *testing.T) {
	forged := "x\n{\"level\":\"error\",\"message\":\"forged\"}\x1b[2K\u2028"
	var buf bytes.Buffer
	log, err := buildLogger(&buf, zerolog.InfoLevel, "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Error().Str("task", forged).Msgf("Received unregistered task of type %s.", forged)
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 1 {
		t.Fatalf("1 event printed as %d lines:\n%s", len(lines), buf.String())
	}
	var evt map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &evt); err != nil {
		t.Fatalf("%q: %v", lines[0], err)
	}
	if evt["task"] != forged || !strings.Contains(evt["message"].(string), forged) {
		t.Errorf("text changed: %v", evt)
	}
}
