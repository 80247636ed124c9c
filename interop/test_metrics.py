"""Prometheus metrics and health checks of the gocelery worker
(`--metrics-addr HOST:PORT`): Python Celery sends the tasks, the test
scrapes /metrics while and after they run and checks each counter against
what was sent, and checks /healthz and /readyz across a broker connection
loss.

These run against the gocelery worker only: a Python worker has no metrics
endpoint (celery-exporter builds its celery_* series from the task events
instead). The celery_* names and labels are celery-exporter's, so the same
dashboards read both; the gocelery_* series have no Python counterpart."""
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from celery.result import AsyncResult

from conftest import HOST, wait_for

T = 30


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_with_metrics(start_worker, **kw):
    port = free_port()
    w = start_worker("go", "--metrics-addr", f"127.0.0.1:{port}", **kw)
    return w, f"http://127.0.0.1:{port}"


def get(url):
    """(status, body) of a GET; 4xx/5xx are answers, not errors."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def parse_labels(s):
    labels, i = {}, 0
    while i < len(s):
        eq = s.index("=", i)
        key = s[i:eq].strip().lstrip(",").strip()
        j, val = eq + 2, []  # past ="
        while s[j] != '"':
            if s[j] == "\\":
                j += 1
                val.append({"n": "\n"}.get(s[j], s[j]))
            else:
                val.append(s[j])
            j += 1
        labels[key] = "".join(val)
        i = j + 1
    return labels


def scrape(base):
    """The samples of /metrics as (name, labels, value)."""
    status, text = get(base + "/metrics")
    assert status == 200, text
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        if "{" in series:
            name, rest = series.split("{", 1)
            labels = parse_labels(rest[:-1])
        else:
            name, labels = series, {}
        out.append((name, labels, float(value)))
    return out


def value(samples, metric, **labels):
    """The sum of the series of metric whose labels include labels; None if
    there is none."""
    found = [v for n, l, v in samples if n == metric and all(l.get(k) == x for k, x in labels.items())]
    return sum(found) if found else None


def wait_metrics(base, expect, what, timeout=T):
    """Polls /metrics until every (name, labels) in expect has its value."""
    last = {}

    def ok():
        samples = scrape(base)
        for (name, labels), want in expect.items():
            last[(name, labels)] = value(samples, name, **dict(labels))
        return all(last[k] == want for k, want in expect.items())

    try:
        wait_for(ok, timeout=timeout, interval=0.1, what=what)
    except AssertionError:
        wrong = {f"{n}{dict(l)}": (last.get((n, l)), want) for (n, l), want in expect.items() if last.get((n, l)) != want}
        raise AssertionError(f"{what}: (got, want) {wrong}")


def key(metric, **labels):
    return (metric, tuple(sorted(labels.items())))


def test_task_counters(app, start_worker):
    """Counters per task name and state equal what Python sent; running,
    held (ETA) tasks show in the gauges while they are there; runtime and
    queue-wait histograms count each run."""
    w, base = start_with_metrics(start_worker, concurrency=4)
    lab = {"hostname": HOST, "queue_name": w.queue}

    # The fixture's start-up noop is already counted.
    wait_metrics(base, {key("celery_task_received_total", name="gocelery.noop", **lab): 1,
                        key("celery_task_succeeded_total", name="gocelery.noop", **lab): 1}, "the start-up noop")

    # While they are there: one running task, one held until its ETA.
    sleeper = w.send("gocelery.sleep", args=[2])
    held = w.send("gocelery.echo", args=["later"], countdown=120)
    wait_metrics(base, {key("celery_worker_tasks_active", hostname=HOST): 1,
                        key("gocelery_worker_tasks_scheduled", hostname=HOST): 1,
                        key("celery_worker_up", hostname=HOST): 1}, "running and held tasks")

    adds = [w.send("gocelery.add", args=[i, i]) for i in range(5)]
    fails = [w.send("gocelery.fail", args=["ValueError", f"boom {i}"]) for i in range(3)]
    flaky = w.send("gocelery.flaky", args=[2, 0])  # two retries, then SUCCESS
    unknown = [w.send("gocelery.no_such_task", args=[i]) for i in range(2)]
    # Held until its ETA, by which time it has expired: REVOKED unrun.
    expired = w.send("gocelery.add", args=[1, 1], countdown=1.5, expires=1.0)

    assert [r.get(timeout=T) for r in adds] == [0, 2, 4, 6, 8]
    for r in fails:
        with pytest.raises(ValueError):
            r.get(timeout=T)
    assert flaky.get(timeout=T) == 2
    for r in unknown:
        wait_for(lambda: AsyncResult(r.id, app=app).state == "FAILURE", timeout=T, what="the unknown task's FAILURE")
    wait_for(lambda: AsyncResult(expired.id, app=app).state == "REVOKED", timeout=T, what="the expired task's REVOKED")
    sleeper.get(timeout=T)

    add = dict(name="gocelery.add", **lab)
    fail = dict(name="gocelery.fail", **lab)
    fl = dict(name="gocelery.flaky", **lab)
    wait_metrics(base, {
        key("celery_task_received_total", **add): 6,  # the expired one is received, then revoked
        key("celery_task_started_total", **add): 5,
        key("celery_task_succeeded_total", **add): 5,
        key("celery_task_revoked_total", **add): 1,
        key("celery_task_failed_total", **add): 0,
        key("celery_task_runtime_count", **add): 5,
        key("gocelery_task_queue_wait_seconds_count", **add): 5,
        key("celery_task_received_total", **fail): 3,
        key("celery_task_failed_total", **fail): 3,
        key("celery_task_succeeded_total", **fail): 0,
        key("celery_task_received_total", **fl): 3,  # the first try and two retries
        key("celery_task_retried_total", **fl): 2,
        key("celery_task_succeeded_total", **fl): 1,
        key("celery_task_rejected_total", name="gocelery.no_such_task", **lab): 2,
        key("celery_task_succeeded_total", name="gocelery.sleep", **lab): 1,
        key("celery_task_received_total", name="gocelery.echo", **lab): 1,
        # Across every task name: nothing counted twice or elsewhere.
        key("celery_task_rejected_total"): 2,
        key("celery_task_failed_total"): 3,
        key("celery_task_retried_total"): 2,
        key("celery_task_revoked_total"): 1,
        key("celery_task_succeeded_total"): 1 + 5 + 1 + 1,  # noop, add, flaky, sleep
        key("celery_task_received_total"): 1 + 6 + 3 + 3 + 1 + 1,  # noop add fail flaky sleep echo
        key("celery_worker_tasks_active", hostname=HOST): 0,
        key("gocelery_worker_tasks_scheduled", hostname=HOST): 1,  # the ETA task, still held
        key("gocelery_worker_concurrency", hostname=HOST): 4,
        key("gocelery_result_backend_up", hostname=HOST): 1,
        key("gocelery_result_store_errors_total", hostname=HOST): 0,
    }, "counters equal to what was sent")

    samples = scrape(base)
    # Histogram buckets are celery-exporter's (Python prometheus_client's default).
    les = sorted(float(l["le"]) for n, l, _ in samples if n == "celery_task_runtime_bucket" and l["name"] == "gocelery.add")
    assert les == [.005, .01, .025, .05, .075, .1, .25, .5, .75, 1, 2.5, 5, 7.5, 10, float("inf")]
    assert value(samples, "celery_task_runtime_bucket", le="+Inf", **add) == 5
    # One write per outcome at least: noop, sleep, 5 add, 3 fail, flaky's 2
    # RETRY and SUCCESS, 2 unknown (FAILURE), the expired add (REVOKED).
    assert value(samples, "gocelery_result_store_writes_total", hostname=HOST) >= 16
    assert held.state == "PENDING"


def broker_connection_pid(node):
    out = subprocess.run(["rabbitmqctl", "-n", "rabbit@localhost", "-q", "list_connections", "pid", "client_properties"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    for line in out.splitlines():
        if node in line:
            return line.split()[0]
    return None


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="rabbitmqctl not installed")
def test_health_across_broker_connection_loss(app, start_worker):
    """/healthz and /readyz answer 200 while the worker is connected; after
    RabbitMQ closes its connection the worker reconnects: the reconnect
    counter goes up by one, /readyz is 200 again and tasks run. (Readiness
    going 503 while the broker stays away is tested in Go, metrics package,
    with the in-memory broker: RabbitMQ cannot be made to refuse only this
    worker's reconnects.)"""
    w, base = start_with_metrics(start_worker)
    assert get(base + "/healthz")[0] == 200
    status, body = get(base + "/readyz")
    assert status == 200, body
    assert json.loads(body) == {"ready": True, "broker": "up", "result_backend": "up"}
    samples = scrape(base)
    assert value(samples, "gocelery_broker_reconnects_total", hostname=HOST) == 0
    assert value(samples, "gocelery_broker_up", hostname=HOST) == 1

    pid = wait_for(lambda: broker_connection_pid(w.node), timeout=T, what="the worker's connection")
    subprocess.run(["rabbitmqctl", "-n", "rabbit@localhost", "-q", "close_connection", pid, "interop: simulated broker loss"],
                   capture_output=True, timeout=30, check=True)

    seen = set()

    def back():
        status, _ = get(base + "/readyz")
        seen.add(status)
        reconnects = value(scrape(base), "gocelery_broker_reconnects_total", hostname=HOST)
        return status == 200 and reconnects == 1

    wait_for(back, timeout=T, interval=0.02, what="the reconnect counted and /readyz 200 again")
    assert seen <= {200, 503}, seen
    assert w.send("gocelery.add", args=[20, 22]).get(timeout=T) == 42
    assert get(base + "/healthz")[0] == 200
    assert w.alive()
