#!/usr/bin/env bash
# broker.sh: a local RabbitMQ broker for leveret's tests.
#
#   scripts/broker.sh up [SERIES] install (if missing) and start a broker, wait until it answers AMQP;
#                                 SERIES 3.10 (the default: Debian 12's package, on this host), or
#                                 4.0 (Debian 13) or newest (Debian unstable), each with the defaults
#                                 RabbitMQ announces as the next ones, from a debootstrap chroot built
#                                 once (scripts/chroot-broker.sh: node lnext on 5690, or l40 on 5694)
#   scripts/broker.sh down        stop the broker (errors ignored)
#   scripts/broker.sh ctl ARGS... run rabbitmqctl ARGS
#   scripts/broker.sh node NAME PORT
#                                 start an extra, independent node NAME@host answering AMQP on
#                                 PORT (distribution port PORT+20000), for tests that stop and
#                                 start a broker (stop_app) without disturbing the default one
#   scripts/broker.sh tls         start an extra node (ltls, AMQP port 5674) with an amqps listener on
#                                 5671 (verify_peer, fail_if_no_peer_cert) and SASL EXTERNAL, using a
#                                 throw-away CA and certificates made by scripts/gencerts in
#                                 /var/lib/rabbitmq/leveret-ltls/certs; user leveret-client (the client
#                                 certificate's CN) may log in with EXTERNAL
#
# The broker address is taken from $AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/).
# "up" is idempotent: it does nothing when something already answers AMQP there. Debian's
# rabbitmq-server package is used; there is no init system, so the node is started with
# `rabbitmq-server -detached` and runs as the rabbitmq user with its state in /var/lib/rabbitmq.
set -euo pipefail

readonly READY_TIMEOUT=${BROKER_READY_TIMEOUT:-90} # seconds to wait for the AMQP handshake after a start
readonly LOCK_FILE=/tmp/leveret-broker.lock

# shellcheck source=scripts/tls-node.sh
. "$(dirname "$0")/tls-node.sh"

say() { printf 'broker: %s\n' "$*"; }
die() { printf 'broker: %s\n' "$*" >&2; exit 1; }

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
	SUDO=(sudo)
fi

