"""Remote control (`celery control` / `celery inspect`): every command is
sent the same way to gocelery [go] and to the Python worker [py], and the
same assertions hold for both replies and effects. Where the two workers
legitimately differ (pool implementation, what psutil would give), the test
asserts the common shape and says why."""
import re
import time
import uuid

import pytest
from celery.exceptions import TimeLimitExceeded

from conftest import ON_REDIS, delete_queue, queue_depth, wait_for
from test_events import collect, drain_until

T = 20
RUSAGE_FIELDS = ("utime", "stime", "maxrss", "ixrss", "idrss", "isrss", "minflt", "majflt", "nswap",
                 "inblock", "oublock", "msgsnd", "msgrcv", "nsignals", "nvcsw", "nivcsw")


def control(app, w, command, **arguments):
    """Broadcasts command to w alone with a reply, and returns w's reply."""
    replies = app.control.broadcast(command, arguments=arguments, destination=[w.node], reply=True, timeout=5)
    assert len(replies) == 1 and w.node in replies[0], f"{command}: replies {replies}"
    return replies[0][w.node]


def stats(app, w):
    return app.control.inspect([w.node], timeout=5).stats()[w.node]


def consumers(app, queue):
    """The number of consumers RabbitMQ has for queue (0 if it is gone)."""
    with app.connection_for_write() as conn:
        try:
            _, _, n = conn.default_channel.queue_declare(queue, passive=True)
            return n
        except Exception:
            return 0


def consuming(app, w, queue):
    """How many consumers queue has: RabbitMQ counts them; Redis keeps no
    such count, so there the worker is asked (inspect active_queues)."""
    if ON_REDIS:
        qs = (app.control.inspect([w.node], timeout=2).active_queues() or {}).get(w.node, [])
        return sum(1 for q in qs if q["name"] == queue)
    return consumers(app, queue)


def test_add_and_cancel_consumer(kind, start_worker, app):
    w = start_worker(kind)
    extra = f"{w.queue}-extra"
    try:
        assert control(app, w, "add_consumer", queue=extra) == {"ok": f"add consumer {extra}"}
        wait_for(lambda: consuming(app, w, extra) == 1, timeout=T, what=f"a consumer on {extra}")
        queues = app.control.inspect([w.node], timeout=5).active_queues()[w.node]
        assert sorted(q["name"] for q in queues) == sorted([w.queue, extra])
        assert w.send("gocelery.add", args=[2, 2], queue=extra).get(timeout=T) == 4

        assert control(app, w, "cancel_consumer", queue=extra) == {"ok": f"no longer consuming from {extra}"}
        wait_for(lambda: consuming(app, w, extra) == 0, timeout=T, what=f"no consumer on {extra}")
        left = w.send("gocelery.add", args=[3, 3], queue=extra)
        # The worker still serves its own queue; the task sent to the
        # cancelled one stays there.
        assert w.send("gocelery.add", args=[1, 1]).get(timeout=T) == 2
        assert queue_depth(app, extra) == 1 and left.state == "PENDING"
        queues = app.control.inspect([w.node], timeout=5).active_queues()[w.node]
        assert [q["name"] for q in queues] == [w.queue]
    finally:
        delete_queue(app, extra)


def test_time_limit(kind, start_worker, app, request):
    if kind == "py":
        # Celery 5.7's prefork worker reads a task's time limits once, when
        # it builds the task's request class at start (create_request_cls):
        # time_limit changes the task's attribute (registered shows it) but
        # not the limit the pool applies, so the sleep completes. gocelery
        # applies it to the runs that start after the command. Strict: if
        # Celery starts applying it, this turns into a failure to revisit.
        request.node.add_marker(pytest.mark.xfail(reason="Celery's time_limit does not reach the prefork pool",
                                                  strict=True))
    w = start_worker(kind)
    assert control(app, w, "time_limit", task_name="gocelery.nope", hard=1) == {"error": "unknown task"}
    assert control(app, w, "time_limit", task_name="gocelery.sleep", hard=1, soft=None) == \
        {"ok": "time limits set successfully"}
    # Shown by registered, as the task's attribute now.
    registered = app.control.inspect([w.node], timeout=5).registered("time_limit")[w.node]
    assert "gocelery.sleep [time_limit=1]" in registered
    r = w.send("gocelery.sleep", args=[3])
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=T)


