package leveret

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"time"

	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/internal/session"
)

// ReconnectPolicy decides how long to wait before the next round of
// connection attempts (every endpoint tried once, in order) and when to
// give up. Dial uses it when every endpoint has failed; Reset is called once
// a connection is made. A policy belongs to one Client and is called from
// one goroutine at a time.
//
// The same policy paces reconnecting after a drop: the supervisor waits
// Next's delay before each round. Only the loss of a connection that
// served calls Reset, and its first round is dialled at once: one that
// stayed up for a second after its recovery, or that the broker closed
// with 320 CONNECTION_FORCED after it (rabbitmqctl close_connection, a
// node shutting down). A connection lost during or right after its
// recovery (a declaration the broker refuses by closing the connection,
// say) backs off further, so a broker's refusal cannot become a reconnect
// storm. When Next gives up, the client ends with the last attempts'
// errors.
type ReconnectPolicy interface {
	// Next returns the delay before the next round, or false to give up.
	Next() (delay time.Duration, ok bool)
	// Reset starts the policy over, after a successful connection.
	Reset()
}

// Backoff is an exponential ReconnectPolicy with jitter: the n-th delay is
// drawn uniformly from [d/2, d] where d = Initial·2ⁿ, capped at Max. The
// default policy is Backoff{Initial: 100 ms, Max: 1 s} with no attempt
// limit: a client dials at most twice a second however long the broker is
// away, and is back within a second of its return.
type Backoff struct {
	Initial     time.Duration // first delay; 0 means 100 ms
	Max         time.Duration // largest delay; 0 means 1 s
	MaxAttempts int           // rounds after which Next gives up; 0: never

	attempt int
}

// Next implements ReconnectPolicy.
func (b *Backoff) Next() (time.Duration, bool) {
	if b.MaxAttempts > 0 && b.attempt >= b.MaxAttempts {
		return 0, false
	}
	initial, ceiling := b.Initial, b.Max
	if initial <= 0 {
		initial = 100 * time.Millisecond
	}
	if ceiling <= 0 {
		ceiling = time.Second
	}
	d := initial
	for i := 0; i < b.attempt && d < ceiling; i++ {
		d *= 2
	}
	d = min(d, ceiling)
	b.attempt++
	return d/2 + rand.N(d/2+1), true
}

// Reset implements ReconnectPolicy.
func (b *Backoff) Reset() { b.attempt = 0 }

// WithReconnect replaces the reconnect policy (default: Backoff with 100 ms
// doubling to 1 s, no attempt limit); nil turns retrying off, so that Dial
// tries each endpoint once and a connection that drops ends the client
// (Done, Err) instead of being recovered. Failures not worth retrying end
// Dial, or a reconnect, at once:
// 403 ACCESS_REFUSED and 530 NOT_ALLOWED (a missing vhost) from the
// handshake, no SASL mechanism both sides allow, a TLS certificate the
// client cannot verify or that the server refused, and a peer that breaks
// the protocol or does not speak AMQP 0-9-1.
// The policy must not be shared between clients.
func WithReconnect(p ReconnectPolicy) Option {
	return optionFunc(func(c *config) { c.reconnect, c.reconnectSet = p, true })
}

// WithFailover gives the endpoints to connect to, tried in order, in place
// of Dial's url (pass ""): on the first connection each is tried once per
// round, and after a failed round the reconnect policy's delay comes before
// the next. Each URL carries its own credentials, vhost and query
// parameters; options apply to all of them.
func WithFailover(urls ...string) Option {
	return optionFunc(func(c *config) { c.failover = append([]string(nil), urls...) })
}

// endpoint is one broker address with the configuration for dialing it.
type endpoint struct {
	u   uri
	cfg config
}

// endpoints parses url or the WithFailover list and builds each
// endpoint's configuration: defaults, then the URL's query, then opts.
func endpoints(url string, opts []Option) ([]endpoint, ReconnectPolicy, error) {
	var probe config
	for _, o := range opts {
		o.apply(&probe)
	}
	urls := probe.failover
	switch {
	case url != "" && len(urls) > 0:
		return nil, nil, errors.New("amqp: Dial got both a URL and WithFailover; give the endpoints one way")
	case len(urls) == 0:
		urls = []string{url}
	}
	eps := make([]endpoint, 0, len(urls))
	for _, s := range urls {
		u, err := parseURI(s)
		if err != nil {
			return nil, nil, err
		}
		cfg := endpointConfig(u, opts)
		if err := cfg.validate(); err != nil {
			return nil, nil, err
		}
		eps = append(eps, endpoint{u, cfg})
	}
	policy := probe.reconnect
	if !probe.reconnectSet {
		policy = &Backoff{}
	}
	return eps, policy, nil
}

