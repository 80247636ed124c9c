#!/usr/bin/env bash
# Screenshots of Flower 2.2 watching a gocelery worker and a Python Celery
# worker side by side (docs/flower.md): brings up RabbitMQ and Redis, the
# venv (with Flower, interop/requirements.txt), builds gocelery, starts
# Flower and both workers with -E, sends both the same tasks (success,
# failure, a retry, a long one left running, one held for its ETA), and
# takes headless Chromium screenshots of
#
#   docs/flower-workers.png           /workers
#   docs/flower-tasks.png             /tasks
#   docs/flower-worker-gocelery.png   /worker/<gocelery node>
#   docs/flower-worker-python.png     /worker/<python node>
#   docs/flower-worker-gocelery-system.png, docs/flower-worker-python-system.png
#                                     the same pages' System tab
#
# then stops everything it started. Installs Debian's chromium when missing.
# Run as root (or with sudo for apt-get) on a Debian machine:
#
#   bash scripts/flower-screenshot.sh [OUTDIR]      # OUTDIR defaults to docs
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${1:-docs}
mkdir -p "$OUT"

log() { echo "flower-screenshot: $*" >&2; }
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

if ! command -v chromium >/dev/null 2>&1; then
	log "installing chromium from Debian's packages"
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get install -y -qq chromium >/dev/null 2>&1 || {
		$SUDO apt-get update -qq
		$SUDO apt-get install -y -qq chromium >/dev/null
	}
fi

bash scripts/services.sh
PY=$(bash scripts/venv.sh)
mkdir -p .build
go build -o .build/gocelery ./cmd/gocelery

