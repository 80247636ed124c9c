"""Task semantics as Celery users rely on them, seen from Python: retry,
ETA, expires, time and rate limits, states, revoke, task logging. Each test
runs against gocelery [go] and the Python twin [py]. Timing bounds are
generous so a busy 2-core machine does not make them flaky."""
import re
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from celery.exceptions import SoftTimeLimitExceeded, TaskRevokedError, TimeLimitExceeded

from conftest import queue_depth, wait_for

T = 30


def timed_get(r, timeout=T):
    t0 = time.monotonic()
    v = r.get(timeout=timeout)
    return v, time.monotonic() - t0


# 1. Retry

def test_retry_with_countdown_stores_retry_state(worker):
    t0 = time.monotonic()
    r = worker.send("gocelery.flaky", args=[2], kwargs={"countdown": 1})
    wait_for(lambda: r.state == "RETRY", what="RETRY state")
    assert isinstance(r.info, RuntimeError) and r.info.args == ("flaky",)
    assert r.get(timeout=T) == 2
    assert 1.8 <= time.monotonic() - t0 < 15


def test_autoretry_with_backoff(worker):
    t0 = time.monotonic()
    r = worker.send("gocelery.autoretry", args=[2])
    assert r.get(timeout=T) == 2
    # backoff 1 s, then 2 s
    assert 2.7 <= time.monotonic() - t0 < 20


def test_retry_message_runs_on_the_other_worker(start_worker, app):
    """The retry a Go worker publishes is a message Python runs, and back."""
    go = start_worker("go")
    py = start_worker("py")
    for first, second in ((go, py), (py, go)):
        tid = str(uuid.uuid4())
        # Route the retry to the other worker's queue: the retry goes back to
        # the delivery's exchange and routing key, so publish through the
        # other queue's exchange with the first worker's routing key bound too.
        with app.connection_for_write() as conn:
            # Declared as the worker declared it (a no-op on RabbitMQ); on
            # Redis the binding needs the exchange known to this channel.
            conn.default_channel.exchange_declare(first.queue, "direct", durable=True, auto_delete=False)
            conn.default_channel.queue_bind(second.queue, exchange=first.queue, routing_key="retry-" + tid)
        r = app.send_task("gocelery.flaky", args=[1], task_id=tid, exchange=first.queue,
                          routing_key="retry-" + tid)
        assert r.get(timeout=T) == 1


# 2. ETA and countdown

def test_countdown(worker):
    t0 = time.monotonic()
    r = worker.send("gocelery.add", args=[1, 2], countdown=2)
    assert r.get(timeout=T) == 3
    assert 1.9 <= time.monotonic() - t0 < 8


@pytest.mark.parametrize("tz", [timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-7))])
def test_eta_with_offsets(worker, tz):
    t0 = time.monotonic()
    eta = datetime.now(tz) + timedelta(seconds=2)
    assert worker.send("gocelery.add", args=[2, 2], eta=eta).get(timeout=T) == 4
    assert 1.8 <= time.monotonic() - t0 < 8


def test_eta_in_the_past_runs_at_once(worker):
    eta = datetime.now(timezone.utc) - timedelta(hours=1)
    _, took = timed_get(worker.send("gocelery.add", args=[3, 3], eta=eta))
    assert took < 5


def test_held_eta_tasks_do_not_block_ready_work(kind, start_worker, request):
    # One slot and prefetch 1: without raising the prefetch while holding
    # ETA messages, the ready task could not be delivered until they run.
    if kind == "py":
        # Racy in Celery 5.7 (prefork -c 1 --prefetch-multiplier 1): in some runs the ready
        # task waits until the held ETA tasks run, in others it does not. gocelery raises the
        # prefetch before it holds each message, and must pass every time.
        request.applymarker(pytest.mark.xfail(strict=False, reason=(
            "racy in Celery 5.7: the ready task may wait for the held ETA tasks")))
    w = start_worker(kind, "--prefetch-multiplier", "1", concurrency=1)
    held = [w.send("gocelery.add", args=[i, 0], countdown=6) for i in range(3)]
    _, took = timed_get(w.send("gocelery.add", args=[1, 1]))
    assert took < 5
    assert all(h.state == "PENDING" for h in held)
    assert [h.get(timeout=T) for h in held] == [0, 1, 2]


def test_shutdown_returns_held_eta_tasks_to_the_queue(kind, start_worker, app):
    w = start_worker(kind)
    r = w.send("gocelery.add", args=[5, 5], countdown=120)
    wait_for(lambda: queue_depth(app, w.queue) == 0, what="the worker to take the ETA message")
    w.proc.terminate()
    w.proc.wait(30)
    assert queue_depth(app, w.queue) == 1
    assert r.state == "PENDING"


# 3. Expires

def test_expired_before_eta_is_revoked(worker):
    r = worker.send("gocelery.add", args=[1, 1], countdown=2, expires=1)
    with pytest.raises(TaskRevokedError):
        r.get(timeout=T)
    assert r.state == "REVOKED"


def test_expires_in_future_runs(worker):
    assert worker.send("gocelery.add", args=[1, 1], expires=60).get(timeout=T) == 2


# 4. Time limits from the worker's flags, the header winning

