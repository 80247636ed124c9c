package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// The services scripts/services.sh starts.
const (
	testBroker  = "amqp://guest:guest@127.0.0.1:5672//"
	testBackend = "redis://127.0.0.1:6379/0"
)

// needService skips the test when addr does not answer, unless CI is set:
// there a missing service is a failure, not a reason to test less.
func needService(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err == nil {
		c.Close()
		return
	}
	if os.Getenv("CI") == "" {
		t.Skipf("%s unreachable (%v); run scripts/services.sh", addr, err)
	}
	t.Fatalf("%s unreachable under CI: %v", addr, err)
}

func needServices(t *testing.T) {
	needService(t, "127.0.0.1:5672")
	needService(t, "127.0.0.1:6379")
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncBuffer is the output of a Run in progress, read while it writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// running is a Program.Run in a goroutine.
type running struct {
	out    *syncBuffer // stdout and stderr
	cancel context.CancelFunc
	code   chan int
}

func start(t *testing.T, args ...string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{out: &syncBuffer{}, cancel: cancel, code: make(chan int, 1)}
	go func() { r.code <- testProgram().Run(ctx, args, r.out, r.out) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.code:
		case <-time.After(15 * time.Second):
			t.Errorf("Run did not return after cancel; output:\n%s", r.out)
		}
	})
	return r
}

// exit waits up to timeout for Run's exit status.
func (r *running) exit(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case code := <-r.code:
		r.code <- code // for the cleanup
		return code
	case <-time.After(timeout):
		t.Fatalf("still running after %v; output:\n%s", timeout, r.out)
		return 0
	}
}

