#!/usr/bin/env bash
# Brings up everything the demo needs (RabbitMQ, Redis, the Python
# virtualenv, the gocelery binary), starts `gocelery worker -Q demo`, sends
# tasks to it from plain Python Celery and prints the results.
# With --keep the worker stays in the foreground afterwards (Ctrl-C stops it).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh
bash scripts/venv.sh >/dev/null
mkdir -p .build
go build -o .build/gocelery ./cmd/gocelery

export CELERY_BROKER_URL=amqp://guest:guest@127.0.0.1:5672//
export CELERY_RESULT_BACKEND=redis://127.0.0.1:6379/0
.build/gocelery worker -Q demo -c 8 -n demo@%h -l INFO &
worker=$!
trap 'kill -TERM $worker 2>/dev/null; wait $worker 2>/dev/null || true' EXIT

.venv/bin/python interop/demo.py demo

if [ "${1:-}" = "--keep" ]; then
  echo "worker running (pid $worker); Ctrl-C to stop"
  wait $worker
fi