def test_worker_soft_time_limit(kind, start_worker):
    w = start_worker(kind, "--soft-time-limit", "1")
    with pytest.raises(SoftTimeLimitExceeded):
        w.send("gocelery.sleep", args=[20]).get(timeout=T)


def test_worker_hard_time_limit_and_header_precedence(kind, start_worker):
    w = start_worker(kind, "--time-limit", "1")
    with pytest.raises(TimeLimitExceeded):
        w.send("gocelery.sleep", args=[20]).get(timeout=T)
    # The message's own limit wins over the worker's.
    assert w.send("gocelery.sleep", args=[1.5], time_limit=10).get(timeout=T) == 1.5


# 5. Rate limits

def test_rate_limit_delays_only_its_own_task(worker):
    t0 = time.monotonic()
    limited = [worker.send("gocelery.limited", args=[i]) for i in range(10)]
    _, took = timed_get(worker.send("gocelery.add", args=[1, 1]))
    assert took < 1.5  # other task types are not held up
    assert [r.get(timeout=T) for r in limited] == list(range(10))
    assert time.monotonic() - t0 >= 1.4  # 10 tasks at 5/s


def test_rate_limit_changed_at_run_time(kind, start_worker, app):
    w = start_worker(kind)
    reply = app.control.rate_limit("gocelery.limited", "1000/s", destination=[w.node], reply=True, timeout=5)
    assert reply == [{w.node: {"ok": "new rate limit set successfully"}}]
    t0 = time.monotonic()
    rs = [w.send("gocelery.limited", args=[i]) for i in range(20)]
    assert [r.get(timeout=T) for r in rs] == list(range(20))
    assert time.monotonic() - t0 < 3.5  # at 5/s it would take 3.8 s


# 6. States

def test_track_started(kind, start_worker):
    if kind == "go":
        w = start_worker(kind, "--track-started")
    else:
        w = start_worker(kind, env={"INTEROP_TRACK_STARTED": "1"})
    r = w.send("gocelery.sleep", args=[2])
    wait_for(lambda: r.state == "STARTED", what="STARTED")
    assert r.info["hostname"] == w.node
    assert isinstance(r.info["pid"], int)
    assert r.get(timeout=T) == 2


def test_ignore_result_stores_nothing(kind, start_worker, app):
    w = start_worker(kind, concurrency=1)
    ignored = w.send("gocelery.add", args=[1, 1], ignore_result=True)
    w.send("gocelery.add", args=[2, 2]).get(timeout=T)
    wait_for(lambda: queue_depth(app, w.queue) == 0, what="queue to drain")
    assert app.backend.client.get(app.backend.get_key_for_task(ignored.id)) is None


def test_success_is_never_overwritten(worker):
    tid = str(uuid.uuid4())
    assert worker.send("gocelery.add", args=[1, 1], task_id=tid).get(timeout=T) == 2
    dup = worker.send("gocelery.fail", args=["ValueError", "late"], task_id=str(uuid.uuid4()))
    worker.send("gocelery.fail", args=["ValueError", "late"], task_id=tid)
    with pytest.raises(ValueError):
        dup.get(timeout=T)
    worker.send("gocelery.add", args=[0, 0]).get(timeout=T)
    r = worker.app.AsyncResult(tid)
    r.backend.get_task_meta(tid, cache=False)
    assert r.state == "SUCCESS" and r.result == 2


# 7. Revoke

def test_revoke_before_it_runs(worker, app):
    r = worker.send("gocelery.add", args=[1, 1], countdown=3)
    app.control.revoke(r.id)
    with pytest.raises(TaskRevokedError):
        r.get(timeout=T)
    # Still revoked after the ETA: the task never ran.
    worker.send("gocelery.add", args=[0, 0], countdown=3.5).get(timeout=T)
    assert r.state == "REVOKED"


def test_revoke_terminate_running_task(worker, app):
    r = worker.send("gocelery.sleep", args=[30])

    def running():
        active = app.control.inspect([worker.node], timeout=1).active() or {}
        return any(t["id"] == r.id for t in active.get(worker.node, []))

    wait_for(running, what="the task to run")
    app.control.revoke(r.id, terminate=True, signal="SIGTERM")
    with pytest.raises(TaskRevokedError):
        r.get(timeout=T)
    assert r.state == "REVOKED"
    assert worker.send("gocelery.add", args=[2, 3]).get(timeout=T) == 5


def test_ping(worker, app):
    assert app.control.ping([worker.node], timeout=5) == [{worker.node: {"ok": "pong"}}]


# 9. Logging inside tasks

def test_task_logger_lines_carry_name_and_id(worker):
    r = worker.send("gocelery.flaky", args=[1])
    assert r.get(timeout=T) == 1
    pattern = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}: WARNING/[\w-]+\] "
                         + re.escape(f"gocelery.flaky[{r.id}]: flaky: attempt 0 fails") + "$", re.M)
    wait_for(lambda: pattern.search(worker.logtext()), what="the task's log line")


def test_sigterm_finishes_running_tasks(kind, start_worker, app):
    w = start_worker(kind)
    r = w.send("gocelery.sleep", args=[2])

    def running():
        active = app.control.inspect([w.node], timeout=1).active() or {}
        return any(t["id"] == r.id for t in active.get(w.node, []))

    wait_for(running, what="the task to run")
    w.proc.terminate()
    assert w.proc.wait(30) == 0
    assert r.state == "SUCCESS" and r.result == 2
