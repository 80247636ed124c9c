"""Chords and errbacks across workers: the chord counters in Redis are
shared by Go and Python workers, so a chord's header can run on both."""
import json
import time
import uuid

import pytest
from celery import chain, chord, group
from celery.exceptions import ChordError
from kombu import Queue

from conftest import wait_for

T = 30


def test_chord(worker):
    header = [worker.signature("gocelery.add", args=(i, i)) for i in range(6)]
    r = chord(header)(worker.signature("gocelery.xsum"))
    assert r.get(timeout=T) == sum(2 * i for i in range(6))


def test_chord_body_gets_results_in_header_order(worker):
    header = [worker.signature("gocelery.sleep", args=(0.3 - 0.05 * i,)) for i in range(5)]
    r = chord(header)(worker.signature("gocelery.echo", args=("tail",)))
    got = r.get(timeout=T)
    assert got == {"args": [[0.3 - 0.05 * i for i in range(5)], "tail"], "kwargs": {}}


def test_chord_header_failure(worker):
    header = [worker.signature("gocelery.add", args=(1, 1)),
              worker.signature("gocelery.fail", args=("KeyError", "gone"))]
    r = chord(header)(worker.signature("gocelery.xsum"))
    # get() re-raises the header's own error when its wait loop looks at
    # the parents before the body's failure arrives, else the body's
    # ChordError naming it: Celery's client decides by timing, so either.
    with pytest.raises((KeyError, ChordError), match="gone"):
        r.get(timeout=T)
    # ...and the body is stored as FAILURE with ChordError naming it.
    wait_for(lambda: r.state == "FAILURE", what="the chord body to fail")
    assert isinstance(r.result, ChordError)
    assert "KeyError" in str(r.result)


def test_chord_across_go_and_python_workers(start_worker):
    go = start_worker("go")
    py = start_worker("py")
    header = []
    for i in range(8):
        w = go if i % 2 else py
        header.append(w.signature("gocelery.add", args=(i, 1)))
    for body_worker in (go, py):
        r = chord(header)(body_worker.signature("gocelery.xsum"))
        assert r.get(timeout=T) == sum(i + 1 for i in range(8))


def test_errback_for_task_the_worker_lacks_is_published(worker, app):
    """An errback this worker does not have goes out as a message carrying
    the failed task's id."""
    q = f"errbacks-{uuid.uuid4().hex[:8]}"
    with app.connection_for_write() as conn:
        Queue(q)(conn.default_channel).declare()
    try:
        eb = app.signature("interop.no_such_errback", args=("extra",), options={"queue": q})
        r = worker.send("gocelery.fail", args=["ValueError", "x"], link_error=eb)
        with pytest.raises(ValueError):
            r.get(timeout=T)
        with app.connection_for_write() as conn:
            ch = conn.default_channel
            deadline = time.monotonic() + T
            msg = None
            while msg is None and time.monotonic() < deadline:
                msg = ch.basic_get(q, no_ack=True)
                if msg is None:
                    time.sleep(0.05)
            assert msg is not None, "no errback message was published"
            assert msg.headers["task"] == "interop.no_such_errback"
            assert msg.headers["parent_id"] == r.id
            args, kwargs, _ = json.loads(msg.body)
            assert args[0] == r.id and args[1:] == ["extra"]
    finally:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(q)


def test_chain_into_group(worker):
    c = chain(worker.signature("gocelery.add", args=(1, 1)),
              group(worker.signature("gocelery.add", args=(i,)) for i in range(4)))
    assert c.apply_async().get(timeout=T) == [2 + i for i in range(4)]


def test_chain_into_chord(worker):
    c = chain(worker.signature("gocelery.add", args=(1, 1)),
              group(worker.signature("gocelery.add", args=(i,)) for i in range(4)),
              worker.signature("gocelery.xsum"))
    assert c.apply_async().get(timeout=T) == sum(2 + i for i in range(4))


def test_nested_chain_step(worker):
    inner = chain(worker.signature("gocelery.add", args=(10,)), worker.signature("gocelery.add", args=(100,)))
    c = chain(worker.signature("gocelery.add", args=(1, 1)), worker.signature("gocelery.echo", args=("x",)))
    r = worker.send("gocelery.add", args=[1, 1], link=inner)
    assert r.get(timeout=T) == 2
    child = wait_for(lambda: r.children, what="child")[0]
    # The inner chain's last result hangs off its first step.
    last = wait_for(lambda: child.children, what="grandchild")[0]
    assert last.get(timeout=T) == 112
    assert c.apply_async().get(timeout=T) == {"args": [2, "x"], "kwargs": {}}


def test_chain_step_options(worker):
    """A step's own options (sig.set(countdown=..., expires=...)) hold when
    the worker sends the step: it waits for its countdown, and an expires
    that has passed by then revokes it."""
    start = time.monotonic()
    r = chain(worker.signature("gocelery.add", args=(1, 2)),
              worker.signature("gocelery.add", args=(10,)).set(countdown=2)).apply_async()
    assert r.get(timeout=T) == 13
    assert time.monotonic() - start >= 1.9, "the step ran before its countdown"
    expired = chain(worker.signature("gocelery.add", args=(1, 2)),
                    worker.signature("gocelery.add", args=(10,)).set(countdown=2, expires=1)).apply_async()
    wait_for(lambda: expired.state == "REVOKED", timeout=T, what="the step revoked as expired")