# parse_addr sets HOST and PORT from $AMQP_URL. Only the authority matters here; the Go client
# does the strict parsing.
parse_addr() {
	local url=${AMQP_URL:-amqp://127.0.0.1:5672/}
	local scheme=${url%%://*} rest=${url#*://}
	local authority=${rest%%[/?#]*}
	authority=${authority##*@} # drop userinfo
	local default_port=5672
	[[ $scheme == amqps ]] && default_port=5671
	if [[ $authority == \[* ]]; then # [IPv6]:port
		HOST=${authority%%]*}
		HOST=${HOST#[}
		PORT=${authority#*]}
		PORT=${PORT#:}
	elif [[ $authority == *:* ]]; then
		HOST=${authority%%:*}
		PORT=${authority#*:}
	else
		HOST=$authority
		PORT=
	fi
	HOST=${HOST:-127.0.0.1}
	PORT=${PORT:-$default_port}
	SCHEME=$scheme
}

# probe succeeds when HOST:PORT answers the AMQP 0-9-1 protocol header with connection.start:
# a method frame (type 1) on channel 0 whose payload starts with class 10, method 10.
# The reply is shown as hex only, so no binary reaches the terminal.
probe() {
	if [[ $SCHEME == amqps ]]; then
		# No TLS client in bash: an open port is the best we can check.
		timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$HOST" "$PORT" 2>/dev/null
		return
	fi
	local hex
	hex=$(timeout 3 bash -c '
		exec 3<>"/dev/tcp/$0/$1" || exit 1
		printf "AMQP\000\000\011\001" >&3
		head -c 11 <&3 | od -An -v -tx1
	' "$HOST" "$PORT" 2>/dev/null) || true
	hex=${hex//[[:space:]]/}
	# type 01, channel 0000, size (4 bytes), class 000a, method 000a
	[[ $hex =~ ^010000[0-9a-f]{8}000a000a$ ]]
}

is_local() {
	[[ $HOST == 127.* || $HOST == localhost || $HOST == ::1 || $HOST == "$(hostname)" ]]
}

show_logs() {
	local f
	for f in /var/log/rabbitmq/*.log /var/log/rabbitmq/startup_log /var/log/rabbitmq/startup_err; do
		[[ -s $f ]] || continue
		printf '==> %s <==\n' "$f" >&2
		tail -n 40 "$f" >&2
	done
}

install_broker() {
	if dpkg -s rabbitmq-server >/dev/null 2>&1 && command -v rabbitmq-server >/dev/null; then
		return
	fi
	say "installing"
	local t0=$SECONDS
	# The lock timeout makes a concurrent apt run (e.g. a provisioning step) a wait, not a failure.
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get -qq -o DPkg::Lock::Timeout=300 update
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get -qq -o DPkg::Lock::Timeout=300 install -y --no-install-recommends \
		-o Dpkg::Options::=--force-unsafe-io rabbitmq-server >/dev/null
	say "installed after $((SECONDS - t0))s"
}

# ensure_guest recreates the default guest user (loopback-only by RabbitMQ's default
# loopback_users setting) if somebody deleted it.
ensure_guest() {
	if "${SUDO[@]}" rabbitmqctl -q list_users 2>/dev/null | grep -q '^guest[[:space:]]'; then
		return
	fi
	say "creating user guest"
	"${SUDO[@]}" rabbitmqctl -q add_user guest guest >/dev/null
	"${SUDO[@]}" rabbitmqctl -q set_user_tags guest administrator >/dev/null
	"${SUDO[@]}" rabbitmqctl -q set_permissions -p / guest '.*' '.*' '.*' >/dev/null
}

cmd_up() {
	parse_addr
	if probe; then
		exit 0
	fi
	is_local || die "nothing answers AMQP at $HOST:$PORT and it is not a local address"

	# Serialise concurrent "up" calls; the second one finds the node the first one started.
	exec 9>"$LOCK_FILE"
	flock 9
	if probe; then
		exit 0
	fi

	install_broker
	local t0=$SECONDS
	local node_env=()
	if [[ $PORT != 5672 ]]; then
		node_env=(RABBITMQ_NODE_PORT="$PORT")
	fi
	if "${SUDO[@]}" rabbitmqctl -q ping >/dev/null 2>&1; then
		# The node runs but its application was stopped (rabbitmqctl stop_app).
		say "starting app"
		"${SUDO[@]}" rabbitmqctl -q start_app >/dev/null 2>&1 9>&- || true
	else
		say "starting"
		# 9>&-: the node must not inherit the lock. cd /: the node keeps the directory it starts in
		# as its own, and a checkout deleted under a running node breaks its stop_app.
		(cd / && "${SUDO[@]}" env "${node_env[@]}" rabbitmq-server -detached >/dev/null 2>&1 9>&-) || true
	fi
	while ! probe; do
		if ((SECONDS - t0 >= READY_TIMEOUT)); then
			printf 'broker: not ready after %ds at %s:%s\n' "$READY_TIMEOUT" "$HOST" "$PORT" >&2
			show_logs
			exit 1
		fi
		sleep 0.5
	done
	say "ready after $((SECONDS - t0))s"
	ensure_guest
}

cmd_down() {
	command -v rabbitmqctl >/dev/null || return 0
	# With the pid file, rabbitmqctl stop returns only after the Erlang VM has exited, so an
	# immediate "up" does not collide with a node that is still shutting down.
	local pid_file
	pid_file=/var/lib/rabbitmq/mnesia/rabbit@$(hostname -s).pid
	if [[ -f $pid_file ]]; then
		"${SUDO[@]}" rabbitmqctl -q stop "$pid_file" >/dev/null 2>&1 || true
	else
		"${SUDO[@]}" rabbitmqctl -q stop >/dev/null 2>&1 || true
	fi
}

# cmd_node starts an extra independent node beside the default one (see BROKER-NOTES: own
# node name, ports, mnesia, logs, config; run as the rabbitmq user so it shares the cookie).
cmd_node() {
	local name=${1:?node name} port=${2:?AMQP port}
	HOST=127.0.0.1 PORT=$port SCHEME=amqp
	if probe; then
		return 0
	fi
	install_broker
	local base=/var/lib/rabbitmq/leveret-$name
	"${SUDO[@]}" mkdir -p "$base/mnesia" "$base/log"
	printf 'listeners.tcp.default = %s\n%s' "$port" "${NODE_CONF_EXTRA:-}" | "${SUDO[@]}" tee "$base/rabbitmq.conf" >/dev/null
	echo "[${NODE_PLUGINS:-}]." | "${SUDO[@]}" tee "$base/enabled_plugins" >/dev/null
	"${SUDO[@]}" chown -R rabbitmq:rabbitmq "$base"
	local t0=$SECONDS node=$name@$(hostname -s)
	if "${SUDO[@]}" rabbitmqctl -n "$node" -q ping >/dev/null 2>&1; then
		say "starting app of $node"
		"${SUDO[@]}" rabbitmqctl -n "$node" -q start_app >/dev/null 2>&1 || true
	else
		say "starting $node on port $port"
		# Started in its own directory, not the caller's (see cmd_up).
		(cd "$base" && "${SUDO[@]}" runuser -u rabbitmq -- env RABBITMQ_NODENAME="$node" RABBITMQ_NODE_PORT="$port" \
			RABBITMQ_DIST_PORT=$((port + 20000)) RABBITMQ_MNESIA_BASE="$base/mnesia" \
			RABBITMQ_LOG_BASE="$base/log" RABBITMQ_CONFIG_FILE="$base/rabbitmq" \
			RABBITMQ_ENABLED_PLUGINS_FILE="$base/enabled_plugins" RABBITMQ_PID_FILE="$base/pid" \
			/usr/lib/rabbitmq/bin/rabbitmq-server -detached >/dev/null 2>&1) || true
	fi
	while ! probe; do
		if ((SECONDS - t0 >= READY_TIMEOUT)); then
			printf 'broker: node %s not ready after %ds on port %s\n' "$node" "$READY_TIMEOUT" "$port" >&2
			tail -n 40 "$base"/log/*.log >&2 || true
			exit 1
		fi
		sleep 0.5
	done
	say "node $node ready after $((SECONDS - t0))s"
}

# cmd_tls starts the TLS node (see the usage at the top). The certificates are made once; the
# listener is checked by probe, which for amqps connects to the port (the Go tests do the rest).
cmd_tls() {
	local name=ltls port=5674 tls_port=5671
	local base=/var/lib/rabbitmq/leveret-$name node=$name@$(hostname -s)
	install_broker
	if [[ ! -s $base/certs/client-key.pem ]]; then
		say "making test certificates in $base/certs"
		"${SUDO[@]}" mkdir -p "$base/certs"
		(cd "$(dirname "$0")/.." && "${SUDO[@]}" "$(command -v go)" run ./scripts/gencerts -out "$base/certs")
	fi
	NODE_CONF_EXTRA="$(tls_conf "$tls_port" "$base/certs")
" NODE_PLUGINS=rabbitmq_auth_mechanism_ssl cmd_node "$name" "$port"
	local t0=$SECONDS
	HOST=127.0.0.1 PORT=$tls_port SCHEME=amqps # probe: an open port is all bash can check
	until probe; do
		if ((SECONDS - t0 >= READY_TIMEOUT)); then
			die "node $node: nothing listens on TLS port $tls_port"
		fi
		sleep 0.5
	done
	tls_client_user "${SUDO[@]}" rabbitmqctl -n "$node" -q
	say "node $node: amqps on port $tls_port"
}

case ${1:-} in
up)
	case ${2:-3.10} in
	3.10) cmd_up ;;
	newest) exec "$(dirname "$0")/chroot-broker.sh" node newest lnext 5690 next ;;
	4.0) exec "$(dirname "$0")/chroot-broker.sh" node 4.0 l40 5694 next ;;
	*) die "up: unknown series ${2} (3.10, 4.0 or newest)" ;;
	esac
	;;
tls) cmd_tls ;;
node)
	shift
	cmd_node "$@"
	;;
down) cmd_down ;;
ctl)
	shift
	exec "${SUDO[@]}" rabbitmqctl "$@"
	;;
*)
	echo "usage: $0 up [3.10|4.0|newest] | down | ctl ARGS... | node NAME PORT | tls" >&2
	exit 2
	;;
esac
