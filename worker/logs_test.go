package worker_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/celeryworker/gocelery/backends"
	"github.com/celeryworker/gocelery/broker/brokertest"
	"github.com/celeryworker/gocelery/worker"
)

// TestConnectionLostLogNamesReason: the "broker connection lost" line says
// why, in one event.
func TestConnectionLostLogNamesReason(t *testing.T) {
	t.Parallel()
	f := startWorker(t, okRegistry(nil), worker.Config{})
	f.b.Drop(errors.New("CONNECTION_FORCED - broker forced connection closure"))
	brokertest.WaitFor(t, patience, func() bool { return f.b.Dials() >= 2 }, "a new connection")
	f.publish("after", "t.ok")
	f.result("after", backends.StatusSuccess)
	for _, line := range strings.Split(f.logs.String(), "\n") {
		if strings.Contains(line, "broker connection lost") {
			if !strings.Contains(line, "CONNECTION_FORCED") {
				t.Fatalf("connection lost without its reason: %s", line)
			}
			return
		}
	}
	t.Fatalf("no \"broker connection lost\" line:\n%s", f.logs.String())
}
