package redisbroker

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/broker"
)

func TestParseURL(t *testing.T) {
	for _, c := range []struct {
		url       string
		addrs     []string
		db        int
		tls       bool
		user, pw  string
		sentinels bool
		err       string
	}{
		{url: "redis://", addrs: []string{"localhost:6379"}},
		{url: "redis://127.0.0.1:6380/4", addrs: []string{"127.0.0.1:6380"}, db: 4},
		{url: "redis://:s3cret@h/2", addrs: []string{"h:6379"}, db: 2, pw: "s3cret"},
		{url: "redis://u:p@h:1/0", addrs: []string{"h:1"}, user: "u", pw: "p"},
		{url: "rediss://h:6380/1?ssl_cert_reqs=required", addrs: []string{"h:6380"}, db: 1, tls: true},
		{url: "sentinel://s1:26379;sentinel://s2", addrs: []string{"s1:26379", "s2:26379"}, sentinels: true},
		{url: "amqp://h//", err: "not supported"},
		{url: "redis://h/notadb", err: "database number"},
		{url: "redis://h:99999/0", err: "bad port"},
		{url: "redis://a;redis://b", err: "sentinel:// only"},
	} {
		t.Run(c.url, func(t *testing.T) {
			got, err := parseURL(c.url)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.addrs, c.addrs) || got.db != c.db || got.tls != c.tls ||
				got.username != c.user || got.password != c.pw || got.sentinels != c.sentinels {
				t.Errorf("got %+v", got)
			}
			if c.pw != "" && strings.Contains(got.redacted, c.pw) {
				t.Errorf("password in %q", got.redacted)
			}
		})
	}
}

func TestOptions(t *testing.T) {
	for _, c := range []struct {
		in    string
		check func(o Options) bool
		err   string
	}{
		{in: `{"visibility_timeout": 43200, "global_keyprefix": "app:"}`, check: func(o Options) bool {
			return o.VisibilityTimeout == 12*time.Hour && o.GlobalKeyPrefix == "app:"
		}},
		{in: "visibility_timeout=2.5,fanout_prefix=false,priority_steps=[0,5]", check: func(o Options) bool {
			return o.VisibilityTimeout == 2500*time.Millisecond && o.FanoutPrefix == "" && reflect.DeepEqual(o.PrioritySteps, []int{0, 5})
		}},
		{in: "fanout_prefix=/x.,fanout_patterns=false,sep=:", check: func(o Options) bool {
			return o.FanoutPrefix == "/x." && !o.FanoutPatterns && o.Sep == ":"
		}},
		{in: "master_name=mymaster,ssl_cert_reqs=CERT_NONE,max_retries=3", check: func(o Options) bool {
			return o.MasterName == "mymaster" && o.SSLCertReqs == "none" && reflect.DeepEqual(o.Ignored, []string{"max_retries"})
		}},
		{in: "visiblity_timeout=10", err: "unknown option"},
		{in: "visibility_timeout=soon", err: "want a number"},
		{in: "priority_steps=[9,0]", err: "ascending"},
		{in: "ssl_cert_reqs=maybe", err: "want required"},
		{in: "novalue", err: "key=value"},
		{in: "{broken", err: "JSON"},
	} {
		t.Run(c.in, func(t *testing.T) {
			o := DefaultOptions()
			m, err := ParseOptions(c.in)
			if err == nil {
				err = o.Apply(m)
			}
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !c.check(o) {
				t.Errorf("options %+v", o)
			}
		})
	}
}

func TestKeys(t *testing.T) {
	o := DefaultOptions()
	o.GlobalKeyPrefix = "p:"
	k := newKeys(&o, 3)
	for pri, want := range map[int]string{0: "p:q", 2: "p:q", 3: "p:q\x06\x163", 5: "p:q\x06\x163", 9: "p:q\x06\x169", 200: "p:q\x06\x169"} {
		if got := k.list("q", pri); got != want {
			t.Errorf("list(q, %d) = %q, want %q", pri, got, want)
		}
	}
	if got, want := k.lists([]string{"a", "b"}), []string{"p:a", "p:b", "p:a\x06\x163", "p:b\x06\x163", "p:a\x06\x166", "p:b\x06\x166", "p:a\x06\x169", "p:b\x06\x169"}; !reflect.DeepEqual(got, want) {
		t.Errorf("lists = %q", got)
	}
	if got := k.queueOf("p:a.b\x06\x169"); got != "a.b" {
		t.Errorf("queueOf = %q", got)
	}
	if got := k.fanout("celery.pidbox", ""); got != "p:/3.celery.pidbox" {
		t.Errorf("fanout = %q", got)
	}
	if got := k.fanout("celeryev", "task.succeeded"); got != "p:/3.celeryev/task.succeeded" {
		t.Errorf("fanout = %q", got)
	}
	if got := topicPattern("task.*.#"); got != `^task\.[^\.]+\..*?$` {
		t.Errorf("topicPattern = %q", got)
	}
}

func TestNewTransportMisconfigured(t *testing.T) {
	for _, c := range []struct {
		url  string
		opts map[string]any
	}{
		{"sentinel://h:26379", nil},
		{"redis://h/0", map[string]any{"visibility_timeout": 0.0}},
		{"redis://h/0", map[string]any{"nonsense": 1.0}},
		{"rediss://h/0", map[string]any{"ssl_ca_certs": "/no/such/file.pem"}},
		{"redis://h/x", nil},
	} {
		if _, err := NewTransport(Params{URL: c.url, Options: c.opts}); !errors.Is(err, broker.ErrMisconfigured) {
			t.Errorf("%s %v: err = %v, want misconfigured", c.url, c.opts, err)
		}
	}
}
