"""Reads gocelery's --queues-file (a JSON list of kombu Queue(...) keyword
arguments, docs/deployment.md) into kombu Queues, so the Python twin worker
and the producer apps of the interop tests define the same queues the Go
worker does from the same file."""
import json

from kombu import Exchange, Queue, binding


def queues_from_file(path):
    with open(path) as f:
        defs = json.load(f)
    queues = []
    for d in defs:
        d = dict(d)
        name = d.pop("name")
        bindings = d.pop("bindings", None)
        if bindings:
            bs = [binding(Exchange(b["exchange"], type=b.get("exchange_type") or "direct"),
                          routing_key=b.get("routing_key", ""), arguments=b.get("arguments"))
                  for b in bindings]
            queues.append(Queue(name, bs, **d))
        else:
            queues.append(Queue.from_dict(name, **d))
    return queues


# Celery settings the twin worker takes from CELERY_<SETTING> variables,
# as gocelery's flags do.
STR_SETTINGS = (
    "task_default_queue", "task_default_queue_type", "task_default_exchange_type",
    "task_create_missing_queue_type", "task_create_missing_queue_exchange_type",
    "broker_native_delayed_delivery_queue_type", "broker_failover_strategy",
)
INT_SETTINGS = ("task_queue_max_priority", "task_default_priority")


def conf_from_env(environ):
    conf = {}
    for s in STR_SETTINGS:
        v = environ.get("CELERY_" + s.upper())
        if v:
            conf[s] = v
    for s in INT_SETTINGS:
        v = environ.get("CELERY_" + s.upper())
        if v:
            conf[s] = int(v)
    path = environ.get("GOCELERY_QUEUES_FILE")
    if path:
        conf["task_queues"] = queues_from_file(path)
    return conf
