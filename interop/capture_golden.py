"""Capture golden task messages from real Python Celery producers.

Usage (from the repository root):

    .venv/bin/python interop/capture_golden.py [outdir]

Each case publishes one or more task messages with a real Celery 5.7 app to a
throwaway RabbitMQ queue on 127.0.0.1, reads the raw deliveries back with
py-amqp (basic_get, no_ack) so the properties, application headers and body
bytes are exactly what the producer sent, and writes one JSON file per case
into outdir (default testdata/golden). The "expect" object of each file holds
what the Go decoder must produce; it is computed here from what the producer
was asked to send, never by parsing the body with the Go code.

Nothing consumes the tasks: the app only produces messages.
"""

import base64
import datetime as dt
import json
import os
import sys
import time
import uuid

import amqp
from celery import Celery, chain, chord, group

BROKER = "amqp://guest:guest@127.0.0.1:5672//"
BACKEND = "redis://127.0.0.1:6379/15"

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fixed_id(n):
    """A stable task id for case n (a real uuid string, so it looks like Celery's)."""
    return str(uuid.UUID(int=0x601DE000_0000_4000_8000_000000000000 + n))


def make_app(queue, **conf):
    app = Celery("capture", broker=BROKER, backend=BACKEND)
    app.conf.update(
        task_default_queue=queue,
        task_default_exchange=queue,
        task_default_routing_key=queue,
        task_create_missing_queues=True,
        broker_connection_retry_on_startup=True,
        **conf,
    )

    @app.task(name="gocelery.add")
    def add(x, y=0):
        return x + y

    @app.task(name="gocelery.mul")
    def mul(x, y=1):
        return x * y

    @app.task(name="gocelery.xsum")
    def xsum(values):
        return sum(values)

    @app.task(name="gocelery.echo")
    def echo(*args, **kwargs):
        return [args, kwargs]

    @app.task(name="gocelery.on_error")
    def on_error(*args, **kwargs):
        return None

    app.tasks_by_short = {"add": add, "mul": mul, "xsum": xsum, "echo": echo, "on_error": on_error}
    return app


