"""Flower parity: Flower 2.2 (pinned in interop/requirements.txt) watching a
gocelery worker and a Python worker side by side, both with -E, after the
same mix of tasks on each: success, keyword arguments, failure, a retry
after a countdown, a retry at once, one held for its ETA, one revoked before
its ETA, and then two long tasks still running on the worker's two slots
with a third task reserved behind them.

What Flower shows comes from its HTTP API, so the test reads that:

- the Workers page: /workers?json=1 (Celery's event state, one row a worker);
- the worker page and its tabs: /api/workers?workername=<node>&refresh=1,
  the inspect replies the tabs render (stats: Pool, Broker, Tasks, System,
  Other; active_queues: Queues; registered: Limits; conf: Config; active,
  scheduled, reserved, revoked: the task tables of the Tasks tab);
- the task pages: /api/task/info/<id> (task events), and /api/tasks;
- and the task page's Terminate button: POST /api/task/revoke/<id> with
  terminate=true, on one running task of each worker.

For every field Flower has for the Python worker, gocelery's must be there
with a value of the same shape (type, and non-empty when Python's is not);
values that are the worker's own (pid, pool implementation, clock,
timestamps, broker heartbeat) are compared by shape only. Task fields that
mean the same thing (state, name, args, kwargs, result, exception, retries,
whether there is an ETA) must be equal. Every gap is collected before the
test fails, so one run lists them all.

Everything compared is dumped to .build/interop-logs/flower-<port>.json,
Flower's log beside it. docs/flower.md has the results."""
import contextlib
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest

import conftest
from conftest import BACKEND, BROKER, LOGDIR, wait_for

T = 20
LONG = 30  # seconds the long task would run; it is revoked with terminate before teardown
pytestmark = pytest.mark.timeout(120)

