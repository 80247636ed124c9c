"""The conformance task set (docs/tasks.md) as a Python Celery
module, so every interop test can run against the Python worker too and the
two workers can be compared case by case:

    celery -A pytasks worker -Q some-queue
"""
import builtins
import json
import os
import time

from celery import Celery
from celery.utils.log import get_task_logger
from queuesfile import conf_from_env

logger = get_task_logger(__name__)

app = Celery(
    "pytasks",
    broker=os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/0"),
)
app.conf.accept_content = ["json", "msgpack"]
if os.environ.get("CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS"):
    app.conf.result_backend_transport_options = json.loads(os.environ["CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS"])
app.conf.task_track_started = bool(os.environ.get("INTEROP_TRACK_STARTED"))
app.conf.broker_connection_retry_on_startup = True
# Queue topology as gocelery's flags/env give it (test_topology.py).
app.conf.update(conf_from_env(os.environ))
# As gocelery reads --broker-transport-options (JSON here only).
if os.environ.get("CELERY_BROKER_TRANSPORT_OPTIONS"):
    app.conf.broker_transport_options = json.loads(os.environ["CELERY_BROKER_TRANSPORT_OPTIONS"])


def _number(v):
    # bool is an int in Python; the contract says it is not a number here.
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@app.task(name="gocelery.add")
def add(x, y):
    if not (_number(x) and _number(y)):
        raise TypeError(
            f"unsupported operand type(s) for +: '{type(x).__name__}' and '{type(y).__name__}'"
        )
    return x + y


@app.task(name="gocelery.echo")
def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


@app.task(name="gocelery.sleep")
def sleep(seconds):
    time.sleep(seconds)
    return seconds


_FAIL_TYPES = {
    "ValueError", "KeyError", "TypeError", "RuntimeError", "ZeroDivisionError",
    "IndexError", "LookupError", "AttributeError", "NotImplementedError", "OSError",
    "ArithmeticError", "AssertionError", "Exception",
}


@app.task(name="gocelery.fail")
def fail(exc_type, message):
    cls = getattr(builtins, exc_type) if exc_type in _FAIL_TYPES else RuntimeError
    raise cls(message)


@app.task(name="gocelery.flaky", bind=True, max_retries=3)
def flaky(self, failures, countdown=0):
    if self.request.retries < failures:
        logger.warning("flaky: attempt %d fails", self.request.retries)
        raise self.retry(countdown=countdown, exc=RuntimeError("flaky"))
    return self.request.retries


@app.task(name="gocelery.progress", bind=True)
def progress(self, steps, delay):
    for i in range(1, steps + 1):
        self.update_state(state="PROGRESS", meta={"current": i, "total": steps})
        time.sleep(delay)
    return steps


@app.task(name="gocelery.xsum")
def xsum(numbers):
    for n in numbers:
        if not _number(n):
            raise TypeError(f"unsupported operand type(s) for +: 'int' and '{type(n).__name__}'")
    return sum(numbers)


@app.task(name="gocelery.noop")
def noop():
    return None


@app.task(name="gocelery.request", bind=True)
def request(self):
    r = self.request
    return {
        "id": r.id,
        "root_id": r.root_id,
        "parent_id": r.parent_id,
        "group": r.group,
        "retries": r.retries,
        "hostname": r.hostname,
        "routing_key": (r.delivery_info or {}).get("routing_key"),
    }


@app.task(name="gocelery.limited", rate_limit="5/s")
def limited(x):
    return x


@app.task(name="gocelery.autoretry", bind=True, max_retries=3, autoretry_for=(RuntimeError,),
          retry_backoff=1, retry_backoff_max=2, retry_jitter=False)
def autoretry(self, failures):
    if self.request.retries < failures:
        raise RuntimeError("autoretry")
    return self.request.retries
