package redact

import (
	"errors"
	"fmt"
	"net/url"
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

// TestEscapeUserinfo: a password written unencoded is read whole by
// net/url once escaped, and an encoded one stays as it was.
func TestEscapeUserinfo(t *testing.T) {
	cases := []struct{ in, user, pass, host string }{
		{"amqp://guest:S3cr@t#/x%y:z@127.0.0.1:5999//", "guest", "S3cr@t#/x%y:z", "127.0.0.1:5999"},
		{"redis://:p@ss#w/rd%@127.0.0.1:6379/0", "", "p@ss#w/rd%", "127.0.0.1:6379"},
		{"amqp://u:p%40ss@host//", "u", "p@ss", "host"},
		{"amqp://u%3Ax:pw@host//", "u:x", "pw", "host"},
		{"amqp://host//", "", "", "host"},
		{"amqp://us er:p w@host//", "us er", "p w", "host"},
	}
	for _, c := range cases {
		u, err := url.Parse(EscapeUserinfo(c.in))
		if err != nil {
			t.Fatalf("%q: %v", c.in, err)
		}
		pass, _ := u.User.Password()
		if u.User.Username() != c.user || pass != c.pass || u.Host != c.host {
			t.Errorf("%q read as user %q pass %q host %q, want %q %q %q", c.in, u.User.Username(), pass, u.Host, c.user, c.pass, c.host)
		}
	}
}

// TestStringHidesEscapedForm: an error quoting the escaped URL (what a
// parser saw) does not carry the password either.
func TestStringHidesEscapedForm(t *testing.T) {
	raw := "amqp://u:p@ss#w/rd@host:99999999//"
	esc := EscapeUserinfo(raw)
	got := String(fmt.Sprintf("parse %q: invalid port", esc), raw)
	for _, leak := range []string{"p@ss#w/rd", "p%40ss%23w%2Frd", "ss%23w"} {
		if strings.Contains(got, leak) {
			t.Errorf("%q contains %q", got, leak)
		}
	}
}
