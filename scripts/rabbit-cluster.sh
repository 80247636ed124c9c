#!/usr/bin/env bash
# A three-node RabbitMQ cluster of the tests' own on loopback, beside (never
# touching) the shared node on 5672: nodes gccluster1..3@localhost listen on
# 127.0.0.1:5801..5803 (distribution ports 25801..25803), data under
# $GOCELERY_CLUSTER_DIR (default /tmp/gocelery-cluster).
#
#   scripts/rabbit-cluster.sh start          # start the three nodes, cluster them
#   scripts/rabbit-cluster.sh stop-node N    # stop node N (a fault)
#   scripts/rabbit-cluster.sh start-node N   # bring node N back
#   scripts/rabbit-cluster.sh stop           # stop every node, remove the data
set -euo pipefail

BASE=${GOCELERY_CLUSTER_DIR:-/tmp/gocelery-cluster}
NODES=3
log() { echo "rabbit-cluster: $*" >&2; }
node() { echo "gccluster$1@localhost"; }
ctl() { local n=$1; shift; rabbitmqctl -q -n "$(node "$n")" "$@"; }

# wait_for SECONDS CMD...: polls CMD until it succeeds.
wait_for() {
	local secs=$1; shift
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if [ $SECONDS -ge $deadline ]; then
			log "timed out after ${secs}s: $*"
			return 1
		fi
		sleep 0.2
	done
}

# all_running: every node of the cluster is up and clustered.
all_running() {
	local n
	n=$(ctl 1 cluster_status --formatter json | tr -d '\n' | grep -o '"running_nodes":\[[^]]*\]' | grep -o gccluster | wc -l)
	[ "$n" -eq "$NODES" ]
}

start_node() {
	local i=$1 dir="$BASE/n$1"
	if ctl "$i" ping >/dev/null 2>&1; then
		return 0
	fi
	mkdir -p "$dir"
	[ -f "$dir/enabled_plugins" ] || echo '[].' >"$dir/enabled_plugins"
	if id rabbitmq >/dev/null 2>&1; then chown -R rabbitmq:rabbitmq "$BASE"; fi
	# Debian's wrapper runs the node as the rabbitmq user and keeps the
	# environment, so each node gets its own name, ports and data.
	RABBITMQ_NODENAME="$(node "$i")" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
		RABBITMQ_NODE_PORT=$((5800 + i)) RABBITMQ_DIST_PORT=$((25800 + i)) \
		RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" \
		RABBITMQ_PID_FILE="$dir/pid" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
		ERL_EPMD_ADDRESS=127.0.0.1 rabbitmq-server -detached
	wait_for 90 ctl "$i" await_startup
}

case "${1:-}" in
start)
	for i in $(seq 1 $NODES); do start_node "$i"; done
	for i in $(seq 2 $NODES); do
		if ! ctl 1 cluster_status --formatter json | grep -q "$(node "$i")"; then
			{
				ctl "$i" stop_app
				ctl "$i" reset
				ctl "$i" join_cluster "$(node 1)"
				ctl "$i" start_app
			} >/dev/null 2>&1
		fi
	done
	wait_for 60 all_running
	log "cluster of $NODES nodes on 127.0.0.1:5801..$((5800 + NODES))"
	;;
stop-node)
	ctl "$2" stop
	;;
start-node)
	start_node "$2"
	;;
stop)
	for i in $(seq 1 $NODES); do ctl "$i" stop >/dev/null 2>&1 || true; done
	rm -rf "$BASE"
	;;
*)
	echo "usage: $0 start|stop|stop-node N|start-node N" >&2
	exit 2
	;;
esac
