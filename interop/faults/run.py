#!/usr/bin/env python3
"""The fault suite: streams tasks through a worker, injects one fault
mid-stream and proves by task id what happened to every task.

Everything runs on servers of the suite's own, started here and stopped at
the end, so the shared RabbitMQ (5672) and Redis (6379) are never touched:
a RabbitMQ node (scripts/rabbit-node.sh), a Redis as result backend (the
one the outages stop) and a Redis that counts executions per task id
(HINCRBY faults:runs <id>, done by the task itself before it works), and
for conn-cut a TCP proxy (CutProxy) between the worker and that node.

Per scenario: N tasks are published to a fresh queue, the worker starts
(-c 4, prefetch multiplier 4 unless said otherwise), the fault is injected
once a third of them have run, and the suite waits, by polling, until every
task has a result (or nothing moves for a while). Then it counts:

  ran twice   executions > 1 (for an early-ack task: a task run again after
              its message was acknowledged)
  never ran   no execution at all
  no result   no SUCCESS stored
  in queue    messages still in the queue at the end

  python interop/faults/run.py --worker go --check    # what CI runs
  python interop/faults/run.py --worker py            # Celery 5.7 prefork, to compare
  python interop/faults/run.py --worker go --only conn-kill,sigterm

--check exits 1 unless, for every scenario, no task is lost, none is
without its final result, and no acknowledged task ran twice.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import redis
from celery import Celery
from kombu import Connection

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RABBIT_NODE = os.environ.get("FAULT_RABBIT_NODE", "gcfault")
RABBIT_PORT = int(os.environ.get("FAULT_RABBIT_PORT", "5791"))
BACKEND_PORT = int(os.environ.get("FAULT_BACKEND_PORT", "6791"))
COUNT_PORT = int(os.environ.get("FAULT_COUNT_PORT", "6792"))
PROXY_PORT = int(os.environ.get("FAULT_PROXY_PORT", "5792"))
SHARED = {5672, 6379}
BROKER = f"amqp://guest:guest@127.0.0.1:{RABBIT_PORT}//"
BACKEND = f"redis://127.0.0.1:{BACKEND_PORT}/0"
COUNTER = f"redis://127.0.0.1:{COUNT_PORT}/0"
RUNS = "faults:runs"


def log(*a):
    print("faults:", *a, file=sys.stderr, flush=True)


def poll(cond, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class RedisServer:
    """A redis-server of the suite's own. stop() saves its data, so an
    outage loses nothing already stored: only the outage itself is tested."""

    def __init__(self, port, root, name):
        assert port not in SHARED, "the shared Redis must never be used"
        self.port, self.dir = port, os.path.join(root, name)
        os.makedirs(self.dir, exist_ok=True)
        self.client = redis.Redis(port=self.port, socket_timeout=5)

    def start(self):
        subprocess.run(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                        "--dir", self.dir, "--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no",
                        "--daemonize", "yes", "--pidfile", os.path.join(self.dir, "pid"),
                        "--logfile", os.path.join(self.dir, "log")], check=True)
        poll(self._ping, 30, f"redis on {self.port}")

    def _ping(self):
        try:
            return self.client.ping()
        except redis.ConnectionError:
            return False

    def stop(self, save=True):
        try:
            self.client.shutdown(save=save, nosave=not save)
        except redis.ConnectionError:
            pass
        poll(lambda: not self._ping(), 30, f"redis on {self.port} to stop")


def rabbit(cmd, root):
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "rabbit-node.sh"), cmd, RABBIT_NODE,
                    str(RABBIT_PORT), os.path.join(root, "rabbit")], check=True,
                   stdout=subprocess.DEVNULL)


class CutProxy:
    """A TCP proxy of the suite's own in front of its RabbitMQ node, for
    the worker of a scenario that cuts the network: mute() stops forwarding
    what the broker sends (what the worker sends still reaches it), cut()
    closes every connection open through it. Later connections are
    forwarded again, so the worker reconnects through it."""

    def __init__(self, port, target):
        assert port not in SHARED
        self.port, self.target = port, target
        self.lock = threading.Lock()
        self.pairs = []
        self.sock = socket.create_server(("127.0.0.1", port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                b = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                c.close()
                continue
            pair = {"socks": (c, b), "mute": False}
            with self.lock:
                self.pairs.append(pair)
            threading.Thread(target=self._pipe, args=(c, b, pair, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(b, c, pair, True), daemon=True).start()

    def _pipe(self, src, dst, pair, from_broker):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not (from_broker and pair["mute"]):
                    dst.sendall(data)
        except OSError:
            pass
        # One side ended: end the other too; the second pipe to get here
        # closes both.
        with self.lock:
            last = pair.get("ended", False)
            pair["ended"] = True
            if last and pair in self.pairs:
                self.pairs.remove(pair)
        for s in (src, dst):
            _shut(s, close=last)

    def mute(self):
        with self.lock:
            for p in self.pairs:
                p["mute"] = True

    def cut(self):
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for p in pairs:
            for s in p["socks"]:
                _shut(s)

    def close(self):
        _shut(self.sock)  # the shutdown wakes the accept
        self.cut()


def _shut(s, close=True):
    """Shuts both directions of s (it may be closed already), then closes it."""
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    if close:
        s.close()


class Worker:
    def __init__(self, kind, queue, multiplier, logdir, extra=(), broker=BROKER):
        self.kind, self.queue = kind, queue
        env = dict(os.environ, CELERY_BROKER_URL=broker, CELERY_RESULT_BACKEND=BACKEND,
                   FAULT_COUNT_REDIS=COUNTER, FAULT_TASK_MS=os.environ.get("FAULT_TASK_MS", "5"))
        node = f"fault-{kind}-{uuid.uuid4().hex[:6]}@localhost"
        if kind == "go":
            binary = os.environ.get("FAULTWORKER_BIN") or os.path.join(ROOT, ".build", "faultworker")
            cmd = [binary, "worker", "-Q", queue, "-n", node, "-c", "4",
                   "--prefetch-multiplier", str(multiplier), "-l", "INFO", "--without-heartbeat"]
        else:
            env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
            cmd = [sys.executable, "-m", "celery", "-A", "faults_app", "worker", "-Q", queue, "-n", node,
                   "-c", "4", "-P", "prefork", "--prefetch-multiplier", str(multiplier), "-l", "INFO",
                   "--without-gossip", "--without-mingle", "--without-heartbeat"]
        cmd += list(extra)
        self.logf = open(os.path.join(logdir, f"{queue}.log"), "ab")
        # Its own process group: kill -9 takes Celery's pool children too.
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, env=env,
                                     cwd=HERE, start_new_session=True)

    def kill9(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # stray pool children
        except ProcessLookupError:
            pass
        self.logf.close()


class Run:
    """One scenario against one worker kind."""

    def __init__(self, suite, kind, name, task, multiplier, broker=BROKER):
        self.suite, self.kind, self.name, self.task, self.multiplier = suite, kind, name, task, multiplier
        self.queue = f"faults.{name}.{kind}.{uuid.uuid4().hex[:6]}"
        self.broker = broker
        self.workers = []

    def start_worker(self):
        w = Worker(self.kind, self.queue, self.multiplier, self.suite.logdir, broker=self.broker)
        self.workers.append(w)
        return w

    @property
    def worker(self):
        return self.workers[-1]


# Faults: each gets the run and injects one fault into it.
def conn_kill(run):
    rabbit("kill-conns", run.suite.root)


def conn_cut(run):
    # The worker's frames (acks and their barriers) still reach the broker,
    # which processes them; its answers never come back before the cut. An
    # early-ack task whose ack the broker took must still run.
    run.suite.proxy.mute()
    time.sleep(0.3)  # the fault itself
    run.suite.proxy.cut()


conn_cut.via_proxy = True


def broker_restart(run):
    rabbit("restart", run.suite.root)


def redis_outage(seconds):
    def fault(run):
        run.suite.backend.stop(save=True)
        time.sleep(seconds)  # the outage itself
        run.suite.backend.start()
    return fault


def kill9(run):
    run.worker.kill9()
    run.start_worker()


def sigterm(run):
    w = run.worker
    w.proc.send_signal(signal.SIGTERM)
    w.proc.wait(120)
    run.start_worker()


# name, task, multiplier, fault, may an execution repeat (acks_late,
# never acknowledged before the fault)?
SCENARIOS = [
    ("conn-kill", "faults.count", 4, conn_kill, False),
    ("conn-kill-m64", "faults.count", 64, conn_kill, False),
    ("conn-cut", "faults.count", 4, conn_cut, False),
    ("broker-restart", "faults.count", 4, broker_restart, False),
    ("redis-5s", "faults.count", 4, redis_outage(5), False),
    ("redis-15s", "faults.count", 4, redis_outage(15), False),
    ("redis-15s-late", "faults.count_late", 4, redis_outage(15), False),
    ("kill9-late", "faults.count_late", 4, kill9, True),
    ("sigterm", "faults.count", 4, sigterm, False),
]


class Suite:
    def __init__(self, n, stall):
        self.n, self.stall = n, stall
        self.root = tempfile.mkdtemp(prefix="gocelery-faults-")
        os.chmod(self.root, 0o755)
        self.logdir = os.path.join(ROOT, ".build", "fault-logs")
        os.makedirs(self.logdir, exist_ok=True)
        self.backend = RedisServer(BACKEND_PORT, self.root, "backend")
        self.counter = RedisServer(COUNT_PORT, self.root, "counter")

    def __enter__(self):
        # First, so a port in use stops the suite before it starts servers.
        self.proxy = CutProxy(PROXY_PORT, RABBIT_PORT)
        # Leftovers of a run that was killed: they are the suite's own.
        rabbit("stop", self.root)
        for r in (self.backend, self.counter):
            r.stop(save=False)
        log("starting RabbitMQ node", RABBIT_NODE, "on", RABBIT_PORT, "and Redis on", BACKEND_PORT, COUNT_PORT)
        self.backend.start()
        self.counter.start()
        rabbit("start", self.root)
        # No result backend: the suite reads results from Redis itself, and
        # Celery's Redis backend would subscribe to every task id sent.
        self.app = Celery("faults-driver", broker=BROKER)
        self.app.conf.broker_connection_retry_on_startup = True
        return self

    def __exit__(self, *exc):
        if getattr(self, "proxy", None):
            self.proxy.close()
        for stop in (lambda: rabbit("stop", self.root), lambda: self.backend.stop(False),
                     lambda: self.counter.stop(False)):
            try:
                stop()
            except Exception as e:  # keep stopping the others
                log("cleanup:", e)
        shutil.rmtree(self.root, ignore_errors=True)

    def publish(self, run):
        ids = [f"{run.name}-{run.kind}-{i}-{uuid.uuid4().hex[:8]}" for i in range(self.n)]
        with self.app.producer_or_acquire() as p:
            for i, tid in enumerate(ids):
                self.app.send_task(run.task, args=[i], task_id=tid, queue=run.queue, producer=p)
        return ids

    def results(self, ids):
        """Ids whose SUCCESS is stored; None while the backend is down."""
        c = redis.Redis(port=BACKEND_PORT, socket_timeout=5)
        try:
            docs = c.mget([f"celery-task-meta-{i}" for i in ids])
        except redis.ConnectionError:
            return None
        return {i for i, d in zip(ids, docs) if d and json.loads(d).get("status") == "SUCCESS"}

    def queue_depth(self, queue):
        with Connection(BROKER) as conn:
            ch = conn.channel()
            try:
                _, count, _ = ch.queue_declare(queue, passive=True)
                return count
            except Exception:
                return -1

    def scenario(self, kind, name, task, multiplier, fault, may_repeat):
        self.counter.client.delete(RUNS)
        broker = BROKER
        if getattr(fault, "via_proxy", False):
            broker = f"amqp://guest:guest@127.0.0.1:{PROXY_PORT}//"
        run = Run(self, kind, name, task, multiplier, broker=broker)
        ids = self.publish(run)
        started = time.monotonic()
        run.start_worker()
        poll(lambda: self.counter.client.hlen(RUNS) >= self.n // 3, 120, "a third of the tasks to run")
        log(f"{kind} {name}: fault at {self.counter.client.hlen(RUNS)} run")
        fault(run)
        # Wait for every result; give up once nothing has moved for a while.
        done, last, moved = set(), -1, time.monotonic()
        while len(done) < len(ids) and time.monotonic() - moved < self.stall:
            got = self.results([i for i in ids if i not in done])
            if got is not None:
                done |= got
            progress = len(done) + self.counter.client.hlen(RUNS)
            if progress != last:
                last, moved = progress, time.monotonic()
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        for w in run.workers:
            w.stop()
        runs = {k.decode(): int(v) for k, v in self.counter.client.hgetall(RUNS).items()}
        done = self.results(ids) or set()
        out = {
            "worker": kind, "scenario": name, "tasks": len(ids), "acks_late": task.endswith("_late"),
            "multiplier": multiplier,
            "ran_twice": sum(1 for i in ids if runs.get(i, 0) > 1),
            "never_ran": sum(1 for i in ids if runs.get(i, 0) == 0),
            "no_result": sum(1 for i in ids if i not in done),
            "in_queue": self.queue_depth(run.queue),
            "seconds": round(elapsed, 1),
            "repeat_allowed": may_repeat,
        }
        out["ok"] = out["never_ran"] == 0 and out["no_result"] == 0 and (may_repeat or out["ran_twice"] == 0)
        log(json.dumps(out))
        return out


def table(rows):
    lines = ["| fault | worker | ran twice | never ran | no result | left in queue | seconds |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['worker']} | {r['ran_twice']} | {r['never_ran']} | "
                     f"{r['no_result']} | {r['in_queue']} | {r['seconds']} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["go", "py"], action="append")
    ap.add_argument("--only", help="comma-separated scenario names")
    ap.add_argument("-n", type=int, default=3000, help="tasks per scenario")
    ap.add_argument("--stall", type=float, default=30, help="give up after this many seconds without progress")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--check", action="store_true", help="exit 1 unless every scenario is clean")
    a = ap.parse_args()
    # A SIGTERM (CI's timeout) still stops the servers started here.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    kinds = a.worker or ["go"]
    only = set(a.only.split(",")) if a.only else None
    rows = []
    with Suite(a.n, a.stall) as suite:
        for name, task, mult, fault, may_repeat in SCENARIOS:
            if only and name not in only:
                continue
            for kind in kinds:
                rows.append(suite.scenario(kind, name, task, mult, fault, may_repeat))
    print(table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    if a.check and not all(r["ok"] for r in rows):
        bad = [f"{r['worker']} {r['scenario']}" for r in rows if not r["ok"]]
        log("FAILED:", ", ".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
