package backends

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseURL(t *testing.T) {
	master := TransportOptions{"master_name": "mymaster"}
	tests := []struct {
		name, url string
		topts     TransportOptions
		check     func(t *testing.T, o *options)
		wantErr   string // substring; "" means success
	}{
		{name: "plain", url: "redis://:pw@127.0.0.1:6380/3", check: func(t *testing.T, o *options) {
			if o.single.Addr != "127.0.0.1:6380" || o.single.DB != 3 || o.single.Password != "pw" || o.single.TLSConfig != nil {
				t.Errorf("got %+v", o.single)
			}
			if strings.Contains(o.display, "pw") {
				t.Errorf("display %q shows the password", o.display)
			}
		}},
		{name: "rediss required", url: "rediss://127.0.0.1:6390/0?ssl_cert_reqs=required", check: func(t *testing.T, o *options) {
			if o.single.TLSConfig == nil || o.single.TLSConfig.InsecureSkipVerify || o.warning != "" {
				t.Errorf("want checked TLS, got %+v warning %q", o.single.TLSConfig, o.warning)
			}
		}},
		{name: "rediss CERT_NONE warns", url: "rediss://127.0.0.1:6390/0?ssl_cert_reqs=CERT_NONE", check: func(t *testing.T, o *options) {
			if o.single.TLSConfig == nil || !o.single.TLSConfig.InsecureSkipVerify || o.warning == "" {
				t.Errorf("want unchecked TLS with a warning, got %+v %q", o.single.TLSConfig, o.warning)
			}
		}},
		{name: "rediss without cert reqs", url: "rediss://127.0.0.1:6390/0", wantErr: "ssl_cert_reqs"},
		{name: "rediss bad cert reqs", url: "rediss://127.0.0.1:6390/0?ssl_cert_reqs=maybe", wantErr: `ssl_cert_reqs="maybe"`},
		{name: "rediss missing CA file", url: "rediss://127.0.0.1:6390/0?ssl_cert_reqs=required&ssl_ca_certs=/nonexistent/ca.pem", wantErr: "ssl_ca_certs"},
		{name: "ssl params on redis://", url: "redis://127.0.0.1/0?ssl_cert_reqs=required", wantErr: "rediss://"},
		{name: "unknown scheme", url: "mongodb://x", wantErr: "mongodb"},
		{name: "socket", url: "socket:///tmp/redis.sock?virtual_host=2", check: func(t *testing.T, o *options) {
			if o.single.Network != "unix" || o.single.Addr != "/tmp/redis.sock" || o.single.DB != 2 {
				t.Errorf("got %s %s db %d", o.single.Network, o.single.Addr, o.single.DB)
			}
		}},
		{name: "sentinel list", url: "sentinel://:pw@127.0.0.1:26379/4;sentinel://127.0.0.1:26380/4", topts: master, check: func(t *testing.T, o *options) {
			s := o.sentinel
			if s == nil || s.MasterName != "mymaster" || s.DB != 4 || s.Password != "pw" || len(s.SentinelAddrs) != 2 || s.SentinelAddrs[1] != "127.0.0.1:26380" {
				t.Errorf("got %+v", s)
			}
			if strings.Contains(o.display, "pw") || !strings.Contains(o.display, ";sentinel://127.0.0.1:26380/4") {
				t.Errorf("display %q", o.display)
			}
		}},
		{name: "sentinel without master", url: "sentinel://127.0.0.1:26379/0", wantErr: "master_name"},
		{name: "sentinel password of its own", url: "sentinel://127.0.0.1:26379/0",
			topts: TransportOptions{"master_name": "m", "sentinel_kwargs": map[string]any{"password": "spw"}}, check: func(t *testing.T, o *options) {
				if o.sentinel.SentinelPassword != "spw" {
					t.Errorf("sentinel password %q", o.sentinel.SentinelPassword)
				}
			}},
		{name: "timeouts", url: "redis://127.0.0.1/0", topts: TransportOptions{"socket_timeout": 2.5, "socket_connect_timeout": "4"}, check: func(t *testing.T, o *options) {
			if o.single.ReadTimeout != 2500*time.Millisecond || o.single.DialTimeout != 4*time.Second {
				t.Errorf("read %v dial %v", o.single.ReadTimeout, o.single.DialTimeout)
			}
		}},
		{name: "bad timeout", url: "redis://127.0.0.1/0", topts: TransportOptions{"socket_timeout": []any{}}, wantErr: "socket_timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseURL(tc.url, tc.topts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, o)
		})
	}
}

func TestNewRedisMisconfiguredURL(t *testing.T) {
	_, err := NewRedis(RedisParams{URL: "rediss://:S3cr@t@127.0.0.1:6390/0"})
	if !errors.Is(err, ErrMisconfigured) || strings.Contains(err.Error(), "S3cr") {
		t.Fatalf("err = %v; want ErrMisconfigured without the password", err)
	}
}
