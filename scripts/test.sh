#!/usr/bin/env bash
# Runs every test the project has: go vet, go test -race, a bounded fuzz run
# of the decoders, and the Python interop suite against real RabbitMQ, Redis
# and Python Celery 5.7. Services and the virtualenv are brought up first.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh
bash scripts/venv.sh >/dev/null

echo "== go vet"
go vet ./...
echo "== the worker knows no broker library"
if go list -deps ./worker | grep -E 'amqp091|gocelery/amqp$|gocelery/redisbroker$'; then
  echo "worker/ must reach brokers only through broker/ (see the list above)" >&2
  exit 1
fi
echo "== go test -race"
go test -race -count=1 ./...
echo "== fuzz (bounded)"
# fuzz TARGET TIME runs one target. Go 1.26's fuzzing coordinator can fail a
# run that found nothing with a bare "context deadline exceeded" as -fuzztime
# ends (reported as golang/go#75804; fixed in Go 1.27): that, and only that (no failing
# input written), is run again, at most twice.
fuzz() {
  local out try rc=1
  out=$(mktemp)
  for try in 1 2 3; do
    if go test -run '^$' -fuzz "^$1\$" -fuzztime "${FUZZTIME:-$2}" ./protocol 2>&1 | tee "$out"; then
      rc=0
      break
    fi
    if ! grep -q '^    context deadline exceeded$' "$out" || grep -q 'Failing input written to' "$out"; then
      break
    fi
    echo "fuzz $1: the Go 1.26 coordinator's deadline race (no failing input); running it again" >&2
  done
  rm -f "$out"
  return "$rc"
}
fuzz FuzzDecode 20s
fuzz FuzzDecodeJSON 10s
fuzz FuzzDecodeMsgpack 10s
fuzz FuzzDecodeJSONWTF8 10s
mkdir -p .build
go build -o .build/gocelery ./cmd/gocelery
go build -o .build/orders ./examples/orders
go build -o .build/faultworker ./internal/faultworker
echo "== faults (own RabbitMQ node and Redis servers; about two minutes)"
timeout 600 .venv/bin/python interop/faults/run.py --worker go --check
echo "== interop (Python Celery against gocelery and the Python worker)"
GOCELERY_BIN="$PWD/.build/gocelery" GOCELERY_EXAMPLE_BIN="$PWD/.build/orders" .venv/bin/python -m pytest interop -p no:cacheprovider "$@"
echo "== interop on a Redis broker (both workers; its own DB, results in DB 1)"
# A representative part of the suite: the same tests, the broker swapped;
# AMQP-only cases skip themselves, test_redis_broker.py runs only here.
INTEROP_BROKER_URL="${INTEROP_REDIS_BROKER_URL:-redis://127.0.0.1:6379/4}" \
  GOCELERY_BIN="$PWD/.build/gocelery" GOCELERY_EXAMPLE_BIN="$PWD/.build/orders" .venv/bin/python -m pytest \
  interop/test_worker.py interop/test_semantics.py interop/test_canvas.py interop/test_control.py \
  interop/test_events.py interop/test_cli.py interop/test_cli_client.py interop/test_client.py interop/test_redis_broker.py \
  -p no:cacheprovider "$@"