class Capturer:
    def __init__(self, outdir):
        self.outdir = outdir
        self.queue = "golden-capture-" + uuid.uuid4().hex
        self.conn = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest", virtual_host="/")
        self.conn.connect()
        self.chan = self.conn.channel()
        self.chan.auto_decode = False  # keep body bytes exactly as published
        # Declared the way kombu declares Celery's queues (durable, not
        # auto-delete), so Celery's own declaration agrees with ours.
        self.chan.exchange_declare(self.queue, "direct", durable=True, auto_delete=False)
        self.chan.queue_declare(self.queue, durable=True, auto_delete=False)
        self.chan.queue_bind(self.queue, self.queue, self.queue)
        self.written = []

    def close(self):
        try:
            self.chan.queue_delete(self.queue)
            self.chan.exchange_delete(self.queue)
        finally:
            self.conn.close()

    def drain(self, want, timeout=10.0):
        """Read deliveries until want messages arrived (or timeout)."""
        got = []
        deadline = time.time() + timeout
        while len(got) < want and time.time() < deadline:
            msg = self.chan.basic_get(self.queue, no_ack=True)
            if msg is None:
                time.sleep(0.05)
                continue
            got.append(msg)
        # Anything left over belongs to nobody; make sure it does not leak
        # into the next case.
        time.sleep(0.1)
        while True:
            msg = self.chan.basic_get(self.queue, no_ack=True)
            if msg is None:
                break
            got.append(msg)
        if len(got) != want:
            raise SystemExit(f"expected {want} messages on {self.queue}, got {len(got)}")
        return got

    def write(self, name, description, msg, expect):
        props = msg.properties
        body = msg.body
        if isinstance(body, str):
            body = body.encode(props.get("content_encoding") or "utf-8")
        headers = props.get("application_headers") or {}
        doc = {
            "name": name,
            "description": description,
            "properties": {
                k: props.get(k)
                for k in (
                    "content_type",
                    "content_encoding",
                    "correlation_id",
                    "reply_to",
                    "delivery_mode",
                    "priority",
                    "expiration",
                )
            },
            "headers": jsonable_headers(headers),
            "body_base64": base64.b64encode(bytes(body)).decode("ascii"),
            "expect": expect,
        }
        path = os.path.join(self.outdir, name + ".json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f, sort_keys=True, indent=1, ensure_ascii=False)
            f.write("\n")
        self.written.append(path)
        print(f"wrote {path}")


def jsonable_headers(v):
    """AMQP header values as JSON. Celery only puts str/int/float/bool/None,
    lists and dicts in headers; anything else is a surprise worth failing on."""
    if isinstance(v, dict):
        return {str(k): jsonable_headers(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable_headers(x) for x in v]
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    if isinstance(v, bytes):
        raise TypeError(f"unexpected bytes header value {v!r}")
    raise TypeError(f"unexpected header value {v!r} ({type(v).__name__})")


def header_of(msg, key):
    return (msg.properties.get("application_headers") or {}).get(key)


def by_id(msgs):
    out = {}
    for m in msgs:
        tid = header_of(m, "id")
        if tid is None:  # protocol v1: the id lives in the body
            body = m.body
            if isinstance(body, bytes):
                body = body.decode("utf-8")
            tid = json.loads(body)["id"]
        out[tid] = m
    return out


def iso_unix(s):
    """Seconds since the epoch of an ISO-8601 header (naive means UTC, as Celery
    sends UTC)."""
    t = dt.datetime.fromisoformat(s)
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.timestamp()


def base_expect(task, tid, args, kwargs, **over):
    e = {
        "protocol": 2,
        "task": task,
        "id": tid,
        "root_id": tid,
        "parent_id": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "args": list(args),
        "kwargs": dict(kwargs),
        "eta_unix": None,
        "expires_unix": None,
        "timelimit": [None, None],
        "priority": None,
        "ignore_result": False,
        "compression": None,
        "content_type": "application/json",
        "callbacks": [],
        "errbacks": [],
        "chain": [],
        "chord": None,
    }
    e.update(over)
    return e


EVERY_JSON_TYPE_ARGS = [
    0,
    1,
    -1,
    2**31,
    2**53 + 1,
    2**63 - 1,
    -(2**63),
    2**64 + 5,
    -(2**70) - 3,
    1.5,
    -0.25,
    1e300,
    2.0,
    "",
    "héllo ✓ 日本",
    "quote\" backslash\\ newline\n tab\t nul\u0000 emoji 😀",
    None,
    True,
    False,
    [],
    {},
    [1, [2, [3, None]], {"k": [True, False]}],
    {"nested": {"deeper": {"list": [1.25, "x", None]}}, "ünï": "côdé"},
]
EVERY_JSON_TYPE_KWARGS = {
    "big": 2**64 + 5,
    "negbig": -(2**64) - 5,
    "max53": 2**53 + 1,
    "unicode": "héllo ✓ 日本",
    "none": None,
    "t": True,
    "f": False,
    "float": 3.141592653589793,
    "list": [1, "two", 3.0, None, [4]],
    "dict": {"a": {"b": {"c": []}}},
    "日本": "key is unicode",
}

MSGPACK_ARGS = [
    0,
    -1,
    127,
    -32,
    255,
    65536,
    2**32,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64 - 1,
    -(2**63),
    1.5,
    -2.75,
    0.1,
    "",
    "héllo ✓ 日本",
    None,
    True,
    False,
    [],
    {},
    [1, [2, [3, None]], {"k": [True, False]}],
    {"nested": {"deeper": {"list": [1.25, "x", None]}}},
]
MSGPACK_KWARGS = {"u64": 2**64 - 1, "i64": -(2**63), "s": "日本", "none": None, "f": 0.5, "l": [1, 2.5, "x"]}


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO_ROOT, "testdata", "golden")
    os.makedirs(outdir, exist_ok=True)
    cap = Capturer(outdir)
    try:
        run_cases(cap)
    finally:
        cap.close()
    print(f"{len(cap.written)} files written to {outdir}")


def run_cases(cap):
    q = cap.queue
    app = make_app(q)
    t = app.tasks_by_short
    add, xsum, echo, mul, on_error = t["add"], t["xsum"], t["echo"], t["mul"], t["on_error"]

    def one(name, description, task, args, kwargs, send_opts, expect_over=None):
        tid = send_opts.setdefault("task_id", fixed_id(len(cap.written) + 1))
        before = time.time()
        task.apply_async(args, kwargs, queue=q, **send_opts)
        after = time.time()
        (msg,) = cap.drain(1)
        exp = base_expect(task.name, tid, args, kwargs)
        if send_opts.get("serializer") == "msgpack":
            exp["content_type"] = "application/x-msgpack"
        if expect_over:
            exp.update(expect_over(msg, before, after) if callable(expect_over) else expect_over)
        cap.write(name, description, msg, exp)

    # --- plain v2 json -------------------------------------------------------
    one("v2_json_basic", "add.apply_async((2, 3)) with Celery 5.7 defaults (protocol 2, json).",
        add, (2, 3), {}, {})
    one("v2_json_kwargs", "add.apply_async(kwargs={'x': 40, 'y': 2}): kwargs only, empty args.",
        add, (), {"x": 40, "y": 2}, {})
    one("v2_json_every_type",
        "echo with every JSON type: unicode, escapes, nested lists/dicts, null, bools, floats, "
        "2**53+1, int64 limits, big ints beyond 64 bits (positive and negative).",
        echo, tuple(EVERY_JSON_TYPE_ARGS), EVERY_JSON_TYPE_KWARGS, {})

    # --- msgpack -----------------------------------------------------------------
    one("v2_msgpack", "echo with serializer='msgpack': ints across the msgpack widths up to uint64, "
        "floats, str, bools, None, nested containers.",
        echo, tuple(MSGPACK_ARGS), MSGPACK_KWARGS, {"serializer": "msgpack"})

    # --- compression -------------------------------------------------------------
    for comp, header in (("zlib", "application/x-gzip"), ("gzip", "application/x-gzip"),
                         ("bzip2", "application/x-bz2")):
        one(f"v2_json_{comp}", f"echo with compression={comp!r} (kombu's header value {header}).",
            echo, ("compressed", 2**64 + 5, ["x"] * 20), {"unicode": "日本"}, {"compression": comp},
            {"compression": header})
    one("v2_msgpack_zlib", "echo with serializer='msgpack' and compression='zlib'.",
        echo, (1, "two", 3.5), {"k": None}, {"serializer": "msgpack", "compression": "zlib"},
        {"compression": "application/x-gzip"})

    # --- times -------------------------------------------------------------------
    def eta_window(seconds):
        def f(msg, before, after):
            got = iso_unix(header_of(msg, "eta"))
            # Celery computes now + countdown itself; check it lies in the
            # window around the call, then record the exact value sent.
            assert before + seconds - 1 <= got <= after + seconds + 1, (got, before, after)
            return {"eta_unix": got}
        return f

    one("v2_countdown", "add.apply_async((1, 2), countdown=60): eta header = now + 60s.",
        add, (1, 2), {}, {"countdown": 60}, eta_window(60))

    eta = dt.datetime(2031, 2, 3, 4, 5, 6, 789012, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))
    one("v2_eta_offset", "add.apply_async((1, 2), eta=2031-02-03T04:05:06.789012+05:30): explicit "
        "eta with a non-UTC offset.",
        add, (1, 2), {}, {"eta": eta}, {"eta_unix": eta.timestamp()})

    def expires_window(msg, before, after):
        got = iso_unix(header_of(msg, "expires"))
        assert before + 119 <= got <= after + 121, (got, before, after)
        return {"expires_unix": got, "expiration": "120000"}

    one("v2_expires", "add.apply_async((1, 2), expires=120): expires header and AMQP expiration "
        "property (milliseconds).",
        add, (1, 2), {}, {"expires": 120}, expires_window)

    exp_at = dt.datetime(2031, 3, 1, 12, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=-7)))

    def expires_at(msg, before, after):
        return {"expires_unix": exp_at.timestamp(), "eta_unix": eta.timestamp()}

    one("v2_eta_expires_datetimes", "add with eta and expires both explicit aware datetimes "
        "(offsets +05:30 and -07:00).",
        add, (5, 6), {}, {"eta": eta, "expires": exp_at}, expires_at)

    one("v2_timelimit", "add.apply_async((1, 2), time_limit=10, soft_time_limit=5): timelimit header.",
        add, (1, 2), {}, {"time_limit": 10, "soft_time_limit": 5}, {"timelimit": [10, 5]})
    one("v2_timelimit_soft_only", "add with only soft_time_limit=2.5: timelimit [None, 2.5].",
        add, (1, 2), {}, {"soft_time_limit": 2.5}, {"timelimit": [None, 2.5]})

    one("v2_priority", "add.apply_async((1, 2), priority=5): priority property.",
        add, (1, 2), {}, {"priority": 5}, {"priority": 5})
    one("v2_ignore_result", "add.apply_async((1, 2), ignore_result=True): ignore_result header.",
        add, (1, 2), {}, {"ignore_result": True}, {"ignore_result": True})

    # --- links -------------------------------------------------------------------
    one("v2_link", "add.apply_async((2, 3), link=echo.s('cb'), link_error=on_error.s()): "
        "callbacks and errbacks in the embed.",
        add, (2, 3), {},
        {"link": echo.s("cb").set(task_id=fixed_id(900)), "link_error": on_error.s().set(task_id=fixed_id(901))},
        {"callbacks": ["gocelery.echo"], "errbacks": ["gocelery.on_error"],
         "callback_ids": [fixed_id(900)], "errback_ids": [fixed_id(901)]})
    one("v2_link_many", "add with two link signatures and two link_error signatures.",
        add, (2, 3), {},
        {"link": [echo.s("a"), mul.s(10)], "link_error": [on_error.s(), echo.si("err")]},
        {"callbacks": ["gocelery.echo", "gocelery.mul"], "errbacks": ["gocelery.on_error", "gocelery.echo"]})

    # --- canvas ------------------------------------------------------------------
    ids = [fixed_id(i) for i in (100, 101, 102)]
    c = chain(add.s(1, 2).set(task_id=ids[0]), add.s(3).set(task_id=ids[1]), add.s(4).set(task_id=ids[2]))
    c.apply_async(queue=q)
    msgs = by_id(cap.drain(1))
    cap.write("v2_chain", "chain(add.s(1, 2), add.s(3), add.s(4)).apply_async(): the first message; "
              "the embed chain holds the rest in wire order (next task last).",
              msgs[ids[0]],
              base_expect("gocelery.add", ids[0], [1, 2], {}, root_id=ids[0],
                          chain=["gocelery.add", "gocelery.add"], chain_ids=[ids[2], ids[1]]))

    ids = [fixed_id(i) for i in (110, 111, 112, 113)]
    c = chain(add.s(1, 2).set(task_id=ids[0]), mul.s(3).set(task_id=ids[1]),
              echo.s().set(task_id=ids[2]), xsum.si([1, 2]).set(task_id=ids[3]))
    c.apply_async(queue=q)
    msgs = by_id(cap.drain(1))
    cap.write("v2_chain_distinct", "chain(add.s(1, 2), mul.s(3), echo.s(), xsum.si([1, 2])): first "
              "message; distinct task names show the wire order (next task last).",
              msgs[ids[0]],
              base_expect("gocelery.add", ids[0], [1, 2], {},
                          chain=["gocelery.xsum", "gocelery.echo", "gocelery.mul"],
                          chain_ids=[ids[3], ids[2], ids[1]]))

    gid = fixed_id(200)
    ids = [fixed_id(201), fixed_id(202)]
    g = group(add.s(1, 1).set(task_id=ids[0]), add.s(2, 2).set(task_id=ids[1]))
    res = g.apply_async(task_id=gid, queue=q)
    assert res.id == gid, (res.id, gid)
    msgs = by_id(cap.drain(2))
    cap.write("v2_group_member", "group(add.s(1, 1), add.s(2, 2)).apply_async(): the second member "
              "(group header, group_index 1).",
              msgs[ids[1]],
              base_expect("gocelery.add", ids[1], [2, 2], {}, group=gid, group_index=1, root_id=ids[1]))
    cap.write("v2_group_member0", "group(add.s(1, 1), add.s(2, 2)).apply_async(): the first member "
              "(group_index 0).",
              msgs[ids[0]],
              base_expect("gocelery.add", ids[0], [1, 1], {}, group=gid, group_index=0, root_id=ids[0]))

    body_id = fixed_id(300)
    ids = [fixed_id(301), fixed_id(302)]
    ch = chord([add.s(1, 1).set(task_id=ids[0]), add.s(2, 2).set(task_id=ids[1])],
               xsum.s().set(task_id=body_id))
    res = ch.apply_async(queue=q)
    assert res.id == body_id, (res.id, body_id)
    msgs = by_id(cap.drain(2))
    m = msgs[ids[0]]
    gid = header_of(m, "group")
    root = header_of(m, "root_id")
    # Celery generates the chord's group id itself; both members must agree.
    assert gid and header_of(msgs[ids[1]], "group") == gid
    cap.write("v2_chord_member", "chord([add.s(1, 1), add.s(2, 2)], xsum.s()).apply_async() with a "
              "Redis result backend: a header member; the embed chord is the body signature.",
              m,
              base_expect("gocelery.add", ids[0], [1, 1], {}, group=gid, group_index=0, root_id=root,
                          chord="gocelery.xsum", chord_id=body_id))
    app.close()

    # --- protocol v1 -------------------------------------------------------------
    app1 = make_app(q, task_protocol=1)
    t1 = app1.tasks_by_short
    tid = fixed_id(400)
    eta1 = dt.datetime(2031, 2, 3, 4, 5, 6, 789012, tzinfo=dt.timezone.utc)
    exp1 = dt.datetime(2031, 2, 4, 0, 0, 0, tzinfo=dt.timezone.utc)
    t1["echo"].apply_async((2**53 + 1, "héllo ✓ 日本"), {"z": [1, None, 2.5]}, task_id=tid, queue=q,
                          eta=eta1, expires=exp1, time_limit=30, soft_time_limit=20,
                          link=t1["echo"].s(), link_error=t1["on_error"].s())
    (m,) = cap.drain(1)
    cap.write("v1_json", "task_protocol=1 (Celery 5.7 still produces v1 via as_task_v1): echo with "
              "args/kwargs, eta, expires, time limits, link and link_error; everything is in the "
              "dict body.",
              m,
              {
                  "protocol": 1,
                  "task": "gocelery.echo",
                  "id": tid,
                  "group": None,
                  "retries": 0,
                  "args": [2**53 + 1, "héllo ✓ 日本"],
                  "kwargs": {"z": [1, None, 2.5]},
                  "eta_unix": eta1.timestamp(),
                  "expires_unix": exp1.timestamp(),
                  "timelimit": [30, 20],
                  "priority": None,
                  "compression": None,
                  "content_type": "application/json",
                  "callbacks": ["gocelery.echo"],
                  "errbacks": ["gocelery.on_error"],
                  "chord": None,
              })
    tid = fixed_id(401)
    t1["echo"].apply_async((1,), {}, task_id=tid, queue=q, compression="zlib")
    (m,) = cap.drain(1)
    cap.write("v1_json_zlib", "task_protocol=1 with compression='zlib'.", m,
              {"protocol": 1, "task": "gocelery.echo", "id": tid, "args": [1], "kwargs": {},
               "eta_unix": None, "expires_unix": None, "timelimit": [None, None],
               "compression": "application/x-gzip", "content_type": "application/json",
               "callbacks": [], "errbacks": [], "chord": None})
    app1.close()


if __name__ == "__main__":
    main()
