#!/usr/bin/env bash
# chroot-broker.sh: RabbitMQ 4.x nodes for leveret's tests, from Debian's packages, each series in
# a debootstrap chroot of its own beside the host's 3.10 (see BROKER-NOTES, "RabbitMQ 4.x").
#
#   scripts/chroot-broker.sh build SERIES      build the chroot of SERIES once (reused after)
#   scripts/chroot-broker.sh node SERIES NAME PORT [next]
#                                              start node NAME@host from SERIES's chroot, answering
#                                              AMQP on 127.0.0.1:PORT (distribution port PORT+20000);
#                                              with "next", the defaults RabbitMQ announces as the
#                                              next ones: every deprecated feature the series lists
#                                              is denied (deprecated_features.permit.* = false)
#   scripts/chroot-broker.sh oauth SERIES NAME PORT
#                                              a node (with the next defaults) that also takes OAuth 2
#                                              tokens (rabbitmq_auth_backend_oauth2, before the internal
#                                              users): JWTs for audience "rabbitmq" signed with RS256 by
#                                              the test key $LEVERET_OAUTH_KEY (default
#                                              /var/lib/leveret/oauth/signing.key, made once), key id
#                                              "leveret"
#   scripts/chroot-broker.sh tls SERIES NAME PORT TLSPORT
#                                              a node (with the next defaults) that also answers amqps
#                                              on 127.0.0.1:TLSPORT, as scripts/broker.sh tls does for
#                                              3.10: its certificates (from $LEVERET_TLS_CERTS, default
#                                              /var/lib/rabbitmq/leveret-ltls/certs: run that first),
#                                              verify_peer, fail_if_no_peer_cert, SASL EXTERNAL for the
#                                              user leveret-client
#   scripts/chroot-broker.sh ctl SERIES NAME ARGS...
#                                              rabbitmqctl ARGS against NAME, from the chroot
#   scripts/chroot-broker.sh stop SERIES NAME  stop the node (errors ignored)
#   scripts/chroot-broker.sh resolve SERIES    print the series a request resolves to (see below)
#
# SERIES is 4.0 (Debian 13, trixie: RabbitMQ 4.0.x) or newest (Debian unstable, sid: the newest
# 4.x Debian packages). Debian unstable can be briefly uninstallable during a package transition:
# when the newest series cannot be built, "newest" falls back to 4.0 and says so on stderr, so a
# run does not fail for a reason outside the project. Chroots live in $LEVERET_CHROOTS (default
# /var/lib/leveret/chroots); each series has its own epmd port, apart from the host's.
set -euo pipefail

readonly CHROOTS=${LEVERET_CHROOTS:-/var/lib/leveret/chroots}
readonly MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
readonly READY_TIMEOUT=${BROKER_READY_TIMEOUT:-90}

# shellcheck source=scripts/tls-node.sh
. "$(dirname "$0")/tls-node.sh"

say() { printf 'chroot-broker: %s\n' "$*"; }
die() { printf 'chroot-broker: %s\n' "$*" >&2; exit 1; }

if [[ $(id -u) -ne 0 ]]; then # debootstrap, chroot and mounts need root
	exec sudo -E "$0" "$@"
fi

# suite_of and epmd_of map a series to its Debian suite and its epmd port.
suite_of() {
	case $1 in
	4.0) echo trixie ;;
	newest) echo sid ;;
	*) die "unknown series $1 (want 4.0 or newest)" ;;
	esac
}
epmd_of() {
	case $1 in
	4.0) echo 4370 ;;
	newest) echo 4371 ;;
	esac
}

# build makes the chroot of a series once: debootstrap into a temporary directory, renamed when
# complete, so an interrupted build is never taken for a finished one.
build() {
	local series=$1 suite dir
	suite=$(suite_of "$series")
	dir=$CHROOTS/$suite
	[[ -x $dir/usr/lib/rabbitmq/bin/rabbitmq-server ]] && return 0
	command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout=300 install -y debootstrap >/dev/null
	mkdir -p "$CHROOTS"
	rm -rf "$dir.tmp"
	say "building $series ($suite) in $dir"
	local t0=$SECONDS
	if ! debootstrap --variant=minbase --include=rabbitmq-server,ca-certificates "$suite" "$dir.tmp" "$MIRROR" >"$CHROOTS/$suite.build.log" 2>&1; then
		tail -n 20 "$CHROOTS/$suite.build.log" >&2
		rm -rf "$dir.tmp"
		return 1
	fi
	mv "$dir.tmp" "$dir"
	say "built $series ($suite, RabbitMQ $(version_in "$dir")) in $((SECONDS - t0))s"
}

version_in() { ls "$1/usr/lib/rabbitmq/lib" | sed -n 's/^rabbitmq_server-//p'; }

