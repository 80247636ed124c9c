package cli

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestMetricsAddrFlag(t *testing.T) {
	t.Setenv("GOCELERY_METRICS_ADDR", "")
	f, err := parseWorkerFlags("w", nil, nil)
	if err != nil || f.metricsAddr != "" {
		t.Fatalf("default: %q, %v", f.metricsAddr, err)
	}
	t.Setenv("GOCELERY_METRICS_ADDR", "127.0.0.1:9808")
	if f, err = parseWorkerFlags("w", nil, nil); err != nil || f.metricsAddr != "127.0.0.1:9808" {
		t.Fatalf("from env: %q, %v", f.metricsAddr, err)
	}
	if f, err = parseWorkerFlags("w", nil, []string{"--metrics-addr", ":9100"}); err != nil || f.metricsAddr != ":9100" {
		t.Fatalf("the flag beats the env: %q, %v", f.metricsAddr, err)
	}
	if !strings.Contains(testProgram().workerUsage(), "--metrics-addr") {
		t.Error("--metrics-addr not in the usage")
	}
	// A value that is no HOST:PORT is a usage error, before anything runs.
	for _, bad := range []string{"9808", "localhost", "http://x:1/"} {
		code, _, errb := run(t, testProgram(), "worker", "--metrics-addr", bad)
		if code != 2 || !strings.Contains(errb, "--metrics-addr") {
			t.Errorf("--metrics-addr %q: exit %d, %q; want 2 naming the flag", bad, code, errb)
		}
	}
}

// A port in use ends the start with exit 1 and a line naming
// --metrics-addr, before the worker connects to anything (the broker here
// is unreachable, which would otherwise be retried forever).
func TestMetricsAddrInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	var code int
	var errb string
	go func() {
		defer close(done)
		code, _, errb = run(t, testProgram(), "worker", "-b", "amqp://guest:guest@127.0.0.1:1//",
			"--metrics-addr", ln.Addr().String())
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("still running with the metrics port in use")
	}
	if code != 1 || !strings.Contains(errb, "--metrics-addr "+ln.Addr().String()) || !strings.Contains(errb, "in use") {
		t.Errorf("exit %d, %q", code, errb)
	}
}

func httpGet(url string) (int, string, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// With --metrics-addr the worker serves /metrics, /healthz and /readyz
// while it runs, and stops serving when it exits.
func TestMetricsServed(t *testing.T) {
	needServices(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	queue := uniq("cli-metrics-")
	deleteLater(t, queue, "")
	node := uniq("metrics-")
	r := start(t, "worker", "-b", testBroker, "--result-backend", testBackend, "-Q", queue,
		"-n", node+"@box", "--metrics-addr", addr, "-l", "info")
	base := "http://" + addr
	waitFor(t, 15*time.Second, "/readyz 200", func() bool {
		code, _, _ := httpGet(base + "/readyz")
		return code == http.StatusOK
	})
	if code, _, err := httpGet(base + "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d %v", code, err)
	}
	code, body, err := httpGet(base + "/metrics")
	if code != http.StatusOK || err != nil {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	for _, want := range []string{`celery_worker_up{hostname="box"} 1`, `gocelery_worker_concurrency{hostname="box"}`, "go_goroutines"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
	if out := r.out.String(); !strings.Contains(out, "metrics on http://"+addr+"/metrics") {
		t.Errorf("no log line for the metrics address:\n%s", out)
	}
	r.cancel()
	if code := r.exit(t, 15*time.Second); code != 0 {
		t.Fatalf("exit %d:\n%s", code, r.out)
	}
	if _, _, err := httpGet(base + "/healthz"); err == nil {
		t.Error("still serving after the worker exited")
	}
}
