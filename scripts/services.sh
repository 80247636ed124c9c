#!/usr/bin/env bash
# Brings up what the tests and the demo need on loopback: RabbitMQ and Redis
# from Debian's packages. Installs them when missing; a server already
# answering is left alone, so running this twice is fine. The RabbitMQ node
# this starts is a scratch node for tests and demos: its data is wiped at each start.
set -euo pipefail

log() { echo "services: $*" >&2; }
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v rabbitmq-server >/dev/null 2>&1 || need+=(rabbitmq-server)
if [ ${#need[@]} -gt 0 ]; then
	log "installing ${need[*]} from Debian's packages"
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -qq
	# The packages try to start their services through invoke-rc.d, which a
	# container without an init refuses; that is harmless, we start them below.
	$SUDO apt-get install -y -qq "${need[@]}" >/dev/null || {
		command -v redis-server >/dev/null && command -v rabbitmq-server >/dev/null || exit 1
	}
fi

# port_open HOST PORT: true when something accepts TCP connections there.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# wait_for NAME SECONDS CMD...: polls CMD until it succeeds.
wait_for() {
	local name=$1 secs=$2; shift 2
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if [ $SECONDS -ge $deadline ]; then
			log "$name did not come up within ${secs}s"
			return 1
		fi
		sleep 0.2
	done
}

if port_open 127.0.0.1 6379; then
	log "redis already running on 127.0.0.1:6379"
else
	log "starting redis on 127.0.0.1:6379"
	redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save '' --appendonly no \
		--logfile /tmp/gocelery-redis.log
	wait_for redis 30 redis-cli -h 127.0.0.1 -p 6379 ping
fi

if port_open 127.0.0.1 5672; then
	log "rabbitmq already running on 127.0.0.1:5672"
else
	log "starting rabbitmq on 127.0.0.1:5672"
	export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
	export RABBITMQ_NODENAME=rabbit@localhost
	export RABBITMQ_DIST_PORT=25672
	export ERL_EPMD_ADDRESS=127.0.0.1
	# A scratch node: its data starts empty at every start. The tests leave
	# durable queues behind (quorum queues, delay levels); a node that had
	# to recover a thousand of them was stuck at boot on a killed machine.
	data=${GOCELERY_RABBITMQ_DATA:-/var/lib/rabbitmq/gocelery-scratch}
	export RABBITMQ_MNESIA_BASE=$data/mnesia
	rm -rf "$data"
	mkdir -p "$data/mnesia" /var/log/rabbitmq
	# The Debian package's env file may pin a node name; ours wins.
	if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then
		mkdir -p /var/lib/rabbitmq
		chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq 2>/dev/null || true
	fi
	rabbitmq-server -detached
	wait_for rabbitmq 120 port_open 127.0.0.1 5672
	wait_for rabbitmq 60 rabbitmqctl -n rabbit@localhost await_startup
fi