def test_pool_grow_and_shrink(kind, start_worker, app):
    w = start_worker(kind, concurrency=2)

    def processes():
        return len(stats(app, w)["pool"]["processes"])

    assert processes() == 2
    assert control(app, w, "pool_grow", n=2) == {"ok": "pool will grow"}
    wait_for(lambda: processes() == 4, timeout=T, what="four pool processes")
    if kind == "go":
        # Python's prefork keeps reporting the -c it started with as
        # max-concurrency (TaskPool.limit); gocelery reports the runners now.
        s = stats(app, w)
        assert s["pool"]["max-concurrency"] == 4 and s["prefetch_count"] == 4 * 4
    assert control(app, w, "pool_shrink", n=3) == {"ok": "pool will shrink"}
    wait_for(lambda: processes() == 1, timeout=T, what="one pool process")
    # Still serving with what is left.
    assert w.send("gocelery.add", args=[2, 3]).get(timeout=T) == 5
    assert control(app, w, "pool_grow") == {"ok": "pool will grow"}
    wait_for(lambda: processes() == 2, timeout=T, what="two pool processes")


def test_autoscale(kind, start_worker, app):
    w = start_worker(kind, "--autoscale", "4,1")
    s = stats(app, w)
    assert s["autoscaler"]["max"] == 4 and s["autoscaler"]["min"] == 1
    refused = "is not supported with autoscale. Adjust autoscale range instead."
    assert control(app, w, "pool_grow", n=1) == {"error": f"pool_grow {refused}"}
    assert control(app, w, "pool_shrink", n=1) == {"error": f"pool_shrink {refused}"}
    assert control(app, w, "autoscale", max=3, min=2) == {"ok": "autoscale now max=3 min=2"}
    a = stats(app, w)["autoscaler"]
    assert (a["max"], a["min"]) == (3, 2) and isinstance(a["current"], int) and isinstance(a["qty"], int)
    wait_for(lambda: len(stats(app, w)["pool"]["processes"]) == 2, timeout=T, what="the pool at its new minimum")
    assert w.send("gocelery.add", args=[1, 2]).get(timeout=T) == 3


def test_autoscale_and_pool_restart_refused(worker, app):
    assert control(app, worker, "autoscale", max=4, min=1) == {"error": "ValueError('Autoscale not enabled')"}
    assert control(app, worker, "pool_restart", reload=False) == {"error": "ValueError('Pool restarts not enabled')"}


def test_registered_task_info(worker, app):
    insp = app.control.inspect([worker.node], timeout=5)
    names = ["gocelery.add", "gocelery.autoretry", "gocelery.echo", "gocelery.fail", "gocelery.flaky",
             "gocelery.limited", "gocelery.noop", "gocelery.progress", "gocelery.request", "gocelery.sleep",
             "gocelery.xsum"]
    assert insp.registered()[worker.node] == [n + " [rate_limit=5/s]" if n == "gocelery.limited" else n
                                              for n in names]
    items = insp.registered("rate_limit", "max_retries", "acks_late", "serializer", "_private", "nosuch")[worker.node]
    rest = "max_retries=3 acks_late=False serializer=json"
    assert items == [f"{n} [rate_limit=5/s {rest}]" if n == "gocelery.limited" else f"{n} [{rest}]" for n in names]
    backoff = insp.registered("retry_backoff", "retry_backoff_max", "retry_jitter")[worker.node]
    assert "gocelery.autoretry [retry_backoff=1 retry_backoff_max=2 retry_jitter=False]" in backoff


