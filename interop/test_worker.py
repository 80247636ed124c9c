"""Python Celery 5.7 sends, a worker runs, Python reads the result: every
conformance task, both serializers, compression, protocol v1, failures,
unknown tasks and garbage. Each test runs against the gocelery binary [go]
and the Python twin [py]."""
import uuid

import pytest
from celery import chain, group
from celery.exceptions import NotRegistered, TimeLimitExceeded
from kombu import Connection, Exchange, Producer

from conftest import BROKER, make_app, queue_depth, wait_for

T = 30  # seconds to wait for a result

BIG = 2**53 + 1
HUGE = 2**64 + 5


@pytest.mark.parametrize("args,kwargs,want", [
    ([2, 3], None, 5),
    (None, {"x": 2, "y": 3}, 5),
    ([2], {"y": 3}, 5),
    ([BIG, 2], None, 2**53 + 3),
    ([HUGE, HUGE], None, 2 * HUGE),
    ([-HUGE, 1], None, -HUGE + 1),
    ([1.5, 2], None, 3.5),
    ([2, 0.25], None, 2.25),
])
def test_add(worker, args, kwargs, want):
    got = worker.send("gocelery.add", args=args, kwargs=kwargs).get(timeout=T)
    assert got == want
    assert type(got) is type(want)


@pytest.mark.parametrize("args,kwargs", [
    (["1", 2], None),
    ([True, 2], None),
    ([None, 2], None),
    ([1], None),
    ([1, 2, 3], None),
    ([1], {"z": 2}),
])
def test_add_type_errors(worker, args, kwargs):
    r = worker.send("gocelery.add", args=args, kwargs=kwargs)
    with pytest.raises(TypeError):
        r.get(timeout=T)
    assert r.state == "FAILURE"


ECHO_ARGS = [
    "héllo ✓ 日本 🚀", "", 0, -1, BIG, 1.25, -0.0, True, False, None,
    [1, [2, [3, []]]], {"nested": {"list": [1, "two", None], "empty": {}}},
]
ECHO_KWARGS = {"ünï": "cödé", "n": None, "big": BIG, "f": 3.5, "l": [], "d": {"a": [True]}}


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
@pytest.mark.parametrize("compression", [None, "zlib", "bzip2"])
def test_echo_roundtrip(worker, serializer, compression):
    args = list(ECHO_ARGS)
    if serializer == "json":
        args.append(HUGE)  # msgpack cannot carry integers past 64 bits
    r = worker.send("gocelery.echo", args=args, kwargs=ECHO_KWARGS,
                    serializer=serializer, compression=compression)
    got = r.get(timeout=T)
    assert got == {"args": args, "kwargs": ECHO_KWARGS}
    assert [type(v) for v in got["args"]] == [type(v) for v in args]


def test_echo_empty(worker):
    assert worker.send("gocelery.echo").get(timeout=T) == {"args": [], "kwargs": {}}


@pytest.mark.parametrize("exc_type,want", [
    ("ValueError", ValueError), ("KeyError", KeyError), ("TypeError", TypeError),
    ("RuntimeError", RuntimeError), ("ZeroDivisionError", ZeroDivisionError),
    ("IndexError", IndexError), ("LookupError", LookupError), ("NoSuchError", RuntimeError),
])
def test_fail_raises_python_exception(worker, exc_type, want):
    r = worker.send("gocelery.fail", args=[exc_type, "bad ✗"])
    with pytest.raises(want) as ei:
        r.get(timeout=T)
    assert type(ei.value) is want
    assert ei.value.args == ("bad ✗",)
    assert r.state == "FAILURE"
    assert r.traceback  # the worker says where it failed


def test_xsum(worker):
    assert worker.send("gocelery.xsum", args=[[1, 2, BIG]]).get(timeout=T) == 3 + BIG
    assert worker.send("gocelery.xsum", args=[[]]).get(timeout=T) == 0
    assert worker.send("gocelery.xsum", args=[[1, 0.5]]).get(timeout=T) == 1.5
    with pytest.raises(TypeError):
        worker.send("gocelery.xsum", args=[[1, "x"]]).get(timeout=T)


def test_noop(worker):
    r = worker.send("gocelery.noop")
    assert r.get(timeout=T) is None
    assert r.state == "SUCCESS"


def test_request_context(worker):
    tid = str(uuid.uuid4())
    got = worker.send("gocelery.request", task_id=tid).get(timeout=T)
    assert got == {
        "id": tid, "root_id": tid, "parent_id": None, "group": None, "retries": 0,
        "hostname": worker.node, "routing_key": worker.queue,
    }


def test_sleep(worker):
    assert worker.send("gocelery.sleep", args=[0.1]).get(timeout=T) == 0.1
    assert worker.send("gocelery.sleep", args=[0]).get(timeout=T) == 0


def test_unknown_task(worker):
    r = worker.send("gocelery.no_such_task", args=[1])
    with pytest.raises(NotRegistered):
        r.get(timeout=T)
    # The worker keeps serving and the message is gone, not requeued.
    assert worker.send("gocelery.add", args=[1, 1]).get(timeout=T) == 2
    assert queue_depth(worker.app, worker.queue) == 0
    assert worker.alive()


def test_protocol_v1(worker):
    v1 = make_app("interop-v1", task_protocol=1)
    try:
        r = v1.send_task("gocelery.add", args=[BIG], kwargs={"y": 2}, queue=worker.queue)
        assert r.get(timeout=T) == BIG + 2
        r = v1.send_task("gocelery.echo", args=["v1 ✓"], kwargs={"k": [1]}, queue=worker.queue)
        assert r.get(timeout=T) == {"args": ["v1 ✓"], "kwargs": {"k": [1]}}
    finally:
        v1.close()


