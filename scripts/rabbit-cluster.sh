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
HERE=$(cd "$(dirname "$0")" && pwd)
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

# start_node N: scripts/rabbit-node.sh starts it (own name, ports, data);
# a node already up is left alone.
start_node() {
	if ctl "$1" ping >/dev/null 2>&1; then
		return 0
	fi
	mkdir -p "$BASE"
	bash "$HERE/rabbit-node.sh" start "gccluster$1" $((5800 + $1)) "$BASE/n$1"
}

case "${1:-}" in
start)
	# Data left by a run that was killed (no node answers) is stale: begin afresh.
	up=0
	for i in $(seq 1 $NODES); do ctl "$i" ping >/dev/null 2>&1 && up=1; done
	[ $up = 1 ] || rm -rf "$BASE"
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
	bash "$HERE/rabbit-node.sh" halt "gccluster$2" $((5800 + $2)) "$BASE/n$2"
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
