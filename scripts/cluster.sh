#!/usr/bin/env bash
# cluster.sh: a 3-node RabbitMQ cluster on this machine, for leveret's cluster tests.
#
#   scripts/cluster.sh up      start the three nodes (if needed) and join them into one cluster;
#                              start the app of a node a test left stopped
#   scripts/cluster.sh down    stop the three nodes (errors ignored)
#   scripts/cluster.sh status  print each node's AMQP port and whether it runs in the cluster;
#                              exit 1 unless all three do
#
# The nodes are lc1, lc2 and lc3 @ this host, answering AMQP on 5681, 5682 and 5683
# (distribution ports 25681-25683), each started by `scripts/broker.sh node` (own mnesia,
# logs and config under /var/lib/rabbitmq/leveret-NAME, run as the rabbitmq user so they share
# the Erlang cookie). lc2 and lc3 join lc1 with join_cluster (BROKER-NOTES: about 25 s in all).
# "up" is idempotent: a node already in the cluster is left alone.
set -euo pipefail

readonly NODES=(lc1 lc2 lc3)
readonly PORTS=(5681 5682 5683)
readonly JOIN_TIMEOUT=${CLUSTER_JOIN_TIMEOUT:-60} # seconds for all three to run in one cluster
here=$(cd "$(dirname "$0")" && pwd)
host=$(hostname -s)

say() { printf 'cluster: %s\n' "$*"; }
die() { printf 'cluster: %s\n' "$*" >&2; exit 1; }

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
	SUDO=(sudo)
fi
ctl() { "${SUDO[@]}" rabbitmqctl -q "$@"; }

# running NODE prints how many cluster nodes NODE sees running (0 if it does not answer).
running() {
	local n
	n=$(ctl -n "$1@$host" eval 'length(rabbit_nodes:all_running()).' 2>/dev/null | tr -dc '0-9') || true
	echo "${n:-0}"
}

# member NODE succeeds when NODE runs in lc1's cluster.
member() {
	ctl -n "lc1@$host" eval "lists:member('$1@$host', rabbit_nodes:all_running())." 2>/dev/null | grep -q true
}

cmd_up() {
	local t0=$SECONDS i pids=()
	# Boot the three in parallel: a node that was clustered before waits for its peers at boot.
	for i in "${!NODES[@]}"; do
		"$here/broker.sh" node "${NODES[$i]}" "${PORTS[$i]}" &
		pids+=($!)
	done
	local failed=0
	for i in "${pids[@]}"; do
		wait "$i" || failed=1
	done
	((failed == 0)) || die "a node did not start"
	local node
	for node in "${NODES[@]:1}"; do
		if member "$node"; then
			continue
		fi
		say "joining $node@$host to lc1@$host"
		local step out
		for step in stop_app reset "join_cluster lc1@$host" start_app; do
			# shellcheck disable=SC2086 # step is a command and its argument
			out=$(ctl -n "$node@$host" $step 2>&1) || die "$node: rabbitmqctl $step failed: $out"
		done
	done
	while (($(running lc1) < 3)); do
		if ((SECONDS - t0 >= JOIN_TIMEOUT)); then
			cmd_status >&2 || true
			die "the three nodes do not run in one cluster after ${JOIN_TIMEOUT}s"
		fi
		sleep 0.5
	done
	say "3 nodes running after $((SECONDS - t0))s (AMQP ports ${PORTS[*]})"
}

cmd_down() {
	command -v rabbitmqctl >/dev/null || return 0
	local node
	for node in "${NODES[@]}"; do
		local pid_file=/var/lib/rabbitmq/leveret-$node/pid
		if [[ -f $pid_file ]]; then
			ctl -n "$node@$host" stop "$pid_file" >/dev/null 2>&1 || true
		else
			ctl -n "$node@$host" stop >/dev/null 2>&1 || true
		fi
	done
}

cmd_status() {
	local i ok=0
	for i in "${!NODES[@]}"; do
		local node=${NODES[$i]} state=down
		if ctl -n "$node@$host" ping >/dev/null 2>&1; then
			state="app stopped"
			if member "$node"; then
				state=running
				ok=$((ok + 1))
			fi
		fi
		printf '%s@%s\tport %s\t%s\n' "$node" "$host" "${PORTS[$i]}" "$state"
	done
	((ok == 3))
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*)
	echo "usage: $0 up | down | status" >&2
	exit 2
	;;
esac