# Config tab entries whose Python value describes the Python program itself:
# `include` lists the modules the Python app imports (celery.app.builtins,
# pytasks); a Go binary has no modules to import.
CONF_INHERENT = {"include"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Flower:
    """A Flower process on a free loopback port, its API open without auth
    (FLOWER_UNAUTHENTICATED_API; loopback only)."""

    def __init__(self):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        os.makedirs(LOGDIR, exist_ok=True)
        self.logpath = os.path.join(LOGDIR, f"flower-{self.port}.log")
        self.log = open(self.logpath, "wb")
        env = dict(os.environ, FLOWER_UNAUTHENTICATED_API="true")
        # Celery's options go before the command, Flower's (tornado's) after it.
        cmd = [sys.executable, "-m", "celery", "--broker", BROKER, "--result-backend", BACKEND,
               "flower", f"--port={self.port}", "--address=127.0.0.1", "--persistent=False",
               "--inspect_timeout=3000"]
        # cwd: Flower reads ./flowerconfig.py when there is one; there is none there.
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=LOGDIR)
        try:
            wait_for(self._up, timeout=30, interval=0.2, what="Flower's /healthcheck")
        except AssertionError:
            self.stop()
            raise AssertionError(f"Flower did not come up; log:\n{self.logtext()}")

    def _up(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"Flower exited with {self.proc.returncode}; log:\n{self.logtext()}")
        try:
            return self.page("/healthcheck", timeout=2)[0] == 200
        except (urllib.error.URLError, ConnectionError, socket.timeout):
            return False

    def page(self, path, timeout=15):
        """(status, body) of a GET."""
        try:
            with urllib.request.urlopen(self.base + path, timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")

    def get(self, path):
        status, body = self.page(path)
        assert status == 200, f"GET {path}: HTTP {status}: {body[:500]}"
        return json.loads(body)

    def task(self, task_id):
        """The task page's data; {} while Flower has seen no event of it."""
        status, body = self.page(f"/api/task/info/{task_id}")
        assert status in (200, 404), f"GET /api/task/info/{task_id}: HTTP {status}: {body[:500]}"
        return json.loads(body) if status == 200 else {}

    def post(self, path, **form):
        """(status, body) of a form POST, as the page's buttons send it."""
        req = urllib.request.Request(self.base + path, data=urllib.parse.urlencode(form).encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")

    def logtext(self):
        self.log.flush()
        with open(self.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace")[-6000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def flower():
    f = Flower()
    yield f
    f.stop()


@contextlib.contextmanager
def with_heartbeats():
    """conftest starts the Python worker with --without-heartbeat. Flower's
    Workers page is built from worker events (status, pid, load average,
    software), so the Python reference worker here must send them: only that
    one flag is dropped, only while its process is started."""
    real = subprocess.Popen

    def popen(cmd, *a, **kw):
        return real([c for c in cmd if c != "--without-heartbeat"], *a, **kw)

    conftest.subprocess.Popen = popen
    try:
        yield
    finally:
        conftest.subprocess.Popen = real


# -- comparing shapes ----------------------------------------------------------


def kind_of(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"  # 0 and 0.0 render alike; Celery itself mixes them
    if isinstance(v, str):
        return "str"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "dict"
    return type(v).__name__


def empty(v):
    return v is None or v == "" or v == [] or v == {}


def shape_gaps(py, go, path, gaps, skip_none=False, skip=()):
    """Appends to gaps every place where go lacks what py has: a missing key,
    another type, or empty where py is not. Dicts are compared key by key,
    lists by their first elements. skip_none: a key whose Python value is
    None is not shown by that page (the Config tab), so it is not required."""
    if empty(py):
        return
    if kind_of(py) != kind_of(go):
        gaps.append(f"{path}: Python {py!r:.150} ({kind_of(py)}), gocelery {go!r:.150} ({kind_of(go)})")
        return
    if empty(go):
        gaps.append(f"{path}: Python {py!r:.150}, gocelery empty {go!r}")
        return
    if isinstance(py, dict):
        for k, v in py.items():
            if k in skip or (skip_none and v is None):
                continue
            if k not in go:
                gaps.append(f"{path}.{k}: missing in gocelery (Python {v!r:.150})")
            elif v is None and go[k] is not None:
                pass  # a value where Python has none: more, not less
            else:
                shape_gaps(v, go[k], f"{path}.{k}", gaps)
    elif isinstance(py, list):
        shape_gaps(py[0], go[0], f"{path}[0]", gaps)


# -- the test ------------------------------------------------------------------

MIX = {  # role: (task, args, kwargs, options)
    "success": ("gocelery.add", [2, 3], None, {}),
    "kwargs": ("gocelery.echo", ["a", 1], {"k": "v", "n": [1, 2]}, {}),
    "failure": ("gocelery.fail", ["ValueError", "boom"], None, {}),
    "retry": ("gocelery.flaky", [1, 1], None, {}),  # retries once, 1 s later
    "retry-now": ("gocelery.flaky", [1, 0], None, {}),  # retries once, at once
    "eta": ("gocelery.add", [4, 5], None, {"countdown": 300}),
    "revoked": ("gocelery.add", [6, 7], None, {"countdown": 300}),
    # Sent once the others are done, to workers with two slots: both slots
    # busy, so the third is reserved (prefetched, waiting for a slot).
    "long": ("gocelery.sleep", [LONG], None, {}),
    "long2": ("gocelery.sleep", [LONG], None, {}),
    "reserved": ("gocelery.add", [8, 9], None, {}),
}
LATER = ("long", "long2", "reserved")
# The state each task is in when the test looks, and the events that must
# have reached Flower by then (a task page's timestamps).
FINAL = {"success": "SUCCESS", "kwargs": "SUCCESS", "failure": "FAILURE", "retry": "SUCCESS",
         "retry-now": "SUCCESS", "eta": "RECEIVED", "revoked": "RECEIVED",
         "long": "STARTED", "long2": "STARTED", "reserved": "RECEIVED"}
SEEN = {"success": ("received", "started", "succeeded"), "kwargs": ("received", "started", "succeeded"),
        "failure": ("received", "started", "failed"), "retry": ("received", "started", "retried", "succeeded"),
        "retry-now": ("received", "started", "retried", "succeeded"),
        "eta": ("received",), "revoked": ("received",),
        "long": ("received", "started"), "long2": ("received", "started"), "reserved": ("received",)}
# With a retry at once, the retried run's events and task-retried race in
# Python Celery too (either can reach Flower last); its state is not compared.
RACY_STATE = {"retry-now"}
# Task fields that mean the same thing on both workers.
SAME = ("state", "name", "args", "kwargs", "result", "exception", "retries")


def test_flower_parity(flower, start_worker, app):
    go = start_worker("go", "-E", concurrency=2)
    with with_heartbeats():
        py = start_worker("py", "-E", concurrency=2)
    workers = {"go": go, "py": py}

    # Flower's event receiver is live once it has seen both workers.
    def listed():
        names = {w["hostname"] for w in flower.get("/workers?json=1")["data"]}
        return {go.node, py.node} <= names

    wait_for(listed, timeout=T, interval=0.2, what="Flower to list both workers from their events")

    def send(w, roles):
        return {role: w.send(MIX[role][0], args=MIX[role][1], kwargs=MIX[role][2], **MIX[role][3])
                for role in roles}

    results = {k: send(w, [role for role in MIX if role not in LATER]) for k, w in workers.items()}
    for k, rs in results.items():
        assert rs["success"].get(timeout=T) == 5
        assert rs["kwargs"].get(timeout=T) == {"args": ["a", 1], "kwargs": {"k": "v", "n": [1, 2]}}
        assert rs["retry"].get(timeout=T) == 1 and rs["retry-now"].get(timeout=T) == 1
        with pytest.raises(ValueError):
            rs["failure"].get(timeout=T)
        app.control.revoke(rs["revoked"].id, destination=[workers[k].node])
    for k, w in workers.items():
        results[k].update(send(w, LATER))

    # Task pages: every task's events in.
    def tasks_seen():
        out = {}
        for k, rs in results.items():
            for role, r in rs.items():
                info = flower.task(r.id)
                if not all(info.get(stamp) for stamp in SEEN[role]):
                    return None
                out[(k, role)] = info
        return out

    try:
        infos = wait_for(tasks_seen, timeout=T, interval=0.2, what="Flower to see every task's events")
    except AssertionError:
        seen = {f"{k}/{role}": {s: flower.task(r.id).get(s) for s in ("state",) + SEEN[role]}
                for k, rs in results.items() for role, r in rs.items()}
        raise AssertionError(f"task events seen by Flower: {json.dumps(seen, indent=1)}")
    listing = flower.get("/api/tasks")

    # Worker pages: the long tasks active, one reserved, the ETA one
    # scheduled, one revoked.
    def worker_page(w, ids):
        def ready():
            info = flower.get(f"/api/workers?workername={urllib.parse.quote(w.node)}&refresh=1").get(w.node) or {}
            complete = all(m in info for m in ("stats", "active_queues", "registered", "conf",
                                               "active", "scheduled", "reserved", "revoked"))
            return (complete and {ids["long"], ids["long2"]} <= {t.get("id") for t in info["active"]}
                    and ids["reserved"] in {t.get("id") for t in info["reserved"]}
                    and ids["eta"] in {s.get("request", {}).get("id") for s in info["scheduled"]}
                    and ids["revoked"] in info["revoked"] and info)
        return wait_for(ready, timeout=T, interval=0.3, what=f"Flower's worker page for {w.node}")

    pages = {k: worker_page(w, {role: r.id for role, r in results[k].items()}) for k, w in workers.items()}
    everyone = flower.get("/api/workers?refresh=1")

    # Workers page: both online, the counters in.
    def rows():
        data = {w["hostname"]: w for w in flower.get("/workers?json=1")["data"]}
        r = {k: data.get(w.node) for k, w in workers.items()}
        done = all(v and v.get("status") and v.get("task-received", 0) >= len(MIX) + 2
                   and v.get("task-succeeded", 0) >= 4 and v.get("task-failed", 0) >= 1
                   and v.get("task-retried", 0) >= 2 for v in r.values())
        return done and r

    try:
        row = wait_for(rows, timeout=T, interval=0.3, what="the Workers page to show both workers' counters")
    except AssertionError:
        raise AssertionError(f"Workers page data: {json.dumps(flower.get('/workers?json=1'), indent=1)[:4000]}")

    # The HTML pages render (no error page) for both.
    html = {f"/worker/{urllib.parse.quote(w.node)}": w.node for w in workers.values()}
    html.update({f"/task/{r.id}": r.id for rs in results.values() for r in rs.values()})
    html["/workers"] = "Workers"
    html["/tasks"] = "Tasks"
    rendered = {path: flower.page(path) for path in html}

    with open(os.path.join(LOGDIR, f"flower-{flower.port}.json"), "w") as f:
        json.dump({"flower": flower.base, "nodes": {k: w.node for k, w in workers.items()},
                   "workers_page": row, "worker_pages": pages,
                   "tasks": {f"{k}/{role}": v for (k, role), v in infos.items()}},
                  f, indent=1, sort_keys=True, default=str)

    # The task page's Terminate button on the first long task: Flower posts
    # to /api/task/revoke/<id> with terminate, and the task page turns REVOKED.
    for k, rs in results.items():
        status, body = flower.post(f"/api/task/revoke/{rs['long'].id}", terminate="true")
        assert status == 200, f"Flower's revoke of the {k} task: HTTP {status}: {body}"

    def terminated():
        states = {k: flower.task(rs["long"].id).get("state") for k, rs in results.items()}
        return states if all(v == "REVOKED" for v in states.values()) else None

    try:
        wait_for(terminated, timeout=5, interval=0.2, what="Flower's Terminate to revoke both long tasks")
    except AssertionError:
        pass
    terminate_states = {k: flower.task(rs["long"].id).get("state") for k, rs in results.items()}
    # Stop every long task now (as Python's control does it), so the workers'
    # warm shutdown does not wait for them.
    for k, rs in results.items():
        app.control.revoke([rs["long"].id, rs["long2"].id], terminate=True, destination=[workers[k].node])
    assert terminate_states["py"] == "REVOKED", f"Flower's Terminate on the Python worker: {terminate_states}"

    # The reference: Flower shows the Python worker's tasks as expected.
    reference = {role: infos[("py", role)]["state"] for role in MIX if role not in RACY_STATE}
    assert reference == {role: FINAL[role] for role in reference}, f"Python worker's tasks in Flower: {reference}"

    gaps = []
    if terminate_states["go"] != "REVOKED":
        gaps.append(f"task page Terminate (POST /api/task/revoke/<id> terminate=true): the Python task is "
                    f"REVOKED, the gocelery task is still {terminate_states['go']}")
    for path, needle in html.items():
        status, body = rendered[path]
        if status != 200 or needle not in body:
            gaps.append(f"GET {path}: HTTP {status}, {needle!r} {'in' if needle in body else 'not in'} the page")

    # Workers page (Status, Active, Processed, Failed, Succeeded, Load
    # Average; and the worker state those come from).
    shape_gaps(row["py"], row["go"], "workers-page", gaps)

    # Worker page, every tab.
    shape_gaps(pages["py"]["stats"], pages["go"]["stats"], "worker.stats", gaps)  # Pool, Broker, Tasks, System, Other
    shape_gaps(pages["py"]["active_queues"], pages["go"]["active_queues"], "worker.active_queues", gaps)  # Queues
    shape_gaps(pages["py"]["conf"], pages["go"]["conf"], "worker.conf", gaps,
               skip_none=True, skip=CONF_INHERENT)  # Config: Flower leaves out None values
    for table in ("active", "scheduled", "reserved", "revoked"):  # Tasks tab tables
        shape_gaps(pages["py"][table], pages["go"][table], f"worker.{table}", gaps)
    if sorted(pages["go"]["registered"]) != sorted(pages["py"]["registered"]):  # Limits
        only_py = sorted(set(pages["py"]["registered"]) - set(pages["go"]["registered"]))
        only_go = sorted(set(pages["go"]["registered"]) - set(pages["py"]["registered"]))
        gaps.append(f"worker.registered (Limits tab): Python only {only_py}, gocelery only {only_go}")
    for name in pages["py"]["stats"]["total"]:  # Tasks tab, processed
        if name not in pages["go"]["stats"]["total"]:
            gaps.append(f"worker.stats.total.{name}: missing in gocelery")
    # Without a worker name Flower lists every worker with the same replies.
    for k, w in workers.items():
        if not {"stats", "active_queues", "registered", "conf"} <= set(everyone.get(w.node, {})):
            gaps.append(f"api/workers?refresh=1: {k} worker {w.node}: {sorted(everyone.get(w.node, {}))}")

    # Task pages, and the Tasks list.
    for role in MIX:
        p, g = infos[("py", role)], infos[("go", role)]
        shape_gaps(p, g, f"task[{role}]", gaps)
        for field in SAME:
            if field == "state" and role in RACY_STATE:
                continue
            if p.get(field) != g.get(field):
                gaps.append(f"task[{role}].{field}: Python {p.get(field)!r}, gocelery {g.get(field)!r}")
        if (p.get("eta") is None) != (g.get("eta") is None):
            gaps.append(f"task[{role}].eta: Python {p.get('eta')!r}, gocelery {g.get('eta')!r}")
        if g.get("worker") != go.node:
            gaps.append(f"task[{role}].worker: {g.get('worker')!r}, not {go.node!r}")
        stamps = [g.get(s) for s in ("received", "started", "succeeded", "failed") if g.get(s) is not None]
        if stamps != sorted(stamps):
            gaps.append(f"task[{role}]: timestamps out of order: {stamps}")
        if "succeeded" in SEEN[role] and not (g.get("runtime") or 0) > 0:
            gaps.append(f"task[{role}].runtime: {g.get('runtime')!r}")
        if results["go"][role].id not in listing:
            gaps.append(f"api/tasks: the gocelery task {role} is not listed")

    assert not gaps, f"Flower parity: {len(gaps)} gap(s) in gocelery:\n  " + "\n  ".join(gaps)