def test_active_pid_and_query_scheduled(kind, start_worker, app):
    w = start_worker(kind, concurrency=1)
    busy = w.send("gocelery.sleep", args=[3])
    later = w.send("gocelery.add", args=[3, 4], countdown=60)
    insp = app.control.inspect([w.node], timeout=2)
    active = wait_for(lambda: (insp.active() or {}).get(w.node), timeout=T, what="the active task")
    # The pid of the process running the task: a prefork child in Python,
    # the worker itself in Go (its runners are goroutines).
    assert isinstance(active[0]["worker_pid"], int) and isinstance(active[0]["time_start"], float)

    def both():
        q = (insp.query_task([busy.id, later.id]) or {}).get(w.node, {})
        return len(q) == 2 and q

    q = wait_for(both, timeout=T, what="query_task to know both tasks")
    state, info = q[busy.id]
    assert state == "active" and isinstance(info["worker_pid"], int) and isinstance(info["time_start"], float)
    state, info = q[later.id]
    assert state == "scheduled" and info["worker_pid"] is None and info["time_start"] is None
    assert busy.get(timeout=T) == 3
    app.control.revoke(later.id, destination=[w.node])


def test_stats_rusage_and_pool(worker, app):
    s = stats(app, worker)
    assert set(s["rusage"]) == set(RUSAGE_FIELDS)
    assert all(isinstance(s["rusage"][k], (int, float)) for k in RUSAGE_FIELDS)
    # utime may still be 0.0 in a worker that has done little: Linux
    # samples it at scheduler ticks.
    assert isinstance(s["rusage"]["utime"], float) and isinstance(s["rusage"]["stime"], float)
    assert s["rusage"]["maxrss"] > 0
    pool = s["pool"]
    # The implementation names differ (celery.concurrency.prefork:TaskPool,
    # gocelery:goroutines); the shape Flower and exporters read is the same.
    assert isinstance(pool["implementation"], str)
    assert isinstance(pool["max-concurrency"], int) and pool["max-concurrency"] >= 1
    assert len(pool["processes"]) == pool["max-concurrency"]
    assert all(isinstance(p, int) for p in pool["processes"])
    assert pool["max-tasks-per-child"] == "N/A" and pool["put-guarded-by-semaphore"] is False
    assert list(pool["timeouts"]) == [0, 0]


def test_heartbeat(kind, start_worker, app):
    w = start_worker(kind, "-E")
    # Without a reply asked for (app.control.heartbeat's default) none
    # comes; asked for one, the reply is None.
    assert app.control.heartbeat(destination=[w.node]) is None
    assert control(app, w, "heartbeat") is None
    with app.connection() as conn:
        drain, events = collect(app, conn)
        app.control.heartbeat(destination=[w.node])
        # The periodic heartbeats say freq 2.0; the one asked for, 5.
        drain_until(drain, events, lambda evs: any(
            e["type"] == "worker-heartbeat" and e["hostname"] == w.node and e["freq"] == 5 for e in evs))


def test_report_and_memory(worker, app):
    report = control(app, worker, "report")
    assert set(report) == {"ok"} and report["ok"].startswith("\nsoftware -> ")
    assert "\nplatform -> system:" in report["ok"] and f"\nsettings -> transport:{'redis' if ON_REDIS else 'amqp'} results:" in report["ok"]
    # Python answers None without psutil installed (as in this venv);
    # gocelery samples its RSS as Celery does with psutil ("10.5MB").
    sample = control(app, worker, "memsample")
    assert sample is None or re.fullmatch(r"\d+(\.\d+)?(b|KB|MB|GB)", sample)
    assert isinstance(control(app, worker, "memdump"), str)


def test_retried_event_exception(kind, start_worker, app):
    w = start_worker(kind, "-E")
    with app.connection() as conn:
        drain, events = collect(app, conn)
        r = w.send("gocelery.flaky", args=[1])
        assert r.get(timeout=T) == 1
        drain_until(drain, events, lambda evs: any(
            e["type"] == "task-retried" and e.get("uuid") == r.id for e in evs))
    retried = [e for e in events if e["type"] == "task-retried" and e.get("uuid") == r.id][0]
    assert retried["exception"] == "RuntimeError('flaky')"