func uniq(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// amqpChannel opens a channel on the test broker for declaring things
// the worker must then trip over.
func amqpChannel(t *testing.T) *amqp091.Channel {
	t.Helper()
	conn, err := amqp091.Dial("amqp://guest:guest@127.0.0.1:5672/")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// deleteLater removes what a test declared, or the worker did, on the
// broker. A failed delete closes the channel, so each gets its own.
func deleteLater(t *testing.T, queue, exchange string) {
	t.Cleanup(func() {
		conn, err := amqp091.Dial("amqp://guest:guest@127.0.0.1:5672/")
		if err != nil {
			return
		}
		defer conn.Close()
		if queue != "" {
			if ch, err := conn.Channel(); err == nil {
				ch.QueueDelete(queue, false, false, false)
			}
		}
		if exchange != "" {
			if ch, err := conn.Channel(); err == nil {
				ch.ExchangeDelete(exchange, false, false)
			}
		}
	})
}

// Every misconfiguration ends the run with exit status 1 within seconds
// and a last line that names the problem and the flag that fixes it, with
// no password in the output.
func TestMisconfigurationFailsFast(t *testing.T) {
	needServices(t)
	cases := []struct {
		name   string
		setup  func(t *testing.T, queue string)
		args   []string // -b, --result-backend, -Q added unless given
		want   []string // in the last line
		secret string   // must not appear anywhere
	}{
		{name: "redis wrong password", args: []string{"-b", "redis://:Wr0ngPw-r3@127.0.0.1:6379/4"},
			want: []string{"-b/--broker (CELERY_BROKER_URL)", "password"}, secret: "Wr0ngPw-r3"},
		{name: "redis transport option misspelt", args: []string{"-b", "redis://127.0.0.1:6379/4", "--broker-transport-options", "visiblity_timeout=60"},
			want: []string{"--broker-transport-options (CELERY_BROKER_TRANSPORT_OPTIONS)", "visiblity_timeout"}},
		{name: "sentinel without master_name", args: []string{"-b", "sentinel://127.0.0.1:26379"},
			want: []string{"--broker-transport-options (CELERY_BROKER_TRANSPORT_OPTIONS)", "master_name"}},
		{name: "unknown scheme", args: []string{"-b", "foo://x"},
			want: []string{"-b/--broker (CELERY_BROKER_URL)", "foo"}},
		{name: "wrong password", args: []string{"-b", "amqp://guest:Wr0ngPw-x9@127.0.0.1:5672//"},
			want: []string{"-b/--broker (CELERY_BROKER_URL)"}, secret: "Wr0ngPw-x9"},
		{name: "missing vhost", args: []string{"-b", "amqp://guest:guest@127.0.0.1:5672/nosuchvhost"},
			want: []string{"-b/--broker (CELERY_BROKER_URL)", "nosuchvhost"}},
		{name: "queue with other arguments",
			setup: func(t *testing.T, q string) {
				if _, err := amqpChannel(t).QueueDeclare(q, true, false, false, false, amqp091.Table{"x-max-priority": int32(10)}); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"-Q/--queues", "declare it the same way or delete it"}},
		{name: "exchange of the queue's name is fanout",
			setup: func(t *testing.T, q string) {
				if err := amqpChannel(t).ExchangeDeclare(q, "fanout", true, false, false, false, nil); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"-Q/--queues"}},
		{name: "mongodb backend", args: []string{"--result-backend", "mongodb://x"},
			want: []string{"--result-backend (CELERY_RESULT_BACKEND)", "mongodb"}},
		{name: "redis password refused", args: []string{"--result-backend", "redis://:N0pe-s3cret@127.0.0.1:6379/0"},
			want: []string{"--result-backend (CELERY_RESULT_BACKEND)"}, secret: "N0pe-s3cret"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			queue := uniq("cli-test-")
			deleteLater(t, queue, queue)
			if c.setup != nil {
				c.setup(t, queue)
			}
			args := []string{"worker", "-b", testBroker, "--result-backend", testBackend, "-Q", queue,
				"-n", uniq("clitest-") + "@%h", "-c", "2"}
			args = append(args, c.args...) // a later flag wins
			r := start(t, args...)
			if code := r.exit(t, 10*time.Second); code != 1 {
				t.Fatalf("exit %d, want 1; output:\n%s", code, r.out)
			}
			out := strings.TrimSpace(r.out.String())
			last := out[strings.LastIndexByte(out, '\n')+1:]
			for _, w := range c.want {
				if !strings.Contains(last, w) {
					t.Errorf("last line %q lacks %q; output:\n%s", last, w, out)
				}
			}
			if !strings.Contains(last, "ERROR/MainProcess]") {
				t.Errorf("last line is not an error: %q", last)
			}
			if c.secret != "" && strings.Contains(out, c.secret) {
				t.Errorf("the password is in the output:\n%s", out)
			}
		})
	}
}

// A broker that refuses TCP connections may come up later: the worker
// keeps retrying, and a warm shutdown (ctx cancelled, or SIGTERM) still
// ends it cleanly.
func TestRefusedBrokerIsRetried(t *testing.T) {
	needServices(t)
	for _, how := range []string{"ctx", "SIGTERM"} {
		t.Run(how, func(t *testing.T) {
			queue := uniq("cli-test-")
			r := start(t, "worker", "-b", "amqp://guest:guest@127.0.0.1:1//", "--result-backend", testBackend,
				"-Q", queue, "-n", uniq("clitest-")+"@%h", "-c", "2")
			// The banner is printed after signals are caught.
			waitFor(t, 10*time.Second, "the banner", func() bool { return strings.Contains(r.out.String(), "[tasks]") })
			select {
			case code := <-r.code:
				r.code <- code
				t.Fatalf("exited (%d) while the broker was refusing; output:\n%s", code, r.out)
			case <-time.After(2 * time.Second):
			}
			if how == "ctx" {
				r.cancel()
			} else if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code := r.exit(t, 10*time.Second); code != 0 {
				t.Fatalf("exit %d after a warm shutdown, want 0; output:\n%s", code, r.out)
			}
			if how == "SIGTERM" && !strings.Contains(r.out.String(), "Warm shutdown (SIGTERM)") {
				t.Errorf("no warm shutdown line:\n%s", r.out)
			}
		})
	}
}

// The banner names the program, its version and the redacted URLs; a
// --logfile gets the logs instead of stderr and --pidfile holds our pid
// while the worker runs.
func TestBannerLogfilePidfile(t *testing.T) {
	needServices(t)
	dir := t.TempDir()
	queue := uniq("cli-test-")
	deleteLater(t, queue, queue)
	node := uniq("clitest-")
	logfile, pidfile := dir+"/%n.log", dir+"/%n.pid"
	r := start(t, "-A", "proj", "worker", "-P", "prefork", "--without-gossip", "--without-mingle", "--without-heartbeat",
		"-Ofair", "-b", testBroker, "--result-backend", testBackend, "-Q", queue, "-n", node+"@%h",
		"--autoscale", "4,2", "--max-tasks-per-child", "10", "-f", logfile, "--pidfile", pidfile, "-linfo")
	logPath, pidPath := dir+"/"+node+".log", dir+"/"+node+".pid"
	readLog := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	waitFor(t, 10*time.Second, "the banner in the log file", func() bool { return strings.Contains(readLog(), "[tasks]") })
	waitFor(t, 10*time.Second, "the pid file", func() bool {
		b, _ := os.ReadFile(pidPath)
		return strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid())
	})
	log := readLog()
	for _, want := range []string{
		"orderworker 1.2.0", node + "@", "amqp://guest:****@127.0.0.1:5672//", testBackend,
		"{min=2, max=4} (goroutines)", "task events: OFF", queue, "  . orders.total",
		"-A proj:", "-P prefork:", "--max-tasks-per-child",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log file lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "guest:guest") {
		t.Errorf("password in the log:\n%s", log)
	}
	if n := strings.Count(log, "-A proj:"); n != 1 {
		t.Errorf("the -A/-P note appears %d times", n)
	}
	r.cancel()
	if code := r.exit(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d; log:\n%s", code, readLog())
	}
	if _, err := os.Stat(pidPath); !os.IsNotExist(err) {
		t.Errorf("pid file left behind: %v", err)
	}
	if s := r.out.String(); s != "" {
		t.Errorf("output on stderr with --logfile: %q", s)
	}
}

// A pid file naming a running process refuses the start, before anything
// connects, as Celery does; the file is left alone.
func TestPidfileInUseRefusesStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.pid")
	live := strconv.Itoa(os.Getppid()) + "\n"
	if err := os.WriteFile(path, []byte(live), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errb := run(t, testProgram(), "worker", "-b", "amqp://guest:guest@127.0.0.1:1//", "--pidfile", path)
	if code != 1 || !strings.Contains(errb, "already exists") || !strings.Contains(errb, "--pidfile") {
		t.Errorf("exit %d, %q", code, errb)
	}
	if b, _ := os.ReadFile(path); string(b) != live {
		t.Errorf("pid file changed to %q", b)
	}
}
