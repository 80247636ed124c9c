package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/broker"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startRedis runs a redis-server of the test's own (a master, or with
// sentinel a sentinel) until the test ends.
func startRedis(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command("redis-server", args...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("redis-server: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
}

func waitListening(t *testing.T, port int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("port %d not listening: %v", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSentinelURL(t *testing.T) {
	dir := t.TempDir()
	master, sentinel := freePort(t), freePort(t)
	startRedis(t, "--port", fmt.Sprint(master), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	waitListening(t, master)
	conf := filepath.Join(dir, "sentinel.conf")
	body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor mymaster 127.0.0.1 %d 1\n", sentinel, dir, master)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	startRedis(t, conf, "--sentinel")
	waitListening(t, sentinel)

	tr, err := NewTransport(Params{URL: fmt.Sprintf("sentinel://127.0.0.1:%d/0", sentinel),
		Options: map[string]any{"master_name": "mymaster"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bc, err := tr.Dial(ctx, broker.DialParams{Name: "n"})
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	c := bc.(*Conn)
	if err := c.PublishTask(ctx, broker.Route{RoutingKey: "q"}, task("s1", 0)); err != nil {
		t.Fatal(err)
	}
	ds, err := c.Consume(ctx, []string{"q"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	d := recv(t, ds)
	if id := idOf(d); id != "s1" {
		t.Errorf("got %s", id)
	}
	_ = d.Ack()
	// The message went to the master the sentinel names.
	if n, err := c.Client().Do(ctx, "DBSIZE").Int(); err != nil || n == 0 {
		t.Errorf("master DBSIZE %d, %v", n, err)
	}
}

// TestServerGoneEndsTheConnection: a Redis that goes away ends the
// connection (Done closes, Err says why, deliveries are lost); dialing
// again works once it is back.
func TestServerGoneEndsTheConnection(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	args := []string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir}
	cmd := exec.Command("redis-server", args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitListening(t, port)
	tr, err := NewTransport(Params{URL: fmt.Sprintf("redis://127.0.0.1:%d/0", port), Options: map[string]any{"health_check_interval": 0.2}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	bc, err := tr.Dial(ctx, broker.DialParams{Name: "n"})
	if err != nil {
		t.Fatal(err)
	}
	c := bc.(*Conn)
	if err := c.PublishTask(ctx, broker.Route{RoutingKey: "q"}, task("1", 0)); err != nil {
		t.Fatal(err)
	}
	// The window is full: only the health check notices the server is gone.
	ds, _ := c.Consume(ctx, []string{"q"}, 1)
	d := recv(t, ds)
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the connection did not end with the server")
	}
	if c.Err() == nil {
		t.Error("Err() nil after the server went away")
	}
	select {
	case <-d.Lost():
	default:
		t.Error("delivery not lost")
	}
	// Refused while it is down: may heal, so not a misconfiguration.
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := tr.Dial(dctx, broker.DialParams{Name: "n"}); err == nil || errors.Is(err, broker.ErrMisconfigured) {
		t.Fatalf("dial while down: %v", err)
	}
	startRedis(t, args...)
	waitListening(t, port)
	bc2, err := tr.Dial(ctx, broker.DialParams{Name: "n"})
	if err != nil {
		t.Fatal(err)
	}
	bc2.Close()
}
