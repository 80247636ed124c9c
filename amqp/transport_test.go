package amqp

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/celeryworker/gocelery/broker"
	"github.com/celeryworker/gocelery/protocol"
)

// These tests need the RabbitMQ that scripts/services.sh starts.

const testURL = "amqp://guest:guest@127.0.0.1:5672//"

func dialTest(t *testing.T, url string) (broker.Conn, error) {
	t.Helper()
	tr, err := NewTransport(Params{URL: url})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return tr.Dial(ctx, broker.DialParams{Name: "amqp-test"})
}

func liveConn(t *testing.T) broker.Conn {
	t.Helper()
	c, err := dialTest(t, testURL)
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("RabbitMQ not reachable (run scripts/services.sh): %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestDialClassifiesErrors(t *testing.T) {
	liveConn(t)
	tests := []struct {
		url     string
		fatal   bool
		mention string
	}{
		{"amqp://guest:S3cretPw@127.0.0.1:5672//", true, "refused the login"},
		{"amqp://guest:guest@127.0.0.1:5672/no-such-vhost", true, "virtual host"},
		{"amqp://guest:guest@127.0.0.1:1//", false, "connection refused"},
		{"redis://127.0.0.1:6379/0", true, "not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			c, err := dialTest(t, tt.url)
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded")
			}
			if got := errors.Is(err, broker.ErrMisconfigured); got != tt.fatal {
				t.Errorf("errors.Is(ErrMisconfigured) = %v for %v", got, err)
			}
			if !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("error %q does not say %q", err, tt.mention)
			}
			if strings.Contains(err.Error(), "S3cretPw") {
				t.Errorf("error leaks the password: %v", err)
			}
		})
	}
}

func TestDeclareQueueDeclaredOtherwiseIsMisconfigured(t *testing.T) {
	c := liveConn(t).(*Conn)
	q := fmt.Sprintf("amqp-test-prio-%d", time.Now().UnixNano())
	ch, err := c.conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if _, err := ch.QueueDeclare(q, true, false, false, false, amqp091.Table{"x-max-priority": int32(10)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.QueueDelete(q, false, false, false) })
	err = c.DeclareQueue(context.Background(), broker.NewQueue(q))
	if !errors.Is(err, broker.ErrMisconfigured) || !strings.Contains(err.Error(), "PRECONDITION_FAILED") {
		t.Fatalf("DeclareQueue over a priority queue: %v", err)
	}
}

// After CancelConsume, deliveries the worker has not read go back to the
// queue; the one it read stays valid for Ack.
func TestCancelConsumeRequeuesUnread(t *testing.T) {
	c := liveConn(t)
	ctx := context.Background()
	q := tempQueue(t, c, "cancel")
	for i := 0; i < 3; i++ {
		env := &protocol.Envelope{ContentType: "application/json", Body: []byte(fmt.Sprint(i))}
		if err := c.PublishTask(ctx, broker.Route{RoutingKey: q}, env); err != nil {
			t.Fatal(err)
		}
	}
	ds, err := c.Consume(ctx, []string{q}, 10)
	if err != nil {
		t.Fatal(err)
	}
	first := <-ds
	if string(first.Envelope().Body) != "0" {
		t.Fatal("first delivery out of order")
	}
	if err := c.CancelConsume(ctx); err != nil {
		t.Fatal(err)
	}
	if err := first.Ack(); err != nil {
		t.Fatal(err)
	}
	// The channel closes; the two unread deliveries were requeued, so a
	// new connection sees them.
	for range ds {
		t.Fatal("delivery handed over after CancelConsume")
	}
	c.Close()
	c2 := liveConn(t)
	ds2, err := c2.Consume(ctx, []string{q}, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"1", "2"} {
		select {
		case d := <-ds2:
			if got := string(d.Envelope().Body); got != want || !d.Info().Redelivered {
				t.Fatalf("got %q (redelivered %v), want %q redelivered", got, d.Info().Redelivered, want)
			}
			d.Ack()
		case <-time.After(5 * time.Second):
			t.Fatalf("message %s not requeued", want)
		}
	}
}

