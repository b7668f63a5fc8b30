#!/usr/bin/env bash
# cluster.sh: a 3-node RabbitMQ cluster on this machine, for leveret's cluster tests.
#
#   scripts/cluster.sh up [SERIES]      start the three nodes (if needed) and join them into one
#                                       cluster; start the app of a node a test left stopped
#   scripts/cluster.sh down [SERIES]    stop the three nodes (errors ignored)
#   scripts/cluster.sh status [SERIES]  print each node's AMQP port and whether it runs in the
#                                       cluster; exit 1 unless all three do
#
# SERIES is 3.10 (the default: the host's RabbitMQ, Debian 12) or a 4.x series of
# scripts/chroot-broker.sh (4.0, newest), whose nodes run from its chroot with the next defaults
# and keep their metadata in Khepri where the series does.
# 3.10: nodes lc1, lc2 and lc3 @ this host, answering AMQP on 5681, 5682 and 5683 (distribution
# ports 25681-25683), each started by `scripts/broker.sh node` (own mnesia, logs and config under
# /var/lib/rabbitmq/leveret-NAME, run as the rabbitmq user so they share the Erlang cookie).
# 4.x: nodes lx1, lx2 and lx3 on 5685, 5686 and 5687, started by `scripts/chroot-broker.sh node`.
# The second and third join the first with join_cluster (BROKER-NOTES: about 25 s in all).
# "up" is idempotent: a node already in the cluster is left alone.
set -euo pipefail

readonly SERIES=${2:-3.10}
if [[ $SERIES == 3.10 ]]; then
	readonly NODES=(lc1 lc2 lc3) PORTS=(5681 5682 5683)
else
	readonly NODES=(lx1 lx2 lx3) PORTS=(5685 5686 5687)
fi
readonly JOIN_TIMEOUT=${CLUSTER_JOIN_TIMEOUT:-60} # seconds for all three to run in one cluster
here=$(cd "$(dirname "$0")" && pwd)
host=$(hostname -s)

say() { printf 'cluster: %s\n' "$*"; }
die() { printf 'cluster: %s\n' "$*" >&2; exit 1; }

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
	SUDO=(sudo)
fi

# ctl NODE ARGS... runs rabbitmqctl ARGS against NODE of the series.
ctl() {
	local node=$1
	shift
	if [[ $SERIES == 3.10 ]]; then
		"${SUDO[@]}" rabbitmqctl -q -n "$node@$host" "$@"
	else
		"$here/chroot-broker.sh" ctl "$SERIES" "$node" -q "$@"
	fi
}

# start_node NODE PORT starts NODE of the series, if it is not running.
start_node() {
	if [[ $SERIES == 3.10 ]]; then
		"$here/broker.sh" node "$1" "$2"
	else
		"$here/chroot-broker.sh" node "$SERIES" "$1" "$2" next
	fi
}

# running NODE prints how many cluster nodes NODE sees running (0 if it does not answer).
running() {
	local n
	n=$(ctl "$1" eval 'length(rabbit_nodes:all_running()).' 2>/dev/null | tr -dc '0-9') || true
	echo "${n:-0}"
}

# member NODE succeeds when NODE runs in the first node's cluster.
member() {
	ctl "${NODES[0]}" eval "lists:member('$1@$host', rabbit_nodes:all_running())." 2>/dev/null | grep -q true
}

cmd_up() {
	local t0=$SECONDS i pids=()
	# Boot the three in parallel: a node that was clustered before waits for its peers at boot.
	for i in "${!NODES[@]}"; do
		start_node "${NODES[$i]}" "${PORTS[$i]}" &
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
		say "joining $node@$host to ${NODES[0]}@$host"
		local step out
		for step in stop_app reset "join_cluster ${NODES[0]}@$host" start_app; do
			# shellcheck disable=SC2086 # step is a command and its argument
			out=$(ctl "$node" $step 2>&1) || die "$node: rabbitmqctl $step failed: $out"
		done
	done
	while (($(running "${NODES[0]}") < 3)); do
		if ((SECONDS - t0 >= JOIN_TIMEOUT)); then
			cmd_status >&2 || true
			die "the three nodes do not run in one cluster after ${JOIN_TIMEOUT}s"
		fi
		sleep 0.5
	done
	say "3 nodes ($SERIES) running after $((SECONDS - t0))s (AMQP ports ${PORTS[*]})"
}

cmd_down() {
	local node
	for node in "${NODES[@]}"; do
		if [[ $SERIES != 3.10 ]]; then
			"$here/chroot-broker.sh" stop "$SERIES" "$node"
			continue
		fi
		command -v rabbitmqctl >/dev/null || return 0
		local pid_file=/var/lib/rabbitmq/leveret-$node/pid
		if [[ -f $pid_file ]]; then
			ctl "$node" stop "$pid_file" >/dev/null 2>&1 || true
		else
			ctl "$node" stop >/dev/null 2>&1 || true
		fi
	done
}

cmd_status() {
	local i ok=0
	for i in "${!NODES[@]}"; do
		local node=${NODES[$i]} state=down
		if ctl "$node" ping >/dev/null 2>&1; then
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
	echo "usage: $0 up|down|status [3.10|4.0|newest]" >&2
	exit 2
	;;
esac