def test_revoke_by_stamped_headers(kind, start_worker, app):
    w = start_worker(kind)
    tag = uuid.uuid4().hex[:8]
    revoked = w.send("gocelery.add", args=[1, 1], countdown=4, stamped_headers=["mtask_id"], mtask_id=f"m-{tag}")
    other = w.send("gocelery.add", args=[2, 2], countdown=4, stamped_headers=["mtask_id"], mtask_id=f"o-{tag}")
    plain = w.send("gocelery.add", args=[3, 3], countdown=4)
    insp = app.control.inspect([w.node], timeout=2)
    wait_for(lambda: len((insp.scheduled() or {}).get(w.node, [])) == 3, timeout=T, what="the three held")
    reply = control(app, w, "revoke_by_stamped_headers", headers={"mtask_id": f"m-{tag}"})
    assert reply == {"ok": f"headers {{'mtask_id': 'm-{tag}'}} flagged as revoked, but not terminated"}
    assert control(app, w, "revoke_by_stamped_headers", headers=[f"none=x{tag}"], terminate=True) == \
        {"ok": f"headers {{'none': 'x{tag}'}} were not terminated"}
    assert other.get(timeout=T) == 4 and plain.get(timeout=T) == 6
    wait_for(lambda: revoked.state == "REVOKED", timeout=T, what="the stamped task revoked")
    # With terminate, a running task stamped so is terminated.
    running = w.send("gocelery.sleep", args=[30], stamped_headers=["mtask_id"], mtask_id=f"r-{tag}")
    wait_for(lambda: [t["id"] for t in (insp.active() or {}).get(w.node, [])] == [running.id], timeout=T,
             what="the stamped task running")
    reply = control(app, w, "revoke_by_stamped_headers", headers={"mtask_id": [f"r-{tag}", "x"]}, terminate=True)
    assert reply == {"ok": f"headers defaultdict(<class 'set'>, {{'mtask_id': {{'r-{tag}'}}}}) revoked"}
    wait_for(lambda: running.state == "REVOKED", timeout=T, what="the running stamped task terminated")


def test_revoke_terminate_reply(worker, app):
    r = worker.send("gocelery.sleep", args=[30])
    insp = app.control.inspect([worker.node], timeout=2)
    wait_for(lambda: r.id in [t["id"] for t in (insp.active() or {}).get(worker.node, [])], timeout=T,
             what="the task running")
    assert control(app, worker, "revoke", task_id=[r.id], terminate=True) == {"ok": f"terminate: {r.id}"}
    wait_for(lambda: r.state == "REVOKED", timeout=T, what="the task terminated")
    assert control(app, worker, "revoke", task_id=["nope"], terminate=True) == {"ok": "terminate: tasks unknown"}


def test_matchers_and_unknown_command(worker, app):
    # kombu's matchers: glob (fnmatch) and pcre (re.match).
    glob = app.control.inspect(timeout=5, limit=1, pattern=worker.node.split("@")[0] + "@*", matcher="glob").ping()
    assert glob == {worker.node: {"ok": "pong"}}
    # re.match anchors at the start only: the node's name before "@" is enough.
    pcre = app.control.broadcast("ping", reply=True, timeout=5, limit=1,
                                 pattern=re.escape(worker.node.split("@")[0]), matcher="pcre")
    assert pcre == [{worker.node: {"ok": "pong"}}]
    # An unknown command: kombu's handler lookup raises KeyError.
    assert control(app, worker, "nosuch") == {"error": "KeyError('nosuch')"}


def test_dump_aliases(worker, app):
    assert control(app, worker, "dump_tasks") == control(app, worker, "registered")
    assert control(app, worker, "dump_revoked") == control(app, worker, "revoked")
