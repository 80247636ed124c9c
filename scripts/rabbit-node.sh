#!/usr/bin/env bash
# A RabbitMQ node of a test's own, beside the shared one on 5672, from
# Debian's rabbitmq-server: its own node name, ports and data directory, no
# plugins (so no management listener clashes).
#
#   scripts/rabbit-node.sh start NAME PORT [DIR]   start NAME@localhost on PORT, wait until it is up
#   scripts/rabbit-node.sh stop NAME PORT [DIR]    stop it and remove DIR
#   scripts/rabbit-node.sh halt NAME PORT [DIR]    stop it, keeping DIR (a cluster member that comes back)
#   scripts/rabbit-node.sh restart NAME PORT [DIR] stop the node (data kept), start it again
#   scripts/rabbit-node.sh kill-conns NAME PORT    close every client connection
#
# The Erlang distribution port is PORT+20000; DIR defaults to
# $TMPDIR/gocelery-rabbit-NAME. The node listens on 127.0.0.1 only.
set -euo pipefail

cmd=${1:?usage: rabbit-node.sh start|stop|halt|restart|kill-conns NAME PORT [DIR]}
name=${2:?node name}
port=${3:?AMQP port}
dir=${4:-${TMPDIR:-/tmp}/gocelery-rabbit-$name}
node="$name@localhost"

case $name in rabbit) echo "rabbit-node: refusing the shared node's name" >&2; exit 2 ;; esac
if [ "$port" = 5672 ]; then echo "rabbit-node: refusing the shared port 5672" >&2; exit 2; fi

export RABBITMQ_NODENAME=$node
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT=$port
export RABBITMQ_DIST_PORT=$((port + 20000))
export ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_MNESIA_BASE=$dir/mnesia
export RABBITMQ_LOG_BASE=$dir/log
export RABBITMQ_PID_FILE=$dir/pid
export RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins
export RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf
export RABBITMQ_ADVANCED_CONFIG_FILE=$dir/advanced.config

ctl() { rabbitmqctl -q -n "$node" "$@"; }

start() {
	mkdir -p "$dir/mnesia" "$dir/log"
	[ -f "$dir/enabled_plugins" ] || echo '[].' >"$dir/enabled_plugins"
	# Plenty of disk for a test; the default alarm limit would block
	# publishers on a small tmpfs.
	[ -f "$dir/rabbitmq.conf" ] || printf 'disk_free_limit.absolute = 1MB\nloopback_users = none\n' >"$dir/rabbitmq.conf"
	if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then
		# Debian's wrapper runs the server as the rabbitmq user.
		chown -R rabbitmq:rabbitmq "$dir"
		chmod 755 "$dir"
	fi
	rabbitmq-server -detached
	# The node is not known to epmd for a moment: poll, then wait for boot.
	local deadline=$((SECONDS + 120))
	until ctl await_startup --timeout 60 >/dev/null 2>&1; do
		if [ $SECONDS -ge $deadline ]; then
			echo "rabbit-node: $node did not start within 120s; see $dir/log" >&2
			return 1
		fi
		sleep 0.3
	done
}

stop() {
	ctl stop 2>/dev/null || true
	# stop returns once the Erlang VM has halted; wait for the port to close.
	for _ in $(seq 1 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || return 0
		sleep 0.1
	done
	echo "rabbit-node: $node still listening on $port" >&2
	return 1
}

case $cmd in
start) start ;;
stop) stop; rm -rf "$dir" ;;
halt) stop ;;
restart) stop; start ;;
kill-conns) ctl close_all_connections "fault injected by the test" ;;
*) echo "rabbit-node: unknown command $cmd" >&2; exit 2 ;;
esac
