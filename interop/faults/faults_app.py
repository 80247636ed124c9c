"""The Python twin of internal/faultworker for the fault suite: two tasks
that count every execution per task id in the suite's counting Redis
(HINCRBY faults:runs <id> 1), one acknowledged early (Celery's default),
one acks_late. Run as `celery -A faults_app worker`."""
import os
import time

import redis
from celery import Celery

app = Celery("faults", broker=os.environ.get("CELERY_BROKER_URL"),
             backend=os.environ.get("CELERY_RESULT_BACKEND"))
app.conf.accept_content = ["json"]
app.conf.broker_connection_retry_on_startup = True

_count = redis.Redis.from_url(os.environ["FAULT_COUNT_REDIS"])
_work = int(os.environ.get("FAULT_TASK_MS", "0")) / 1000.0


def _run(task, i):
    _count.hincrby("faults:runs", task.request.id, 1)
    time.sleep(_work)
    return i


@app.task(name="faults.count", bind=True)
def count(self, i):
    return _run(self, i)


@app.task(name="faults.count_late", bind=True, acks_late=True)
def count_late(self, i):
    return _run(self, i)