BROKER=${INTEROP_BROKER_URL:-amqp://guest:guest@127.0.0.1:5672//}
BACKEND=${INTEROP_RESULT_BACKEND:-redis://127.0.0.1:6379/1}
HOST=$(hostname)
TAG=$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')
GO_NODE="gocelery@$HOST"
PY_NODE="celery@$HOST"
GO_Q="flower-demo-go-$TAG"
PY_Q="flower-demo-py-$TAG"
WORK="$ROOT/.build/flower-screenshot"
rm -rf "$WORK" && mkdir -p "$WORK"
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"
export CELERY_BROKER_URL=$BROKER CELERY_RESULT_BACKEND=$BACKEND

pids=()
cleanup() {
	local pid
	# Only the processes started here, by their ids.
	# Warm shutdown first; then SIGQUIT, a cold shutdown (Celery's ends its
	# pool's children too); then SIGKILL.
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -QUIT "$pid" 2>/dev/null || continue
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
	done
	"$PY" - "$GO_Q" "$PY_Q" <<-'EOF' 2>/dev/null || true
		import os, sys
		from kombu import Connection
		with Connection(os.environ["CELERY_BROKER_URL"]) as c:
		    for q in sys.argv[1:]:
		        try:
		            c.default_channel.queue_delete(q)
		        except Exception:
		            pass
	EOF
}
trap cleanup EXIT

log "flower on $URL (log: $WORK/flower.log)"
(cd "$WORK" && FLOWER_UNAUTHENTICATED_API=true exec "$PY" -m celery --broker "$BROKER" --result-backend "$BACKEND" \
	flower --port="$PORT" --address=127.0.0.1 --persistent=False >"$WORK/flower.log" 2>&1) &
pids+=($!)

# flower_get PATH: the body of a GET, or fails.
flower_get() { "$PY" -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$URL$1"; }
deadline=$((SECONDS + 30))
until flower_get /healthcheck >/dev/null 2>&1; do
	[ $SECONDS -lt $deadline ] || { log "flower did not come up"; cat "$WORK/flower.log" >&2; exit 1; }
	sleep 0.2
done

log "gocelery worker $GO_NODE on $GO_Q, Python worker $PY_NODE on $PY_Q"
.build/gocelery worker -Q "$GO_Q" -n "$GO_NODE" -c 4 -E -l INFO >"$WORK/gocelery.log" 2>&1 &
pids+=($!)
(cd interop && PYTHONPATH=$ROOT/interop exec "$PY" -m celery -A pytasks worker -Q "$PY_Q" -n "$PY_NODE" \
	-c 4 -P prefork -E -l INFO >"$WORK/python.log" 2>&1) &
pids+=($!)

log "sending tasks to both workers"
"$PY" - "$GO_Q" "$PY_Q" "$GO_NODE" "$PY_NODE" "$URL" <<'EOF'
import json, os, sys, time, urllib.request
from celery import Celery

go_q, py_q, go_node, py_node, url = sys.argv[1:]
app = Celery(broker=os.environ["CELERY_BROKER_URL"], backend=os.environ["CELERY_RESULT_BACKEND"])
app.conf.accept_content = app.conf.result_accept_content = ["json", "msgpack"]

def workers_page():
    with urllib.request.urlopen(url + "/workers?json=1", timeout=5) as r:
        return {w["hostname"]: w for w in json.loads(r.read())["data"]}

def wait(cond, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            sys.exit(f"flower-screenshot: timed out waiting for {what}")
        time.sleep(0.2)

for q in (go_q, py_q):  # both workers up (the Python one takes a few seconds)
    app.send_task("gocelery.noop", queue=q).get(timeout=60)
wait(lambda: {go_node, py_node} <= set(workers_page()), "Flower to list both workers")
for q in (go_q, py_q):
    send = lambda name, *args, **opts: app.send_task(name, args=list(args), queue=q, **opts)
    done = [send("gocelery.add", 2, 3), send("gocelery.echo", "hello", 42),
            send("gocelery.flaky", 1, 1), send("gocelery.progress", 3, 0.1)]
    failed = [send("gocelery.fail", "ValueError", "boom"), send("gocelery.fail", "KeyError", "k")]
    send("gocelery.sleep", 120)  # still running in the screenshots
    send("gocelery.add", 4, 5, countdown=600)  # held for its ETA
    for r in done:
        r.get(timeout=30)
    for r in failed:
        r.get(timeout=30, propagate=False)

def settled():
    rows = workers_page()
    return all(rows.get(n, {}).get("status") and rows[n].get("task-succeeded", 0) >= 5
               and rows[n].get("active") for n in (go_node, py_node))
wait(settled, "the Workers page to show both workers' tasks")
EOF

shot() { # FILE PATH
	log "screenshot $1 <- $URL$2"
	chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$WORK/chromium" \
		--window-size=1400,900 --force-prefers-reduced-motion --virtual-time-budget=4000 --screenshot="$1" "$URL$2" >"$WORK/chromium.log" 2>&1 || {
		cat "$WORK/chromium.log" >&2
		exit 1
	}
	[ -s "$1" ] || { log "no screenshot written to $1"; exit 1; }
}
shot "$OUT/flower-workers.png" /workers
shot "$OUT/flower-tasks.png" /tasks
shot "$OUT/flower-worker-gocelery.png" "/worker/$GO_NODE"
shot "$OUT/flower-worker-python.png" "/worker/$PY_NODE"
shot "$OUT/flower-worker-gocelery-system.png" "/worker/$GO_NODE#tab-system"
shot "$OUT/flower-worker-python-system.png" "/worker/$PY_NODE#tab-system"

# Stop the long tasks so the workers' warm shutdown is quick.
"$PY" - "$GO_NODE" "$PY_NODE" <<'EOF'
import os, sys
from celery import Celery
app = Celery(broker=os.environ["CELERY_BROKER_URL"])
for node, tasks in (app.control.inspect(sys.argv[1:], timeout=3).active() or {}).items():
    for t in tasks:
        app.control.revoke(t["id"], terminate=True, destination=[node])
EOF
log "done: $(ls "$OUT"/flower-*.png | tr '\n' ' ')"