func endpointConfig(u uri, opts []Option) config {
	cfg := defaultConfig()
	if u.HasHeartbeat {
		cfg.heartbeat, cfg.heartbeatSet = u.Heartbeat, true
	}
	if u.ChannelMax != 0 {
		cfg.channelMax = u.ChannelMax
	}
	if u.FrameMax != 0 {
		cfg.frameMax = u.FrameMax
	}
	if u.ConnectionTimeout > 0 {
		cfg.connectionTimeout = u.ConnectionTimeout
	}
	for _, o := range opts {
		o.apply(&cfg)
	}
	if u.TLS && cfg.tls == nil {
		cfg.tls = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return cfg
}

// dialRounds tries the endpoints in order, round after round with the
// policy's delays in between, until one connects, ctx ends, the policy
// gives up or a failure is not worth retrying.
func dialRounds(ctx context.Context, eps []endpoint, policy ReconnectPolicy) (dialed, error) {
	for {
		d, round, err := dialRound(ctx, eps, nil)
		if err == nil {
			if policy != nil {
				policy.Reset()
			}
			return d, nil
		}
		if round == nil {
			return dialed{}, err // not worth retrying, or ctx ended
		}
		last := joinRound(round)
		if policy == nil {
			return dialed{}, last
		}
		delay, ok := policy.Next()
		if !ok {
			return dialed{}, fmt.Errorf("amqp: dial: the reconnect policy gave up: %w", last)
		}
		if err := session.Sleep(ctx, delay); err != nil {
			return dialed{}, fmt.Errorf("amqp: dial: %w while waiting to retry; last attempts: %w", err, last)
		}
	}
}

// dialRound tries each endpoint once, in order, calling attempt (if set)
// before each with the error of the endpoint tried before it in this round
// (nil for the first). It returns the first connection made; else round
// holds each endpoint's error, or is nil when a failure was not worth
// retrying or ctx ended (err says which).
func dialRound(ctx context.Context, eps []endpoint, attempt func(i int, prev error)) (d dialed, round []error, err error) {
	for i, ep := range eps {
		if attempt != nil {
			var prev error
			if i > 0 {
				prev = round[i-1]
			}
			attempt(i, prev)
		}
		d, err := dialEndpoint(ctx, ep.u, ep.cfg)
		if err == nil {
			d.ep = i
			return d, nil, nil
		}
		if ctxOver(ctx) || !worthRetrying(err) {
			return dialed{}, nil, err
		}
		round = append(round, err)
	}
	return dialed{}, round, round[0]
}

// joinRound is one error for a failed round: one endpoint's as it is.
func joinRound(round []error) error {
	if len(round) == 1 {
		return round[0]
	}
	return errors.Join(round...)
}

// ctxOver reports that ctx has ended or its deadline has passed (a
// socket deadline set from it can fire a moment before its own timer).
func ctxOver(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// worthRetrying reports whether a failed connection attempt may succeed if
// tried again: not when the broker refused the credentials or the vhost,
// a certificate failed, or the peer broke or does not speak the protocol.
func worthRetrying(err error) bool {
	var ce *ConnectionError
	if errors.As(err, &ce) {
		switch ce.Code {
		case 403, 530, 501, 502, 503, 505:
			return false
		}
	}
	var setting *settingError
	if errors.As(err, &setting) {
		return false
	}
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	var op *net.OpError
	switch {
	case errors.Is(err, proto.ErrMalformed), errors.Is(err, errNoMechanism),
		errors.As(err, &unknownCA), errors.As(err, &hostname), errors.As(err, &invalid), errors.As(err, &verify):
		return false
	case errors.As(err, &op) && op.Op == "remote error": // a TLS alert: the server refused us
		return false
	}
	return true
}