# resolve prints the series to use for a request: newest falls back to 4.0 when its chroot cannot
# be built.
resolve() {
	local series=$1
	if build "$series"; then
		echo "$series"
		return
	fi
	[[ $series == newest ]] || die "cannot build series $series"
	printf 'chroot-broker: the newest series (Debian unstable) cannot be built now; using 4.0 instead\n' >&2
	build 4.0 || die "cannot build series 4.0 either"
	echo 4.0
}

# built maps a series to the one whose chroot exists: newest is 4.0 when
# only that one could be built (see resolve).
built() {
	if [[ $1 == newest && ! -d $CHROOTS/$(suite_of newest) && -d $CHROOTS/$(suite_of 4.0) ]]; then
		echo 4.0
	else
		echo "$1"
	fi
}

# enter runs a command in the chroot of a series with the node's environment.
enter() {
	local series name=$2
	series=$(built "$1")
	shift 2
	local dir base
	dir=$CHROOTS/$(suite_of "$series")
	base=/var/lib/rabbitmq/leveret-$name
	chroot "$dir" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/var/lib/rabbitmq LANG=C.UTF-8 \
		ERL_EPMD_PORT="$(epmd_of "$series")" RABBITMQ_NODENAME="$name@$(hostname -s)" \
		RABBITMQ_MNESIA_BASE="$base/mnesia" RABBITMQ_LOG_BASE="$base/log" \
		RABBITMQ_CONFIG_FILE="$base/rabbitmq" RABBITMQ_ENABLED_PLUGINS_FILE="$base/enabled_plugins" \
		RABBITMQ_PID_FILE="$base/pid" "$@"
}

ctl() {
	local series=$1 name=$2
	shift 2
	enter "$series" "$name" runuser -u rabbitmq -- rabbitmqctl -n "$name@$(hostname -s)" "$@"
}

