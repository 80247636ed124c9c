package worker

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func TestExpandNodeName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "celery@box.example.com"},
		{"go@%h", "go@box.example.com"},
		{"go@%n", "go@box"},
		{"go@%d", "go@example.com"},
		{"w%%1@%h", "w%1@box.example.com"},
		{"plain", "celery@plain"}, // Celery reads a bare name as the host
	} {
		if got := ExpandNodeName(tc.in, "box.example.com"); got != tc.want {
			t.Errorf("ExpandNodeName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestRateLimiterSpacesTokens(t *testing.T) {
	r := newRateLimiter()
	r.Set("t", 1000) // one token per ms
	start := time.Now()
	for i := 0; i < 20; i++ {
		if err := r.Wait(context.Background(), "t"); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d < 18*time.Millisecond {
		t.Fatalf("20 tokens at 1000/s took %s, want >= 18ms", d)
	}
	// Other task names are not limited.
	if err := r.Wait(context.Background(), "other"); err != nil {
		t.Fatal(err)
	}
	// A cancelled wait returns the cause.
	r.Set("slow", 0.001)
	_ = r.Wait(context.Background(), "slow")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(fmt.Errorf("stop"))
	if err := r.Wait(ctx, "slow"); err == nil || err.Error() != "stop" {
		t.Fatalf("Wait on cancelled ctx = %v", err)
	}
	r.Set("slow", 0) // removing the limit
	if err := r.Wait(context.Background(), "slow"); err != nil {
		t.Fatal(err)
	}
}

func TestRevokedSetBounded(t *testing.T) {
	s := newRevokedSet(3, time.Hour)
	s.Add("a", "b", "c")
	s.Add("d")
	if s.Contains("a") || !s.Contains("d") || len(s.IDs()) != 3 {
		t.Fatalf("after overflow: %v", s.IDs())
	}
	st := s.Stamps()["d"].([]any)
	if _, ok := st[0].(float64); !ok || st[1] != "d" {
		t.Fatalf("stamp = %v", st)
	}
}
