package amqp

import (
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		in                      string
		host, vhost, user, pass string
		port                    int
		scheme                  string
	}{
		{"", "localhost", "/", "guest", "guest", 5672, "amqp"},
		{"amqp://guest:guest@localhost:5672//", "localhost", "/", "guest", "guest", 5672, "amqp"},
		{"amqp://guest:guest@localhost:5672/", "localhost", "/", "guest", "guest", 5672, "amqp"},
		{"amqp://u:p@h", "h", "/", "u", "p", 5672, "amqp"},
		{"amqp://u:p@h/prod", "h", "prod", "u", "p", 5672, "amqp"},
		{"amqp://u:p@h/%2Fprod", "h", "/prod", "u", "p", 5672, "amqp"},
		{"pyamqp://u:p@h:5673//", "h", "/", "u", "p", 5673, "amqp"},
		{"amqps://u:p@h//", "h", "/", "u", "p", 5671, "amqps"},
		{"amqp://u:p@h1//;amqp://u:p@h2//", "h1", "/", "u", "p", 5672, "amqp"},
	}
	for _, tt := range tests {
		u, err := ParseURL(tt.in)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", tt.in, err)
			continue
		}
		if u.Host != tt.host || u.Vhost != tt.vhost || u.Username != tt.user || u.Password != tt.pass || u.Port != tt.port || u.Scheme != tt.scheme {
			t.Errorf("ParseURL(%q) = %+v", tt.in, u)
		}
	}
	for _, bad := range []string{"redis://localhost:6379/0", "amqp://u:secret@h:notaport//", "::"} {
		_, err := ParseURL(bad)
		if err == nil {
			t.Errorf("ParseURL(%q) accepted", bad)
			continue
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("error leaks the password: %v", err)
		}
	}
}