# probe succeeds when 127.0.0.1:PORT answers the AMQP protocol header with connection.start.
probe() {
	local hex
	hex=$(timeout 3 bash -c '
		exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 1
		printf "AMQP\000\000\011\001" >&3
		head -c 11 <&3 | od -An -v -tx1
	' "$1" 2>/dev/null) || true
	hex=${hex//[[:space:]]/}
	[[ $hex =~ ^010000[0-9a-f]{8}000a000a$ ]]
}

# mounts gives the chroot /proc and /dev (once), and the host's name resolution.
mounts() {
	local dir=$1 lock
	# Nodes of one chroot may start at once (scripts/cluster.sh): mount once.
	exec {lock}>"$dir/.leveret-mounts.lock"
	flock "$lock"
	mountpoint -q "$dir/proc" || mount -t proc proc "$dir/proc"
	mountpoint -q "$dir/dev" || mount --bind /dev "$dir/dev"
	cp /etc/hosts "$dir/etc/hosts"
	exec {lock}>&-
}

# deprecated_names prints the deprecated features a series can still be told to deny (all it
# lists but the removed ones), asked of the running node NAME once and cached in the chroot.
deprecated_names() {
	local series=$1 name=$2 dir=$3
	local cache=$dir/var/lib/rabbitmq/leveret-deprecated-features
	if [[ ! -s $cache ]]; then
		ctl "$series" "$name" -q list_deprecated_features name deprecation_phase --formatter json |
			grep -v '"removed"' | sed -n 's/.*"name":"\([a-z0-9_]*\)".*/\1/p' >"$cache.tmp"
		[[ -s $cache.tmp ]] || die "series $series listed no deprecated features"
		mv "$cache.tmp" "$cache"
	fi
	cat "$cache"
}

# configure writes node NAME's configuration; with "next" it denies the deprecated features.
configure() {
	local series=$1 name=$2 port=$3 dir=$4 next=$5
	local base=/var/lib/rabbitmq/leveret-$name
	mkdir -p "$dir$base/mnesia" "$dir$base/log"
	{
		printf 'listeners.tcp.default = 127.0.0.1:%s\nloopback_users = none\n' "$port"
		if [[ $next == next ]]; then
			deprecated_names "$series" "$name" "$dir" | sed 's/^/deprecated_features.permit./; s/$/ = false/'
		fi
		printf '%s' "${NODE_CONF_EXTRA:-}"
	} >"$dir$base/rabbitmq.conf"
	echo "[${NODE_PLUGINS:-}]." >"$dir$base/enabled_plugins"
	chroot "$dir" chown -R rabbitmq:rabbitmq "$base"
}

# start starts node NAME and waits until it answers AMQP on port.
start() {
	local series=$1 name=$2 port=$3 dir=$4
	(cd / && enter "$series" "$name" env RABBITMQ_NODE_PORT="$port" RABBITMQ_DIST_PORT=$((port + 20000)) \
		runuser -u rabbitmq -- /usr/lib/rabbitmq/bin/rabbitmq-server -detached >/dev/null 2>&1) || true
	wait_ready "$name" "$port" "$dir"
}

# wait_ready waits until node NAME answers AMQP on port, or fails with its log.
wait_ready() {
	local name=$1 port=$2 dir=$3
	local t0=$SECONDS base=/var/lib/rabbitmq/leveret-$name
	while ! probe "$port"; do
		if ((SECONDS - t0 >= READY_TIMEOUT)); then
			printf 'chroot-broker: node %s not ready after %ds on port %s\n' "$name" "$READY_TIMEOUT" "$port" >&2
			tail -n 40 "$dir$base"/log/*.log >&2 || true
			exit 1
		fi
		sleep 0.5
	done
	say "node $name ready after $((SECONDS - t0))s"
}

node() {
	local series=$1 name=$2 port=$3 next=${4:-}
	if probe "$port"; then
		return 0
	fi
	series=$(resolve "$series")
	local dir
	dir=$CHROOTS/$(suite_of "$series")
	mounts "$dir"
	if ctl "$series" "$name" -q ping >/dev/null 2>&1; then
		# The node runs but its application was stopped (rabbitmqctl stop_app).
		say "starting app of $name"
		ctl "$series" "$name" -q start_app >/dev/null 2>&1 || true
		wait_ready "$name" "$port" "$dir"
		return 0
	fi
	say "starting $name ($series, RabbitMQ $(version_in "$dir")${next:+, next defaults}) on port $port"
	if [[ $next == next && ! -s $dir/var/lib/rabbitmq/leveret-deprecated-features ]]; then
		# The first time, the node itself says which features it can deny.
		configure "$series" "$name" "$port" "$dir" ""
		start "$series" "$name" "$port" "$dir"
		deprecated_names "$series" "$name" "$dir" >/dev/null
		stop "$series" "$name"
	fi
	configure "$series" "$name" "$port" "$dir" "$next"
	start "$series" "$name" "$port" "$dir"
}

# oauth starts node NAME with the OAuth 2 backend, trusting the test signing key (made once).
oauth() {
	local series=$1 name=$2 port=$3
	if probe "$port"; then
		return 0
	fi
	local key=${LEVERET_OAUTH_KEY:-/var/lib/leveret/oauth/signing.key}
	if [[ ! -s $key ]]; then
		mkdir -p "$(dirname "$key")"
		openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$key.tmp" 2>/dev/null
		chmod 644 "$key.tmp" # a test key: the tests sign their tokens with it
		mv "$key.tmp" "$key"
	fi
	series=$(resolve "$series")
	local dir base=/var/lib/rabbitmq/leveret-$name
	dir=$CHROOTS/$(suite_of "$series")
	mkdir -p "$dir$base"
	openssl pkey -in "$key" -pubout -out "$dir$base/signing.pem"
	NODE_PLUGINS=rabbitmq_auth_backend_oauth2 NODE_CONF_EXTRA="auth_backends.1 = rabbit_auth_backend_oauth2
auth_backends.2 = internal
auth_oauth2.resource_server_id = rabbitmq
auth_oauth2.default_key = leveret
auth_oauth2.signing_keys.leveret = $base/signing.pem
" node "$series" "$name" "$port" next
}

# tls starts node NAME with an amqps listener on TLSPORT, with the 3.10 TLS node's certificates.
tls() {
	local series=$1 name=$2 port=$3 tls_port=$4
	local certs=${LEVERET_TLS_CERTS:-/var/lib/rabbitmq/leveret-ltls/certs}
	[[ -s $certs/server-key.pem ]] || die "no test certificates in $certs (scripts/broker.sh tls makes them)"
	series=$(resolve "$series")
	local dir base=/var/lib/rabbitmq/leveret-$name
	dir=$CHROOTS/$(suite_of "$series")
	if ! probe "$tls_port"; then
		mkdir -p "$dir$base/certs"
		cp "$certs/ca.pem" "$certs/server.pem" "$certs/server-key.pem" "$dir$base/certs/"
		NODE_PLUGINS=rabbitmq_auth_mechanism_ssl NODE_CONF_EXTRA="$(tls_conf "127.0.0.1:$tls_port" "$base/certs")
" node "$series" "$name" "$port" next
	fi
	tls_client_user ctl "$series" "$name" -q
	say "node $name: amqps on port $tls_port"
}

stop() {
	local series=$1 name=$2
	ctl "$series" "$name" -q stop "/var/lib/rabbitmq/leveret-$name/pid" >/dev/null 2>&1 || true
}

case ${1:-} in
build)
	build "${2:?series}"
	;;
resolve)
	resolve "${2:?series}"
	;;
node)
	shift
	node "$@"
	;;
ctl)
	shift
	ctl "$@"
	;;
stop)
	shift
	stop "$@"
	;;
oauth)
	shift
	oauth "$@"
	;;
tls)
	shift
	tls "$@"
	;;
*)
	echo "usage: $0 build SERIES | resolve SERIES | node SERIES NAME PORT [next] | oauth SERIES NAME PORT | tls SERIES NAME PORT TLSPORT | ctl SERIES NAME ARGS... | stop SERIES NAME" >&2
	exit 2
	;;
esac
