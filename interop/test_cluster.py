"""A three-node RabbitMQ cluster of the test's own (scripts/rabbit-cluster.sh,
ports 5801-5803), a quorum queue replicated on all three, tasks flowing
from Python, and the node the worker is connected to stopped mid-stream:
every task id must end with its one final result, and the worker must move
to a surviving node by itself (its broker URL is a failover list). Run
against gocelery and Python Celery alike."""
import os
import subprocess
import time
import uuid

import pytest
from kombu import Exchange, Queue

from conftest import BACKEND, ROOT, Worker, make_app, wait_for

SCRIPT = os.path.join(ROOT, "scripts", "rabbit-cluster.sh")
URLS = [f"amqp://guest:guest@127.0.0.1:{5800 + i}//" for i in (1, 2, 3)]
TASKS = 600


def cluster(*args):
    subprocess.run(["bash", SCRIPT, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def rabbit_cluster():
    cluster("start")
    yield
    cluster("stop")


@pytest.fixture
def node1_back():
    """Brings node 1 back after the test that stops it."""
    yield
    cluster("start-node", "1")
    cluster("start")  # re-clusters if needed and waits for all three


def test_node_stopped_mid_stream(rabbit_cluster, node1_back, kind):
    queue = f"interop-cluster-{kind}-{uuid.uuid4().hex[:8]}"
    # The producer talks to nodes 2 and 3, which stay up; the worker starts
    # on node 1, the one that is stopped.
    producer = make_app("interop-cluster", task_create_missing_queue_type="quorum")
    producer.conf.broker_url = ";".join(URLS[1:])
    q = Queue(queue, Exchange(queue, type="direct"), routing_key=queue,
              queue_arguments={"x-queue-type": "quorum"})
    with producer.connection_for_write() as conn:
        q(conn.default_channel).declare()

    # Both workers read Celery's settings from the same CELERY_ variables.
    env = {"CELERY_BROKER_URL": ";".join(URLS), "CELERY_TASK_DEFAULT_QUEUE_TYPE": "quorum",
           "CELERY_TASK_CREATE_MISSING_QUEUE_TYPE": "quorum"}
    w = Worker(kind, producer, concurrency=4, env=env, queue=queue)
    try:
        results = [w.send("gocelery.sleep", [0.02]) for _ in range(TASKS // 2)]
        wait_for(lambda: sum(r.ready() for r in results) >= TASKS // 6, timeout=60, what="a sixth done")
        cluster("stop-node", "1")
        results += [w.send("gocelery.sleep", [0.02]) for _ in range(TASKS // 2)]
        deadline = time.monotonic() + 180
        for r in results:
            assert r.get(timeout=max(1, deadline - time.monotonic())) == 0.02
        assert all(r.state == "SUCCESS" for r in results)
        assert w.alive(), w.logtext()
        # It is serving from a surviving node: one more task after the fault.
        assert w.send("gocelery.add", [1, 2]).get(timeout=30) == 3
    finally:
        w.stop()
