package redact

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	cases := []struct{ in, want string }{
		{"amqp://guest:guest@localhost:5672//", "amqp://guest:****@localhost:5672//"},
		{"amqp://localhost//", "amqp://localhost//"},
		{"redis://:s3cret@127.0.0.1:6379/0", "redis://:****@127.0.0.1:6379/0"},
		{"amqp://u:p@ss@host//", "amqp://u:****@host//"},
		{"amqp://u:S3cr#t/x%y@host:5672/vh", "amqp://u:****@host:5672/vh"},
		{"amqp://u:a@b//;amqp://v:c@d//", "amqp://u:****@b//;amqp://v:****@d//"},
		{"amqp://user@host//", "amqp://user@host//"},
		{"redis://s3cr/et#tok@host", "redis://****@host"},
		{"", ""},
	}
	for _, c := range cases {
		if got := URL(c.in); got != c.want {
			t.Errorf("URL(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestErrorHidesPasswordFragments(t *testing.T) {
	raw := "amqp://user:S3cr@t/pw@host:5672//"
	base := errors.New("boom")
	// What net/url says of such a URL: it quotes the part after the first "@".
	err := fmt.Errorf("parse %q: invalid port \":S3cr\" after host: %w", raw, base)
	got := Error(err, raw)
	for _, leak := range []string{"S3cr@t/pw", "S3cr", "t/pw"} {
		if strings.Contains(got.Error(), leak) {
			t.Errorf("redacted error %q still contains %q", got, leak)
		}
	}
	if !errors.Is(got, base) {
		t.Error("redacted error lost its chain")
	}
	if Error(nil, raw) != nil {
		t.Error("Error(nil) != nil")
	}
}
