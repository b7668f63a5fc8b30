# tls-node.sh: what the TLS test nodes have in common, sourced by broker.sh (the 3.10 node, ltls)
# and chroot-broker.sh (a 4.x node): verify_peer, fail_if_no_peer_cert, SASL EXTERNAL by the client
# certificate's CN, and the user leveret-client that EXTERNAL logs in as.

# tls_conf LISTENER CERTDIR prints the rabbitmq.conf lines of a TLS test node whose amqps listener
# is LISTENER (a port, or address:port) and whose certificates are in CERTDIR (as the node sees it).
tls_conf() {
	local listener=$1 certs=$2
	cat <<CONF
listeners.ssl.default = $listener
ssl_options.cacertfile = $certs/ca.pem
ssl_options.certfile = $certs/server.pem
ssl_options.keyfile = $certs/server-key.pem
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
ssl_cert_login_from = common_name
auth_mechanisms.1 = PLAIN
auth_mechanisms.2 = AMQPLAIN
auth_mechanisms.3 = EXTERNAL
CONF
}

# tls_client_user CTL... adds the user leveret-client if the node lacks it; CTL... runs the node's
# rabbitmqctl -q (a command and its arguments).
tls_client_user() {
	if ! "$@" list_users 2>/dev/null | grep -q '^leveret-client[[:space:]]'; then
		# EXTERNAL checks no password; a random one keeps PLAIN logins as this user out.
		"$@" add_user leveret-client "$(head -c 18 /dev/urandom | base64)" >/dev/null
		"$@" set_permissions -p / leveret-client '.*' '.*' '.*' >/dev/null
	fi
}
