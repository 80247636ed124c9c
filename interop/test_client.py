"""The Go client (package client) against real workers: interop/goclient
sends every conformance task with every apply_async option, Python's
AsyncResult reads what the worker stored, on the gocelery binary [go] and
the Python worker [py] alike; the other way round, Python sends and the
Go AsyncResult reads; and canvases built in Go run across a Go and a
Python worker at once."""
import json
import os
import subprocess
import time
import uuid

import pytest
from celery.exceptions import SoftTimeLimitExceeded, TaskRevokedError, TimeLimitExceeded

from conftest import BACKEND, BROKER, ROOT, wait_for

T = 30
BIG53 = 2**53 + 1
GOCLIENT = os.path.join(ROOT, ".build", "goclient")


@pytest.fixture(scope="session")
def goclient():
    """Builds interop/goclient once per session; returns a runner that
    parses its JSON output."""
    subprocess.run(["go", "build", "-o", GOCLIENT, "./interop/goclient"], cwd=ROOT, check=True)
    env = dict(os.environ, CELERY_BROKER_URL=BROKER, CELERY_RESULT_BACKEND=BACKEND)

    def run(*args, timeout=90):
        p = subprocess.run([GOCLIENT, *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=timeout)
        assert p.returncode == 0, f"goclient {' '.join(map(str, args))} failed:\n{p.stderr}"
        return json.loads(p.stdout)

    return run


ECHO_ARGS = ["héllo ✓ 日本", 1.5, None, True, [1, "x"], {"k": {"n": []}}, BIG53]
ECHO_KWARGS = {"u": "日本", "n": None}
ECHO = {"args": ECHO_ARGS, "kwargs": ECHO_KWARGS}

# What each case the Go client sent must end as, on either worker:
# ("SUCCESS", value) or ("FAILURE"/"REVOKED", exception type, message).
EXPECT = {
    "add": ("SUCCESS", 5),
    "add_kwargs": ("SUCCESS", 42),
    "add_bigint": ("SUCCESS", BIG53 + 2),
    "echo": ("SUCCESS", ECHO),
    "msgpack": ("SUCCESS", ECHO),
    "zlib": ("SUCCESS", ECHO),
    "msgpack_zlib": ("SUCCESS", ECHO),
    "headers": ("SUCCESS", {"args": ["h"], "kwargs": {}}),
    "shadow": ("SUCCESS", 2),
    "priority": ("SUCCESS", 7),
    "countdown": ("SUCCESS", 2),
    "eta": ("SUCCESS", 4),
    "expires": ("SUCCESS", 10),
    "expired": ("REVOKED", TaskRevokedError, "expired"),
    "time_limit": ("FAILURE", TimeLimitExceeded, None),
    "soft_time_limit": ("FAILURE", SoftTimeLimitExceeded, None),
    "link": ("SUCCESS", 5),
    "link_error": ("FAILURE", ValueError, "boom"),
    "fail": ("FAILURE", ValueError, "bad input"),
    "sleep": ("SUCCESS", 0.1),
    "flaky": ("SUCCESS", 1),
    "progress": ("SUCCESS", 2),
    "xsum": ("SUCCESS", 6),
    "noop": ("SUCCESS", None),
    "limited": ("SUCCESS", 7),
    "autoretry": ("SUCCESS", 1),
    "exchange": ("SUCCESS", 16),
}


def outcome(app, tid):
    """A task's final outcome as Python's AsyncResult reads it."""
    r = app.AsyncResult(tid)
    try:
        value = r.get(timeout=T)
    except Exception as e:  # noqa: BLE001 - the exception is the outcome
        return (r.state, type(e), str(e) if e.args else None)
    return (r.state, value)


def check_sent(app, queue, sent):
    """Checks every case goclient sent; returns the outcomes."""
    assert set(sent) == set(EXPECT) | {"ignore_result", "request"}
    got = {}
    for name, want in EXPECT.items():
        o = outcome(app, sent[name]["id"])
        got[name] = o
        if want[0] == "SUCCESS":
            assert o == want, f"{name}: {o}"
            assert type(o[1]) is type(want[1]), name
        else:
            assert o[0] == want[0] and issubclass(o[1], want[1]), f"{name}: {o}"
            if want[2] is not None:
                assert o[2] == want[2], f"{name}: {o}"
    # countdown and eta: run a second after sending at the earliest.
    for name in ("countdown", "eta"):
        r = app.AsyncResult(sent[name]["id"])
        assert r.date_done.timestamp() - sent[name]["sent_at"] >= 0.9, name
    # link: the callback got the result first; link_error: the errback got
    # the failed task's id (an old-style, one-argument errback).
    assert app.AsyncResult(sent["link"]["callback"]).get(timeout=T) == {"args": [5, "cb"], "kwargs": {}}
    assert app.AsyncResult(sent["link_error"]["errback"]).get(timeout=T) == sent["link_error"]["id"]
    # ignore_result: nothing stored, but it ran (its callback did).
    assert app.AsyncResult(sent["ignore_result"]["callback"]).get(timeout=T) == {"args": [5, "cb"], "kwargs": {}}
    assert app.AsyncResult(sent["ignore_result"]["id"]).state == "PENDING"
    # retries and routing as the task sees them.
    req = app.AsyncResult(sent["request"]["id"]).get(timeout=T)
    tid = sent["request"]["id"]
    assert {k: v for k, v in req.items() if k != "hostname"} == {
        "id": tid, "root_id": tid, "parent_id": None, "group": None, "retries": 2, "routing_key": queue}
    got["request"] = {k: v for k, v in req.items() if k not in ("id", "root_id", "hostname", "routing_key")}
    return got


def test_go_client_sends_every_option(worker, goclient):
    sent = goclient("send", worker.queue)
    check_sent(worker.app, worker.queue, sent)
    # The Go AsyncResult reads the same outcomes Python reads.
    got = goclient("get", sent["fail"]["id"])
    assert got["state"] == "FAILURE"
    assert got["exception"]["type"] == "ValueError" and got["exception"]["message"] == "bad input"
    assert got["get_error"] == "ValueError: bad input"
    got = goclient("get", sent["expired"]["id"])
    assert got["state"] == "REVOKED" and got["is_revoked"] and got["exception"]["message"] == "expired"
    got = goclient("get", sent["add_bigint"]["id"])
    assert got["state"] == "SUCCESS" and got["result"] == BIG53 + 2 and got["get_value"] == BIG53 + 2


def test_go_client_same_results_on_both_workers(start_worker, goclient):
    """The same Go calls give the same outcomes whichever worker runs them."""
    go, py = start_worker("go"), start_worker("py")
    results = {}
    for w in (go, py):
        results[w.kind] = check_sent(w.app, w.queue, goclient("send", w.queue))
    assert results["go"] == results["py"]


def test_python_sends_go_reads(worker, goclient):
    r = worker.send("gocelery.add", args=[2, 3])
    got = goclient("get", r.id)
    assert (got["state"], got["result"], got["exception"]) == ("SUCCESS", 5, None)
    assert got["id"] == r.id and got["date_done"]

    r = worker.send("gocelery.fail", args=["ValueError", "bad ✗"])
    got = goclient("get", r.id)
    assert got["state"] == "FAILURE"
    assert got["exception"]["type"] == "ValueError"
    assert got["exception"]["module"] == "builtins"
    assert got["exception"]["message"] == "bad ✗"
    assert got["exception"]["args"] == ["bad ✗"]
    assert got["get_error"] == "ValueError: bad ✗"
    assert "ValueError" in got["traceback"]

    r = worker.send("gocelery.fail", args=["KeyError", "gone"])
    got = goclient("get", r.id)
    assert got["exception"]["type"] == "KeyError" and got["get_error"] == "KeyError: 'gone'"

    # A custom state while it runs, then the value.
    r = worker.send("gocelery.progress", args=[20, 0.1])
    wait_for(lambda: r.state == "PROGRESS", what="PROGRESS")
    got = goclient("state", r.id)
    assert got["state"] == "PROGRESS" and got["result"]["total"] == 20
    got = goclient("get", r.id)
    assert got["state"] == "SUCCESS" and got["result"] == 20

    r = worker.send("gocelery.echo", args=ECHO_ARGS, kwargs=ECHO_KWARGS, serializer="msgpack")
    assert goclient("get", r.id)["result"] == ECHO

    # Pending: nothing stored under an unknown id, Get gives up at its timeout.
    got = goclient("state", str(uuid.uuid4()))
    assert got["state"] == "PENDING" and got["result"] is None


def test_python_revoke_read_by_go(worker, goclient):
    r = worker.send("gocelery.sleep", args=[30])
    time.sleep(0.5)
    r.revoke(terminate=True)
    got = goclient("get", r.id)
    assert got["state"] == "REVOKED" and got["is_revoked"]
    assert got["exception"]["type"] == "TaskRevokedError"


def test_go_chain_across_workers(start_worker, goclient):
    go, py = start_worker("go"), start_worker("py")
    for q1, q2 in ((go.queue, py.queue), (py.queue, go.queue)):
        out = goclient("chain", q1, q2)
        assert len(out["ids"]) == 4 and out["ids"][-1] == out["id"]
        r = go.app.AsyncResult(out["id"])
        assert r.get(timeout=T) == {"args": [10, "end"], "kwargs": {}}
        steps = [go.app.AsyncResult(i).get(timeout=T) for i in out["ids"][:-1]]
        assert steps == [3, 6, 10]
        # The Go AsyncResult reads the end of the chain too.
        assert goclient("get", out["id"])["result"] == {"args": [10, "end"], "kwargs": {}}


def test_go_chord_across_workers(start_worker, goclient):
    go, py = start_worker("go"), start_worker("py")
    for body in (go, py):
        out = goclient("chord", go.queue, py.queue, body.queue)
        assert go.app.AsyncResult(out["id"]).get(timeout=T) == sum(i + 1 for i in range(8))
        members = [go.app.AsyncResult(m).get(timeout=T) for m in out["members"]]
        assert members == [i + 1 for i in range(8)]
        assert goclient("get", out["id"])["result"] == 36


def test_go_group_across_workers(start_worker, goclient):
    go, py = start_worker("go"), start_worker("py")
    out = goclient("group", go.queue, py.queue)
    assert out["join"] == [0, 2, 4, 6, 8, 10] and out["completed"] == 6
    # Python's GroupResult over the same ids agrees.
    g = go.app.GroupResult(out["id"], [go.app.AsyncResult(i) for i in out["ids"]])
    assert g.join(timeout=T) == [0, 2, 4, 6, 8, 10]
    assert g.completed_count() == 6
