package amqp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/celeryworker/gocelery/broker"
)

// cutProxy stands between one client and RabbitMQ. Once muted, what either
// side sends may be dropped instead of forwarded (the broker's bytes are
// still read and counted); cut closes both sockets, as a dying network or
// broker does.
type cutProxy struct {
	ln       net.Listener
	target   string
	mu       sync.Mutex
	socks    []net.Conn
	muteUp   atomic.Bool // drop client -> broker
	muteDown atomic.Bool // drop broker -> client
	heard    dropped     // broker bytes dropped while muteDown
	unsent   dropped     // client bytes dropped while muteUp
}

// dropped collects the bytes a muted direction did not forward.
type dropped struct {
	mu  sync.Mutex
	buf []byte
}

func (d *dropped) add(b []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.buf = append(d.buf, b...)
}

// has reports whether a frame of the given AMQP method (class, method ids)
// was dropped: its payload starts with them, big-endian.
func (d *dropped) has(class, method uint16) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return bytes.Contains(d.buf, []byte{byte(class >> 8), byte(class), byte(method >> 8), byte(method)})
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.socks = append(p.socks, c, b)
			p.mu.Unlock()
			go p.pipe(b, c, &p.muteUp, &p.unsent)
			go p.pipe(c, b, &p.muteDown, &p.heard)
		}
	}()
	return p
}

func (p *cutProxy) url() string { return "amqp://guest:guest@" + p.ln.Addr().String() + "//" }

// pipe copies src to dst until either closes; while mute is set it reads
// and drops, into heard.
func (p *cutProxy) pipe(dst, src net.Conn, mute *atomic.Bool, heard *dropped) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if mute.Load() {
				heard.add(buf[:n])
			} else if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				dst.Close()
			}
			return
		}
	}
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.socks {
		s.Close()
	}
	p.socks = nil
}

// TestAckInDoubtOnRabbitMQ: the connection ends after an early ack was
// written and before its confirmation came back. In one case RabbitMQ took
// the ack (its answer was on the way: the message is gone), in the other
// it never read it (the message comes back). The transport cannot tell
// them apart and must say so (broker.ErrAckInDoubt) rather than report the
// ack failed: a worker that drops the task on a failed ack lost it in the
// first case (the CI failure of broker-restart, 4 tasks never run).
func TestAckInDoubtOnRabbitMQ(t *testing.T) {
	check := liveConn(t)
	for _, taken := range []bool{true, false} {
		t.Run(fmt.Sprint("broker took the ack=", taken), func(t *testing.T) {
			p := newCutProxy(t, "127.0.0.1:5672")
			c, err := dialTest(t, p.url())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			q := tempQueue(t, check, "doubt")
			publishN(t, check, q, 1)
			ds, err := c.Consume(context.Background(), []string{q}, 1)
			if err != nil {
				t.Fatal(err)
			}
			var d broker.Delivery
			select {
			case d = <-ds:
			case <-time.After(10 * time.Second):
				t.Fatal("no delivery")
			}
			p.muteDown.Store(true)
			p.muteUp.Store(!taken)
			wait := d.(broker.AckStarter).StartAck()
			if taken {
				// The barrier's answer (confirm.select-ok) is the broker's
				// proof that it processed the ack before it.
				checkFor(t, func() bool { return p.heard.has(85, 11) }, "RabbitMQ never answered the barrier")
			} else {
				// Written by the worker (basic.ack), never read by the broker.
				checkFor(t, func() bool { return p.unsent.has(60, 80) }, "the ack was never written")
			}
			p.cut()
			err = wait()
			if !errors.Is(err, broker.ErrAckInDoubt) {
				t.Fatalf("wait = %v, want broker.ErrAckInDoubt", err)
			}
			// RabbitMQ's view once it has dropped the connection.
			ch, err := check.(*Conn).conn.Channel()
			if err != nil {
				t.Fatal(err)
			}
			defer ch.Close()
			want := 1
			if taken {
				want = 0
			}
			var msgs int
			checkFor(t, func() bool {
				st, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
				if err != nil {
					t.Fatal(err)
				}
				msgs = st.Messages
				return st.Consumers == 0 && msgs == want
			}, fmt.Sprintf("queue never settled at %d message(s)", want))
		})
	}
}
