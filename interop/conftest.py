"""Fixtures for the interop suite: real RabbitMQ and Redis on loopback, real
Python Celery 5.7 as the producer, and two workers serving the conformance
task set on their own queues: the gocelery binary (GOCELERY_BIN) and the
Python twin (pytasks.py). Tests that take the `worker` fixture run once
against each, so a difference between them shows in the report."""
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest
from celery import Celery

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BROKER = os.environ.get("INTEROP_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
BACKEND = os.environ.get("INTEROP_RESULT_BACKEND", "redis://127.0.0.1:6379/1")
# The suite runs on RabbitMQ by default and on a Redis broker with
# INTEROP_BROKER_URL=redis://...; tests of one broker's own behaviour skip
# themselves on the other, saying why.
ON_REDIS = BROKER.split("://", 1)[0] in ("redis", "rediss", "sentinel")
amqp_only = pytest.mark.skipif(ON_REDIS, reason="RabbitMQ behaviour: the broker is Redis (INTEROP_BROKER_URL)")
redis_only = pytest.mark.skipif(not ON_REDIS, reason="Redis broker behaviour: set INTEROP_BROKER_URL=redis://...")
LOGDIR = os.path.join(ROOT, ".build", "interop-logs")
HOST = socket.gethostname()


def make_app(name="interop", **conf):
    app = Celery(name, broker=BROKER, backend=BACKEND)
    app.conf.accept_content = ["json", "msgpack"]
    app.conf.result_accept_content = ["json", "msgpack"]
    app.conf.update(conf)
    return app


@pytest.fixture(scope="session")
def app():
    return make_app()


def wait_for(cond, timeout=20.0, interval=0.05, what="condition"):
    """Polls cond until it returns a truthy value, which it returns."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Worker:
    """A worker process on its own queue."""

    def __init__(self, kind, app, extra_args=(), concurrency=8, env=None, queue=None):
        self.kind = kind
        self.app = app
        tag = uuid.uuid4().hex[:8]
        self.queue = queue or f"interop-{kind}-{tag}"
        self.node = f"{kind}-{tag}@{HOST}"
        os.makedirs(LOGDIR, exist_ok=True)
        self.logpath = os.path.join(LOGDIR, f"{self.queue}.log")
        # env may name other broker/backend URLs (test_hostile_input does).
        env = {**os.environ, "CELERY_BROKER_URL": BROKER, "CELERY_RESULT_BACKEND": BACKEND, **(env or {})}
        if kind == "go":
            binary = os.environ.get("GOCELERY_BIN") or os.path.join(ROOT, ".build", "gocelery")
            cmd = [binary, "worker", "-Q", self.queue, "-n", self.node, "-c", str(concurrency), "-l", "INFO"]
        else:
            env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
            cmd = [sys.executable, "-m", "celery", "-A", "pytasks", "worker", "-Q", self.queue,
                   "-n", self.node, "-c", str(min(concurrency, 4)), "-P", "prefork",
                   "-l", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        cmd += list(extra_args)
        self.logpath = os.path.join(LOGDIR, f"{self.queue}-{kind}-{tag}.log") if queue else self.logpath
        self.log = open(self.logpath, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=HERE)
        try:
            self.send("gocelery.noop").get(timeout=60)
        except Exception:
            self.stop()
            raise AssertionError(f"{kind} worker did not come up; log:\n{self.logtext()}")

    def send(self, name, args=None, kwargs=None, **opts):
        opts.setdefault("queue", self.queue)
        return self.app.send_task(name, args=args, kwargs=kwargs, **opts)

    def signature(self, name, args=(), kwargs=None, **opts):
        opts.setdefault("queue", self.queue)
        return self.app.signature(name, args=args, kwargs=kwargs or {}, options=opts)

    def logtext(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace")[-6000:]

    def logtext_full(self):
        self.log.flush()
        with open(self.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        delete_queue(self.app, self.queue)

    def __repr__(self):
        return f"<{self.kind} worker {self.queue}>"


@pytest.fixture(scope="session", params=["go", "py"])
def worker(request, app):
    w = Worker(request.param, app)
    yield w
    assert w.alive(), f"{w.kind} worker died during the suite; log:\n{w.logtext()}"
    w.stop()


@pytest.fixture
def start_worker(app):
    """Starts extra workers with their own flags; stopped after the test."""
    started = []

    def start(kind, *extra_args, concurrency=8, env=None, app=app):
        w = Worker(kind, app, extra_args, concurrency=concurrency, env=env)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


@pytest.fixture(params=["go", "py"])
def kind(request):
    """The worker kind, for tests that start their own workers."""
    return request.param


def delete_queue(app, queue):
    """Deletes a queue the test made. On Redis kombu deletes only the
    bindings its own channel declared, so the lists and binding sets go
    by name."""
    if ON_REDIS:
        import redis
        sep = "\x06\x16"
        keys = [queue] + [f"{queue}{sep}{p}" for p in (3, 6, 9)]
        keys += [f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}"]
        redis.Redis.from_url(BROKER).delete(*keys)
        return
    with app.connection_for_write() as conn:
        try:
            conn.default_channel.queue_delete(queue)
        except Exception:
            pass


def queue_depth(app, queue):
    with app.connection_for_write() as conn:
        # On Redis an empty queue is no key at all, which a passive
        # declare reports as missing: count its lists instead.
        _, count, _ = conn.default_channel.queue_declare(queue, passive=not ON_REDIS)
        return count