// A delivery's Lost channel closes with its connection.
func TestDeliveryLostWithConnection(t *testing.T) {
	c := liveConn(t)
	ctx := context.Background()
	q := fmt.Sprintf("amqp-test-lost-%d", time.Now().UnixNano())
	if err := c.DeclareQueue(ctx, broker.NewQueue(q)); err != nil {
		t.Fatal(err)
	}
	if err := c.PublishTask(ctx, broker.Route{RoutingKey: q}, &protocol.Envelope{Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	ds, err := c.Consume(ctx, []string{q}, 1)
	if err != nil {
		t.Fatal(err)
	}
	d := <-ds
	select {
	case <-d.Lost():
		t.Fatal("lost while the connection lives")
	default:
	}
	c.Close()
	select {
	case <-d.Lost():
	case <-time.After(5 * time.Second):
		t.Fatal("Lost not closed after the connection closed")
	}
	if err := d.Ack(); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Ack after loss: %v, want ErrClosed", err)
	}
	c2 := liveConn(t)
	ch, _ := c2.(*Conn).conn.Channel()
	ch.QueueDelete(q, false, false, false)
	ch.ExchangeDelete(q, false, false)
}

// A ";" failover list: a dead first URL is skipped, the transport stays on
// the one that answered, and every URL in the error of an all-dead list is
// redacted.
func TestFailoverList(t *testing.T) {
	liveConn(t)
	tr, err := NewTransport(Params{URL: "amqp://guest:S3cretPw@127.0.0.1:1//;" + testURL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for range 2 {
		c, err := tr.Dial(ctx, broker.DialParams{Name: "amqp-failover-test"})
		if err != nil {
			t.Fatalf("dial with a dead first URL: %v", err)
		}
		c.Close()
		if info := tr.Info(); info.Port != 5672 || strings.Contains(info.URL, "S3cretPw") {
			t.Fatalf("info %+v: want the live broker, password hidden", info)
		}
	}
	dead, err := NewTransport(Params{URL: "amqp://u:S3cretPw@127.0.0.1:1//;amqp://u:S3cretPw@127.0.0.1:2//"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = dead.Dial(ctx, broker.DialParams{Name: "amqp-failover-test"})
	if err == nil || errors.Is(err, broker.ErrMisconfigured) || strings.Contains(err.Error(), "S3cretPw") ||
		!strings.Contains(err.Error(), "127.0.0.1:1") || !strings.Contains(err.Error(), "127.0.0.1:2") {
		t.Fatalf("all dead: %v (want a transient error naming both, no password)", err)
	}
	if _, err := NewTransport(Params{URL: testURL, FailoverStrategy: "random"}); !errors.Is(err, broker.ErrMisconfigured) {
		t.Fatalf("unknown strategy: %v", err)
	}
	if _, err := NewTransport(Params{URL: testURL + ";" + testURL, FailoverStrategy: "shuffle"}); err != nil {
		t.Fatal(err)
	}
}

// AckNow's confirm and SetPrefetch are both synchronous methods on the
// consuming channel; at the same time they must not take each other's
// reply (amqp091 gives a reply to whichever call waits).
func TestAckNowBesideSetPrefetch(t *testing.T) {
	c := liveConn(t)
	ctx := context.Background()
	q := tempQueue(t, c, "acknow")
	const n = 300
	publishN(t, c, q, n)
	ds, err := c.Consume(ctx, []string{q}, 50)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	qosErr := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				qosErr <- nil
				return
			default:
			}
			if err := c.SetPrefetch(50 + i%2); err != nil {
				qosErr <- err
				return
			}
		}
	}()
	for i := 0; i < n; i++ {
		d := <-ds
		if err := broker.AckNow(d); err != nil {
			t.Fatalf("AckNow %d: %v", i, err)
		}
	}
	close(stop)
	if err := <-qosErr; err != nil {
		t.Fatalf("SetPrefetch: %v", err)
	}
}

// TestStartAckOnRabbitMQ: acks started without waiting (the worker's
// acknowledging ahead), beside AckNow and prefetch changes on the same
// channel, all reach the broker: once every wait returned and the
// connection is closed, nothing comes back to the queue.
func TestStartAckOnRabbitMQ(t *testing.T) {
	c, check := liveConn(t), liveConn(t)
	ctx := context.Background()
	q := tempQueue(t, check, "startack")
	const n = 300
	publishN(t, check, q, n)
	ds, err := c.Consume(ctx, []string{q}, 50)
	if err != nil {
		t.Fatal(err)
	}
	var waits []func() error
	for i := 0; i < n; i++ {
		var d broker.Delivery
		select {
		case d = <-ds:
		case <-time.After(10 * time.Second):
			t.Fatalf("delivery %d never came: the window is full of messages whose acks did not reach the broker", i)
		}
		switch i % 3 {
		case 0:
			waits = append(waits, d.(broker.AckStarter).StartAck())
		case 1:
			if err := broker.AckNow(d); err != nil {
				t.Fatalf("AckNow %d: %v", i, err)
			}
		default:
			waits = append(waits, d.(broker.AckStarter).StartAck())
			if err := c.SetPrefetch(50 + i%2); err != nil {
				t.Fatalf("SetPrefetch: %v", err)
			}
		}
		if len(waits) > 8 { // a few outstanding, as a worker has
			if err := waits[0](); err != nil {
				t.Fatalf("wait: %v", err)
			}
			waits = waits[1:]
		}
	}
	for _, w := range waits {
		if err := w(); err != nil {
			t.Fatalf("wait: %v", err)
		}
	}
	requireAcked(t, c, check, q)
}

// publishN publishes n small messages to q through c.
func publishN(t *testing.T, c broker.Conn, q string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := c.PublishTask(context.Background(), broker.Route{RoutingKey: q}, &protocol.Envelope{Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
}

// requireAcked closes c and fails if any message comes back to q on the
// other connection, check: Close waits for the broker's close-ok, and by
// then it has put back every message whose ack it had not processed.
func requireAcked(t *testing.T, c, check broker.Conn, q string) {
	t.Helper()
	c.Close()
	ch, err := check.(*Conn).conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	st, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Messages != 0 {
		t.Fatalf("%d messages back in the queue: their acks never reached the broker", st.Messages)
	}
}

// TestPipelinedBarriersOnRabbitMQ: early acks from many runners at once
// send their barriers without waiting for each other; RabbitMQ answers
// overlapping confirm.select calls on the consuming channel in order, the
// channel stays open, and every ack reported done has reached the broker.
func TestPipelinedBarriersOnRabbitMQ(t *testing.T) {
	c, check := liveConn(t), liveConn(t)
	ctx := context.Background()
	q := tempQueue(t, check, "pipelined")
	const n, runners = 2000, 16
	publishN(t, check, q, n)
	ds, err := c.Consume(ctx, []string{q}, 64)
	if err != nil {
		t.Fatal(err)
	}
	var next atomic.Int32
	errs := make(chan error, runners)
	for r := 0; r < runners; r++ {
		go func() {
			for next.Add(1) <= n {
				select {
				case d := <-ds:
					if err := broker.AckNow(d); err != nil {
						errs <- err
						return
					}
				case <-time.After(10 * time.Second):
					errs <- errors.New("a delivery never came")
					return
				}
			}
			errs <- nil
		}()
	}
	for r := 0; r < runners; r++ {
		if err := <-errs; err != nil {
			t.Fatalf("AckNow: %v", err)
		}
	}
	a := c.(*Conn).consumer.ack
	a.mu.Lock()
	peak, sent := a.peak, a.sent
	a.mu.Unlock()
	if peak < 2 {
		t.Fatalf("at most %d barrier out at once over %d barriers: they were not pipelined", peak, sent)
	}
	requireAcked(t, c, check, q)
}

// tempQueue declares a queue of the test's own, deleted at its end.
func tempQueue(t *testing.T, c broker.Conn, what string) string {
	t.Helper()
	q := fmt.Sprintf("amqp-test-%s-%d", what, time.Now().UnixNano())
	if err := c.DeclareQueue(context.Background(), broker.NewQueue(q)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ch, _ := c.(*Conn).conn.Channel()
		if ch != nil {
			ch.QueueDelete(q, false, false, false)
			ch.ExchangeDelete(q, false, false)
			ch.Close()
		}
	})
	return q
}
