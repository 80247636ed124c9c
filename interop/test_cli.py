"""The command line as users run it: a `celery worker` line from a systemd
unit runs unchanged with only the program name changed, and a Go team's
own worker program (examples/orders, built on the cli package) serves its
tasks to Python. The command-line test runs against both workers [go] and
[py] with the same flags."""
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from conftest import BACKEND, BROKER, HERE, HOST, LOGDIR, ROOT, amqp_only, wait_for

T = 30


def go_binary(env_name, default):
    return os.environ.get(env_name) or os.path.join(ROOT, ".build", default)


def spawn(cmd, logname, env_extra=None):
    os.makedirs(LOGDIR, exist_ok=True)
    env = dict(os.environ, CELERY_BROKER_URL=BROKER, CELERY_RESULT_BACKEND=BACKEND,
               PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(env_extra or {})
    log = open(os.path.join(LOGDIR, logname), "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=HERE)
    return proc, log


def stop(proc, log, timeout=30):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.close()
    return proc.returncode


def delete_queue(app, queue):
    with app.connection_for_write() as conn:
        try:
            conn.default_channel.queue_delete(queue)
        except Exception:
            pass


# Celery 5 takes -A only before the command; gocelery takes it in both
# places, as Celery 4 command lines in old units put it after.
@pytest.mark.parametrize("kind,form", [("go", "before"), ("go", "after"), ("py", "before")])
def test_celery_worker_command_line(app, kind, tmp_path, form):
    """The flags of a typical supervisor/systemd line: the app and pool,
    gossip/mingle/heartbeat off, fair scheduling, a pidfile and a logfile.
    With form "before", -A comes before the command as `celery -A proj
    worker` writes it."""
    tag = uuid.uuid4().hex[:8]
    queue = f"interop-cli-{kind}-{tag}"
    node = f"cli-{kind}-{tag}@{HOST}"
    pidfile = tmp_path / "%n.pid"
    logfile = tmp_path / "%n.log"
    flags = ["-P", "prefork", "-c", "2", "-l", "INFO", "-Q", queue, "-n", node,
             "--without-gossip", "--without-mingle", "--without-heartbeat", "-O", "fair",
             f"--pidfile={pidfile}", f"--logfile={logfile}", "--max-tasks-per-child", "100"]
    if kind == "go":
        prog = [go_binary("GOCELERY_BIN", "gocelery")]
    else:
        prog = [sys.executable, "-m", "celery"]
    app_name = "pytasks" if kind == "py" else "proj"
    if form == "before":
        cmd = prog + ["-A", app_name, "worker"] + flags
    else:
        cmd = prog + ["worker", "-A", app_name] + flags
    proc, log = spawn(cmd, f"{queue}.out")
    short = node.split("@")[0]
    real_pid = tmp_path / f"{short}.pid"
    real_log = tmp_path / f"{short}.log"
    try:
        r = app.send_task("gocelery.add", args=[20, 22], queue=queue)
        assert r.get(timeout=60) == 42
        assert real_pid.read_text().strip() == str(proc.pid)
        assert "gocelery.add" in real_log.read_text()
        assert proc.poll() is None
    finally:
        code = stop(proc, log)
        delete_queue(app, queue)
    assert code == 0
    wait_for(lambda: not real_pid.exists(), timeout=5, what="pidfile removed at exit")


def test_pidfile_of_a_live_worker_refuses_a_second(tmp_path):
    """As Celery does: a pidfile naming a live process means another worker
    runs; the second exits 1 at once and leaves the file alone."""
    pidfile = tmp_path / "w.pid"
    pidfile.write_text(f"{os.getpid()}\n")
    proc = subprocess.run([go_binary("GOCELERY_BIN", "gocelery"), "worker", "--pidfile", str(pidfile),
                           "-Q", "interop-cli-never"], capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, CELERY_BROKER_URL=BROKER, CELERY_RESULT_BACKEND=BACKEND))
    assert proc.returncode == 1, proc.stderr
    assert "pidfile" in proc.stderr.lower()
    assert pidfile.read_text().strip() == str(os.getpid())


@pytest.fixture
def orders_worker(app):
    tag = uuid.uuid4().hex[:8]
    queue = f"interop-orders-{tag}"
    proc, log = spawn([go_binary("GOCELERY_EXAMPLE_BIN", "orders"), "worker", "-Q", queue,
                       "-n", f"orders-{tag}@{HOST}", "-c", "4", "-l", "INFO"], f"{queue}.out")
    yield queue, proc
    code = stop(proc, log)
    delete_queue(app, queue)
    assert code == 0


def test_example_program_total(app, orders_worker):
    queue, _ = orders_worker
    lines = [{"sku": "tea", "qty": 3, "price_cents": 450}, {"sku": "mug", "qty": 1, "price_cents": 1299}]
    r = app.send_task("orders.total", kwargs={"lines": lines, "currency": "eur"}, queue=queue)
    assert r.get(timeout=T) == {"lines": 2, "units": 4, "total_cents": 2649, "currency": "EUR"}
    bad = app.send_task("orders.total", args=[[{"sku": "x", "qty": 0, "price_cents": 1}], "EUR"], queue=queue)
    with pytest.raises(ValueError, match="quantity must be positive"):
        bad.get(timeout=T)


def test_example_program_export_retries_and_reports_progress(app, orders_worker):
    queue, _ = orders_worker
    r = app.send_task("orders.export", kwargs={"order_ids": list(range(1, 21)), "busy_retries": 1}, queue=queue)
    seen = set()

    def progressed():
        if r.state == "PROGRESS":
            seen.add(r.info["current"])
        return r.ready()

    wait_for(progressed, timeout=T, interval=0.02, what="export to finish")
    out = r.get(timeout=T)
    assert out["orders"] == 20 and out["attempts"] == 2
    assert len(out["sha256"]) == 64
    assert seen and max(seen) <= 20, seen
    os.remove(out["path"])


@amqp_only  # a ";" list of AMQP URLs; kombu's Redis takes lists only for sentinel://
@pytest.mark.parametrize("kind", ["go", "py"])
def test_failover_list_with_a_dead_first_url(app, kind):
    """broker_url as a ";" failover list whose first broker is down: the
    worker moves on to the next one and serves (round-robin, Celery's
    default broker_failover_strategy)."""
    tag = uuid.uuid4().hex[:8]
    queue = f"interop-failover-{kind}-{tag}"
    node = f"failover-{kind}-{tag}@{HOST}"
    failover = "amqp://guest:guest@127.0.0.1:1//;" + BROKER
    if kind == "go":
        cmd = [go_binary("GOCELERY_BIN", "gocelery"), "worker", "-b", failover, "-Q", queue, "-n", node, "-c", "2"]
    else:
        cmd = [sys.executable, "-m", "celery", "-A", "pytasks", "-b", failover, "worker", "-Q", queue,
               "-n", node, "-c", "2", "-P", "prefork", "--without-gossip", "--without-mingle"]
    proc, log = spawn(cmd, f"{queue}.out")
    try:
        r = app.send_task("gocelery.add", args=[40, 2], queue=queue)
        assert r.get(timeout=60) == 42
        assert proc.poll() is None
    finally:
        code = stop(proc, log)
        delete_queue(app, queue)
    assert code == 0