def publish_raw(queue, body, headers, content_type="application/json", content_encoding="utf-8"):
    with Connection(BROKER) as conn:
        Producer(conn.default_channel).publish(
            body, routing_key=queue, exchange="", headers=headers,
            content_type=content_type, content_encoding=content_encoding, serializer=None)


@pytest.mark.parametrize("case", ["bad-json", "pickle", "unknown-type", "no-headers", "bad-embed"])
def test_garbage_then_good(worker, case):
    tid = str(uuid.uuid4())
    headers = {"lang": "py", "task": "gocelery.add", "id": tid, "root_id": tid,
               "parent_id": None, "group": None, "retries": 0, "eta": None, "expires": None,
               "timelimit": [None, None], "argsrepr": "()", "kwargsrepr": "{}", "origin": "x"}
    body, ct = b'[[1, 2], {}, {"callbacks"', "application/json"
    if case == "pickle":
        body, ct = b"\x80\x04\x95\x00", "application/x-python-serialize"
    elif case == "unknown-type":
        body, ct = b"<xml/>", "application/xml"
    elif case == "no-headers":
        body, headers = b"[1, 2, 3]", {}
    elif case == "bad-embed":
        body = b'[[1, 2], {}, {"callbacks": 7, "errbacks": null, "chain": null, "chord": null}]'
    publish_raw(worker.queue, body, headers, content_type=ct)
    # The worker survives and serves the next task.
    assert worker.send("gocelery.add", args=[20, 22]).get(timeout=T) == 42
    assert worker.alive()
    # Nothing was requeued.
    wait_for(lambda: queue_depth(worker.app, worker.queue) == 0, what="queue to drain")
    if worker.kind == "go" and case != "no-headers":
        # Better than Celery: the id was readable, so the client learns why.
        r = worker.app.AsyncResult(tid)
        wait_for(lambda: r.state == "FAILURE", what="FAILURE stored for the garbage message")
        assert isinstance(r.result, Exception)
        assert str(r.result)


def test_link_callback(worker):
    r = worker.send("gocelery.add", args=[2, 3], link=worker.signature("gocelery.add", args=(10,)))
    assert r.get(timeout=T) == 5
    child = wait_for(lambda: r.children, what="child result")[0]
    assert child.get(timeout=T) == 15


def test_chain(worker):
    c = chain(
        worker.signature("gocelery.add", args=(1, 2)),
        worker.signature("gocelery.add", args=(3,)),
        worker.signature("gocelery.echo", args=("tail",)),
    )
    r = c.apply_async()
    assert r.get(timeout=T) == {"args": [6, "tail"], "kwargs": {}}
    assert r.parent.get(timeout=T) == 6
    assert r.parent.parent.get(timeout=T) == 3


def test_chain_failure_stops(worker):
    c = chain(
        worker.signature("gocelery.fail", args=("KeyError", "k")),
        worker.signature("gocelery.add", args=(3,)),
    )
    r = c.apply_async()
    with pytest.raises(KeyError):
        r.parent.get(timeout=T)
    # The next step never runs; Celery marks it failed with the same error.
    with pytest.raises(KeyError):
        r.get(timeout=T)


def test_group(worker):
    g = group(worker.signature("gocelery.add", args=(i, i)) for i in range(10))
    r = g.apply_async()
    assert r.get(timeout=T) == [2 * i for i in range(10)]


def test_progress_states(worker):
    r = worker.send("gocelery.progress", args=[3, 0.4])
    seen = set()

    def progressed():
        if r.state == "PROGRESS":
            seen.add(r.info["current"])
            assert r.info["total"] == 3
        return len(seen) >= 2

    wait_for(progressed, timeout=T, interval=0.02, what="PROGRESS states")
    assert r.get(timeout=T) == 3
    assert r.state == "SUCCESS"


@pytest.mark.parametrize("failures,want", [(0, 0), (2, 2), (3, 3)])
def test_flaky_retries(worker, failures, want):
    assert worker.send("gocelery.flaky", args=[failures]).get(timeout=T) == want


def test_flaky_exhausts_retries(worker):
    r = worker.send("gocelery.flaky", args=[10])
    with pytest.raises(RuntimeError, match="flaky"):
        r.get(timeout=T)
    assert r.state == "FAILURE"


def test_soft_time_limit(worker):
    r = worker.send("gocelery.sleep", args=[20], soft_time_limit=1)
    with pytest.raises(Exception) as ei:
        r.get(timeout=T)
    assert type(ei.value).__name__ == "SoftTimeLimitExceeded"


def test_hard_time_limit(worker):
    r = worker.send("gocelery.sleep", args=[20], time_limit=1)
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=T)
    assert worker.send("gocelery.add", args=[1, 2]).get(timeout=T) == 3


def test_echo_kombu_tagged_types(worker):
    """kombu's JSON carries datetime, date, time, Decimal, UUID and bytes
    as tagged values; they come back as the same Python types."""
    import datetime as dt
    from decimal import Decimal
    values = [
        dt.datetime(2026, 11, 25, 12, 30, 1, 123456, tzinfo=dt.timezone.utc),
        dt.datetime(2026, 11, 25, 12, 30, 1, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
        dt.datetime(2026, 11, 25, 12, 30, 1, 5),
        dt.date(2026, 2, 28),
        dt.time(23, 59, 58, 999),
        Decimal("3.14159265358979323846264338327950288"),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        b"\x00\xffbytes",
    ]
    got = worker.send("gocelery.echo", args=values).get(timeout=T)
    assert got["args"] == values
    assert [type(v) for v in got["args"]] == [type(v) for v in values]
