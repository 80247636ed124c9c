"""The README demo: plain Python Celery sends tasks to a gocelery worker.

Nothing here knows about Go: it is what any Celery client already does.
"""
import os
import sys

from celery import Celery

app = Celery(
    "demo",
    broker=os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/0"),
)
queue = sys.argv[1] if len(sys.argv) > 1 else "celery"

r = app.send_task("gocelery.add", args=[2, 3], queue=queue)
print(f"gocelery.add(2, 3) = {r.get(timeout=20)!r}")

r = app.send_task("gocelery.add", args=[2**53 + 1, 2], queue=queue)
print(f"gocelery.add(2**53 + 1, 2) = {r.get(timeout=20)!r}  (exact: {r.get() == 2**53 + 3})")

r = app.send_task("gocelery.echo", args=["héllo", {"n": [1, 2.5, None]}], kwargs={"ok": True}, queue=queue)
print(f"gocelery.echo(...) = {r.get(timeout=20)!r}")

r = app.send_task("gocelery.fail", args=["ValueError", "boom"], queue=queue)
try:
    r.get(timeout=20)
except ValueError as exc:
    print(f"gocelery.fail('ValueError', 'boom') raised {exc!r}, state {r.state}")
