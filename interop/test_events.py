"""Monitoring: the events Flower and `celery events` read, and the inspect
commands Flower polls, from gocelery [go] and the Python worker [py]."""
import socket
import time
import uuid

import pytest
from celery.events.event import get_exchange
from kombu import Consumer, Queue

from conftest import wait_for

T = 20


def collect(app, conn):
    """Binds a queue to the celeryev exchange, as monitors do, and returns
    a drain function that appends the events received to a list."""
    events = []
    # Celery's own choice of exchange: a topic on RabbitMQ, a fanout
    # (PUBLISH/PSUBSCRIBE) on Redis.
    q = Queue(f"interop-ev-{uuid.uuid4().hex[:8]}", get_exchange(conn), routing_key="#",
              durable=False, auto_delete=True, exclusive=True)

    def on_message(body, message):
        for ev in body if isinstance(body, list) else [body]:
            events.append(ev)

    consumer = Consumer(conn, queues=[q], callbacks=[on_message], accept=["json"], no_ack=True)
    consumer.consume()

    def drain():
        try:
            conn.drain_events(timeout=0.2)
        except socket.timeout:
            pass

    # On Redis the events are pub/sub: kombu subscribes on the first
    # drain, and what is published before that reaches no one.
    drain()
    return drain, events


def drain_until(drain, events, cond, timeout=T):
    deadline = time.monotonic() + timeout
    while not cond(events):
        if time.monotonic() > deadline:
            raise AssertionError(f"events seen: {[(e['type'], e.get('uuid')) for e in events]}")
        drain()


def test_task_and_worker_events(kind, start_worker, app):
    w = start_worker(kind, "-E")
    with app.connection() as conn:
        drain, events = collect(app, conn)
        r = w.send("gocelery.add", args=[2, 3])
        assert r.get(timeout=T) == 5

        def mine(evs):
            return [e for e in evs if e.get("uuid") == r.id]

        drain_until(drain, events, lambda evs: any(e["type"] == "task-succeeded" for e in mine(evs)))
        if kind == "go":  # the Python fixture runs --without-heartbeat
            drain_until(drain, events, lambda evs: any(e["type"] == "worker-heartbeat" and e["hostname"] == w.node for e in evs))
    types = [e["type"] for e in mine(events)]
    assert types == ["task-received", "task-started", "task-succeeded"]
    received, _, succeeded = mine(events)
    assert received["name"] == "gocelery.add" and received["hostname"] == w.node
    assert received["args"] == "(2, 3)" or received["args"] == "[2, 3]"
    assert succeeded["result"] == "5" and isinstance(succeeded["runtime"], float)
    for e in events:
        if e["hostname"] == w.node:
            assert isinstance(e["timestamp"], float) and isinstance(e["clock"], int)
            assert e["utcoffset"] == time.timezone // 3600
    # Celery's own monitor state sees the worker alive and the task done.
    state = app.events.State()
    for e in events:
        state.event(dict(e, local_received=time.time()))  # as the Receiver adds it
    assert state.tasks[r.id].state == "SUCCESS"
    if kind == "go":
        assert state.workers[w.node].alive


def test_failed_event(kind, start_worker, app):
    w = start_worker(kind, "-E")
    with app.connection() as conn:
        drain, events = collect(app, conn)
        r = w.send("gocelery.fail", args=["KeyError", "k"])
        with pytest.raises(KeyError):
            r.get(timeout=T)
        drain_until(drain, events, lambda evs: any(e["type"] == "task-failed" and e.get("uuid") == r.id for e in evs))
    failed = [e for e in events if e["type"] == "task-failed" and e.get("uuid") == r.id][0]
    assert failed["exception"] == "KeyError('k')"


def test_inspect_stats_and_queues(worker, app):
    worker.send("gocelery.add", args=[1, 1]).get(timeout=T)
    insp = app.control.inspect([worker.node], timeout=5)
    stats = insp.stats()[worker.node]
    assert stats["total"].get("gocelery.add", 0) >= 1
    assert stats["broker"]["hostname"] in ("127.0.0.1", "localhost")
    assert isinstance(stats["pid"], int) and isinstance(stats["prefetch_count"], int)
    queues = insp.active_queues()[worker.node]
    assert [q["name"] for q in queues] == [worker.queue]
    assert "gocelery.add" in insp.registered()[worker.node]


def test_inspect_active_reserved_scheduled(kind, start_worker, app):
    w = start_worker(kind, concurrency=1)
    busy = w.send("gocelery.sleep", args=[3])
    waiting = w.send("gocelery.add", args=[1, 2])
    later = w.send("gocelery.add", args=[3, 4], countdown=60)
    insp = app.control.inspect([w.node], timeout=2)

    def seen():
        active = (insp.active() or {}).get(w.node, [])
        reserved = (insp.reserved() or {}).get(w.node, [])
        scheduled = (insp.scheduled() or {}).get(w.node, [])
        return ([t["id"] for t in active] == [busy.id] and [t["id"] for t in reserved] == [waiting.id]
                and [s["request"]["id"] for s in scheduled] == [later.id]) and (active, reserved, scheduled)

    active, reserved, scheduled = wait_for(seen, timeout=T, what="inspect to list the three tasks")
    assert active[0]["name"] == "gocelery.sleep" and active[0]["hostname"] == w.node
    assert reserved[0]["args"] in ([1, 2], "(1, 2)", "[1, 2]")
    from datetime import datetime, timezone
    eta = datetime.fromisoformat(scheduled[0]["eta"])
    assert 30 < (eta - datetime.now(timezone.utc)).total_seconds() <= 61
    q = insp.query_task([busy.id])[w.node]
    assert q[busy.id][0] == "active"
    assert waiting.get(timeout=T) == 3


def test_control_shutdown(kind, start_worker, app):
    w = start_worker(kind)
    app.control.shutdown(destination=[w.node])
    assert w.proc.wait(30) == 0
