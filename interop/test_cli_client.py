"""The producer side of the gocelery binary: `gocelery call`, `result`,
`inspect`, `control` and `status` against real RabbitMQ, Redis and Python
Celery 5.7, each test run against the gocelery worker [go] and the Python
worker [py]: a Go-only team steers both kinds the same way."""
import json
import os
import subprocess
import sys
import time

import pytest
from celery.exceptions import TaskRevokedError

from conftest import BACKEND, BROKER, HERE, ROOT, wait_for

T = 30
CELERY = [sys.executable, "-m", "celery"]


def gocelery_bin():
    return os.environ.get("GOCELERY_BIN") or os.path.join(ROOT, ".build", "gocelery")


def gocelery(*args, timeout=60, env=None):
    """Runs the gocelery binary with the suite's broker and backend in the
    environment; returns the CompletedProcess (text)."""
    e = dict(os.environ, CELERY_BROKER_URL=BROKER, CELERY_RESULT_BACKEND=BACKEND)
    e.update(env or {})
    return subprocess.run([gocelery_bin(), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=e)


def celery_cli(*args, timeout=60):
    """Runs Python's `celery` command line the same way, for comparison."""
    env = dict(os.environ, CELERY_BROKER_URL=BROKER, CELERY_RESULT_BACKEND=BACKEND)
    return subprocess.run([*CELERY, "-b", BROKER, "--result-backend", BACKEND, *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=HERE)


def lines(p):
    return p.stdout.splitlines()


def test_call_wait_prints_the_result(worker, app):
    p = gocelery("call", "gocelery.add", "--args", "[2,3]", "--queue", worker.queue, "--wait", "--timeout", T)
    assert p.returncode == 0, p.stderr
    task_id, value = lines(p)
    assert value == "5"
    # Python reads what the Go client sent and the worker stored.
    assert app.AsyncResult(task_id).get(timeout=T) == 5


def test_call_wait_failure_exits_1(worker):
    p = gocelery("call", "gocelery.fail", "--args", '["ValueError", "boom"]', "--queue", worker.queue,
                 "--wait", "--timeout", T)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert lines(p)[-1] == "ValueError: boom"
    p = gocelery("result", lines(p)[0], "--traceback")
    assert p.returncode == 1 and "boom" in p.stdout


def test_call_options(worker, app):
    """kwargs, msgpack, countdown and expires reach the worker as Python's
    send_task would send them."""
    p = gocelery("call", "gocelery.echo", "--args", '["héllo", 9007199254740993, 1.5, null]',
                 "--kwargs", '{"k": {"n": [true]}}', "--serializer", "msgpack", "--countdown", "0.5",
                 "--expires", "60", "--queue", worker.queue, "--wait", "--timeout", T, "--json")
    assert p.returncode == 0, p.stderr
    first, last = json.loads(lines(p)[0]), json.loads(lines(p)[-1])
    want = {"args": ["héllo", 9007199254740993, 1.5, None], "kwargs": {"k": {"n": [True]}}}
    assert last["status"] == "SUCCESS" and last["result"] == want and last["task_id"] == first["task_id"]
    assert app.AsyncResult(first["task_id"]).get(timeout=T) == want


def test_result_json_of_a_task_python_sent(worker):
    r = worker.send("gocelery.add", args=[2, 3])
    assert r.get(timeout=T) == 5
    p = gocelery("result", r.id, "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["task_id"] == r.id and doc["status"] == "SUCCESS" and doc["result"] == 5
    assert doc["traceback"] is None and doc["date_done"]
    p = gocelery("result", r.id)
    assert (p.returncode, p.stdout) == (0, "5\n")

    bad = worker.send("gocelery.fail", args=["KeyError", "nope"])
    with pytest.raises(KeyError):
        bad.get(timeout=T)
    p = gocelery("result", bad.id, "--json")
    assert p.returncode == 1
    doc = json.loads(p.stdout)
    assert doc["status"] == "FAILURE" and doc["result"]["exc_type"] == "KeyError"
    assert gocelery("result", bad.id).stdout == "KeyError: 'nope'\n"


def test_result_wait_shows_progress(worker):
    r = worker.send("gocelery.progress", args=[5, 0.3])
    p = gocelery("result", r.id, "--wait", "--timeout", T)
    assert p.returncode == 0, p.stderr
    out = lines(p)
    assert out[-1] == "5"
    progress = [line for line in out[:-1] if line.startswith("PROGRESS ")]
    assert progress and progress == out[:-1], out
    assert json.loads(progress[-1][len("PROGRESS "):]) == {"current": 5, "total": 5}


def test_result_pending_exits_3(worker):
    p = gocelery("result", "no-such-task-" + worker.queue)
    assert (p.returncode, p.stdout) == (3, "PENDING\n")


def test_inspect_ping_as_celery_prints_it(worker):
    p = gocelery("inspect", "ping", "-d", worker.node)
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"->  {worker.node}: OK\n        pong\n\n1 node online.\n"
    # Byte for byte what `celery inspect ping` prints.
    c = celery_cli("inspect", "ping", "-d", worker.node)
    assert c.returncode == 0, c.stderr
    assert p.stdout == c.stdout
    p = gocelery("inspect", "ping", "-d", worker.node, "--json")
    assert json.loads(p.stdout) == {worker.node: {"ok": "pong"}}
    assert p.stdout == celery_cli("inspect", "ping", "-d", worker.node, "--json").stdout


@pytest.mark.parametrize("command", ["registered", "active_queues", "stats"])
def test_inspect_views(worker, command):
    p = gocelery("inspect", command, "-d", worker.node, "--json")
    assert p.returncode == 0, p.stderr
    replies = json.loads(p.stdout)
    assert list(replies) == [worker.node]
    reply = replies[worker.node]
    if command == "registered":
        assert "gocelery.add" in reply
    elif command == "active_queues":
        assert [q["name"] for q in reply] == [worker.queue]
    else:
        assert reply["pool"]["max-concurrency"] >= 1 and "total" in reply
    human = gocelery("inspect", command, "-d", worker.node)
    assert human.returncode == 0 and human.stdout.startswith(f"->  {worker.node}: OK\n")
    if command == "registered":
        assert "    * gocelery.add\n" in human.stdout
        # The list as `celery inspect registered` prints it.
        assert human.stdout == celery_cli("inspect", "registered", "-d", worker.node).stdout


def test_status_lists_the_worker(worker):
    p = gocelery("status")
    assert p.returncode == 0, p.stderr
    assert f"->  {worker.node}: OK\n" in p.stdout and " online.\n" in p.stdout


def test_control_rate_limit(worker):
    try:
        p = gocelery("control", "rate_limit", "gocelery.limited", "10/s", "-d", worker.node)
        assert p.returncode == 0, p.stderr
        assert p.stdout == f"->  {worker.node}: OK\n        new rate limit set successfully\n"
        reg = gocelery("inspect", "registered", "-d", worker.node)
        assert "gocelery.limited [rate_limit=10/s]" in reg.stdout
        p = gocelery("control", "rate_limit", "no.such.task", "1/s", "-d", worker.node)
        assert p.returncode == 0 and f"{worker.node}: ERROR" in p.stdout
    finally:
        # The worker serves the whole session: put the task's own limit back.
        gocelery("control", "rate_limit", "gocelery.limited", "5/s", "-d", worker.node)


def test_control_revoke_prevents_a_countdown_task(worker, app):
    p = gocelery("call", "gocelery.add", "--args", "[1, 1]", "--countdown", "2", "--queue", worker.queue)
    assert p.returncode == 0, p.stderr
    task_id = p.stdout.strip()
    # The worker holds it for its countdown.
    wait_for(lambda: task_id in gocelery("inspect", "scheduled", "-d", worker.node).stdout, timeout=T,
             what="the task among the scheduled")
    p = gocelery("control", "revoke", task_id, "-d", worker.node)
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"->  {worker.node}: OK\n        tasks {{'{task_id}'}} flagged as revoked\n"
    assert task_id in gocelery("inspect", "revoked", "-d", worker.node).stdout
    time.sleep(3)  # past the countdown: the task would have run by now
    r = app.AsyncResult(task_id)
    assert r.state == "REVOKED"
    with pytest.raises(TaskRevokedError):
        r.get(timeout=T)
    p = gocelery("result", task_id)
    assert p.returncode == 1 and p.stdout == "celery.exceptions.TaskRevokedError: revoked\n"


def test_no_reply_and_misconfiguration(worker):
    p = gocelery("inspect", "ping", "-d", "nobody@nowhere", "-t", "0.3")
    assert p.returncode == 69 and "no nodes replied" in p.stderr
    p = gocelery("inspect", "ping", "-d", worker.node, "-b", "amqp://guest:Secr3tPw@127.0.0.1:5672//")
    assert p.returncode == 1 and p.stdout == ""
    assert "refused the login" in p.stderr and "-b/--broker" in p.stderr and "Secr3tPw" not in p.stderr
    p = gocelery("result", "x", "--result-backend", "redis://127.0.0.1:1/0", timeout=30)
    assert p.returncode == 1 and "--result-backend" in p.stderr
