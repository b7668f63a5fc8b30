package leveret

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/leveret-mq/leveret/internal/mux"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/internal/session"
	"github.com/leveret-mq/leveret/ops"
)

// Version is leveret's version, sent to the broker in the client properties.
const Version = "0.1.0"

// tuning is what the handshake negotiated (session.Tuning).
type tuning = session.Tuning

// Dial connects to the broker at url (amqp://user:pass@host:port/vhost or
// amqps://...; or, with url "", to the endpoints of WithFailover, tried in
// order), authenticates and opens the virtual host. When every endpoint has
// failed it waits the reconnect policy's delay and tries again (see
// WithReconnect), until one connects, ctx ends, the policy gives up or a
// failure is not worth retrying (bad credentials, say), whose error it then
// returns. Each attempt is bounded by the connection timeout. A failed Dial
// leaves no goroutine behind. Errors never contain the password.
func Dial(ctx context.Context, url string, opts ...Option) (*Client, error) {
	eps, policy, err := endpoints(url, opts)
	if err != nil {
		return nil, err
	}
	d, err := dialRounds(ctx, eps, policy)
	if err != nil {
		return nil, err
	}
	return newClient(eps, policy, d), nil
}

// dialed is a connection whose handshake is complete, not yet running.
type dialed struct {
	nc     net.Conn
	fr     *proto.FrameReader
	tuning tuning
	ep     int // index in the client's endpoints
}

// dialEndpoint makes one connection attempt to u.
func dialEndpoint(ctx context.Context, u uri, cfg config) (dialed, error) {
	if cfg.connectionTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.connectionTimeout)
		defer cancel()
	}

	nc, err := connect(ctx, u, &cfg)
	if err != nil {
		return dialed{}, err
	}
	// Turn ctx ending into a socket deadline so the blocking handshake
	// returns; AfterFunc starts a goroutine only if ctx ends first.
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	fr := proto.NewFrameReader(nc)
	t, err := handshake(ctx, nc, fr, u, &cfg)
	// The socket deadline can fire a moment before ctx's own timer does;
	// either way the caller should see the context's error.
	if !stop() || errors.Is(err, os.ErrDeadlineExceeded) {
		cause := context.Cause(ctx)
		if cause == nil {
			cause = context.DeadlineExceeded
		}
		err = fmt.Errorf("amqp: dial %s: %w", u, cause)
	}
	if err != nil {
		nc.Close()
		return dialed{}, err
	}
	nc.SetDeadline(time.Time{})
	return dialed{nc: nc, fr: fr, tuning: t}, nil
}

func connect(ctx context.Context, u uri, cfg *config) (net.Conn, error) {
	dial := cfg.dialer
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	nc, err := dial(ctx, "tcp", u.Addr())
	if err != nil {
		return nil, fmt.Errorf("amqp: dial %s: %w", u, err)
	}
	if cfg.tls == nil {
		return nc, nil
	}
	tc := cfg.tls.Clone()
	if tc.ServerName == "" {
		tc.ServerName = u.Host
	}
	tlsConn := tls.Client(nc, tc)
	if err := tlsConn.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("amqp: tls handshake with %s: %w", u, err)
	}
	return tlsConn, nil
}

// handshake runs connection.start to connection.open-ok.
func handshake(ctx context.Context, nc net.Conn, fr *proto.FrameReader, u uri, cfg *config) (tuning, error) {
	var t tuning
	if _, err := nc.Write(proto.ProtocolHeader); err != nil {
		return t, fmt.Errorf("amqp: dial %s: %w", u, writeFailure(nc, err))
	}
	m, err := readMethod(nc, fr)
	if err != nil {
		return t, fmt.Errorf("amqp: dial %s: reading connection.start: %w", u, err)
	}
	start, ok := m.(*proto.ConnectionStart)
	if !ok {
		return t, handshakeViolation(nc, proto.CommandInvalid, fmt.Sprintf("expected connection.start, got %v", m.ID()))
	}
	t.Server = start.ServerProperties
	user, password := u.Username, u.Password
	if cfg.credentials != nil {
		if user, password, err = cfg.credentials(ctx); err != nil {
			return t, fmt.Errorf("amqp: dial %s: credentials: %w", u, err)
		}
	}
	mech, response, err := chooseMechanism(cfg, start.Mechanisms, user, password)
	if err != nil {
		return t, fmt.Errorf("amqp: dial %s: %w", u, err)
	}
	startOk := &proto.ConnectionStartOk{ClientProperties: clientProperties(cfg), Mechanism: mech, Response: response, Locale: cfg.locale}
	if err := writeMethod(nc, startOk); err != nil {
		return t, fmt.Errorf("amqp: dial %s: %w", u, err)
	}

	m, err = readMethod(nc, fr)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			// Brokers without authentication_failure_close just hang up.
			return t, &ConnectionError{Code: 403, Text: "broker closed the connection during authentication (credentials refused?)", Cause: err}
		}
		return t, fmt.Errorf("amqp: dial %s: %w", u, err)
	}
	tune, ok := m.(*proto.ConnectionTune)
	if !ok {
		return t, handshakeRefusal(nc, m)
	}
	if tune.FrameMax != 0 && tune.FrameMax < proto.FrameMinSize {
		// Below the spec's minimum nothing can be relied on to fit.
		return t, &ConnectionError{Code: ReplyCode(proto.FrameError), Text: fmt.Sprintf(
			"broker proposed frame_max %d, below the protocol minimum %d", tune.FrameMax, proto.FrameMinSize)}
	}
	t.ChannelMax = uint16(negotiate(uint32(cfg.channelMax), uint32(tune.ChannelMax)))
	t.FrameMax = negotiate(cfg.frameMax, tune.FrameMax)
	if t.FrameMax == 0 {
		t.FrameMax = 1 << 27
	}
	if floor, who := frameMaxFloor(t.Server); t.FrameMax < floor {
		// The broker would hang up after tune-ok without a word (RabbitMQ
		// 4.1 and later): say why here, once, rather than redial.
		return t, &settingError{fmt.Errorf("amqp: dial %s: frame_max %d is below %d, the smallest %s accepts (WithFrameMax, ?frame_max=)", u, t.FrameMax, floor, who)}
	}
	if !(cfg.heartbeatSet && cfg.heartbeat == 0) {
		t.Heartbeat = time.Duration(negotiate(uint32(cfg.heartbeat/time.Second), uint32(tune.Heartbeat))) * time.Second
	}
	tuneOk := &proto.ConnectionTuneOk{ChannelMax: t.ChannelMax, FrameMax: t.FrameMax, Heartbeat: uint16(t.Heartbeat / time.Second)}
	if err := writeMethod(nc, tuneOk); err != nil {
		return t, fmt.Errorf("amqp: dial %s: %w", u, err)
	}
	if err := writeMethod(nc, &proto.ConnectionOpen{VirtualHost: u.Vhost}); err != nil {
		return t, fmt.Errorf("amqp: dial %s: %w", u, err)
	}
	m, err = readMethod(nc, fr)
	if err != nil {
		if t.FrameMax < frameMaxRabbitMQ41 && hungUp(err) {
			// A broker that hides its version refused the frame size the
			// same way: redialling would meet the same refusal.
			return t, &settingError{fmt.Errorf("amqp: dial %s: the broker closed the connection after connection.tune-ok with frame_max %d: it refuses frames this small (RabbitMQ 4.1 and later accept no less than %d; WithFrameMax, ?frame_max=): %w", u, t.FrameMax, frameMaxRabbitMQ41, err)}
		}
		return t, fmt.Errorf("amqp: dial %s: opening vhost: %w", u, err)
	}
	if _, ok := m.(*proto.ConnectionOpenOk); !ok {
		return t, handshakeRefusal(nc, m)
	}
	return t, nil
}

// writeFailure explains a failed first write. Under TLS 1.3 the server
// checks the client's certificate after the client's side of the handshake
// has completed, so a refusal ("certificate required") arrives as an alert
// after our first write, which may itself fail with a reset; reading once
// surfaces the alert, the real reason.
func writeFailure(nc net.Conn, err error) error {
	if _, ok := nc.(*tls.Conn); !ok {
		return err
	}
	nc.SetReadDeadline(time.Now().Add(time.Second))
	var b [1]byte
	if _, rerr := nc.Read(b[:]); rerr != nil && !errors.Is(rerr, io.EOF) &&
		!errors.Is(rerr, os.ErrDeadlineExceeded) && !errors.Is(rerr, syscall.ECONNRESET) {
		return rerr
	}
	return err
}

// negotiate picks the smaller of two limits where 0 means "no limit".
func negotiate(client, server uint32) uint32 {
	if client == 0 || server == 0 {
		return max(client, server)
	}
	return min(client, server)
}

// handshakeRefusal answers a connection.close received during the
// handshake and turns it into a *ConnectionError. Any other method is a
// step this client cannot follow (connection.secure: leveret's mechanisms
// take no challenge).
func handshakeRefusal(nc net.Conn, m proto.Method) error {
	cl, ok := m.(*proto.ConnectionClose)
	if !ok {
		return handshakeViolation(nc, proto.CommandInvalid, fmt.Sprintf("unexpected %v during the handshake", m.ID()))
	}
	writeMethod(nc, &proto.ConnectionCloseOk{})
	return &ConnectionError{Code: ReplyCode(cl.ReplyCode), Text: cl.ReplyText, ClassID: cl.ClassID, MethodID: cl.MethodID}
}

// handshakeViolation tells a peer that broke the handshake why this side
// gives up (connection.close with code) and returns the error for it, a
// *ConnectionError with that code: a peer that does not follow the protocol
// will not on the next attempt either, so it is not retried (worthRetrying).
func handshakeViolation(nc net.Conn, code proto.ReplyCode, text string) error {
	nc.SetWriteDeadline(time.Now().Add(time.Second))
	writeMethod(nc, &proto.ConnectionClose{ReplyCode: uint16(code), ReplyText: text})
	return &ConnectionError{Code: ReplyCode(code), Text: "protocol violation by the server: " + text}
}

func readMethod(nc net.Conn, fr *proto.FrameReader) (proto.Method, error) {
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		switch {
		case f.Type == proto.FrameHeartbeat:
			continue
		case f.Type != proto.FrameMethod || f.Channel != 0:
			return nil, handshakeViolation(nc, proto.UnexpectedFrame, fmt.Sprintf("unexpected frame type %d on channel %d during the handshake", f.Type, f.Channel))
		}
		return proto.DecodeMethod(f.Payload)
	}
}

func writeMethod(w io.Writer, m proto.Method) error {
	b, err := proto.AppendMethodFrame(nil, 0, m)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func clientProperties(cfg *config) ops.Table {
	t := ops.Table{
		"product":     "leveret",
		"version":     Version,
		"platform":    "Go " + runtime.Version(),
		"information": "https://github.com/leveret-mq/leveret",
		"capabilities": ops.Table{
			"publisher_confirms":           true,
			"consumer_cancel_notify":       true,
			"basic.nack":                   true,
			"connection.blocked":           true,
			"authentication_failure_close": true,
			"exchange_exchange_bindings":   true,
			"per_consumer_qos":             true,
		},
	}
	for k, v := range cfg.properties {
		if k != "capabilities" { // leveret's own: the protocol features it relies on
			t[k] = v
		}
	}
	if cfg.connectionName != "" {
		t["connection_name"] = cfg.connectionName
	}
	return t
}

func newMuxConfig(t tuning, cfg config, onBlocked func(bool, string), onReadIdle func()) mux.Config {
	return mux.Config{
		FrameMax:       t.FrameMax,
		ChannelMax:     t.ChannelMax,
		Heartbeat:      t.Heartbeat,
		WriteLimit:     cfg.writeLimit,
		MaxMessageSize: cfg.maxMessageSize,
		Errors:         muxErrors(),
		FaultError:     faultError,
		OnBlocked:      onBlocked,
		OnReadIdle:     onReadIdle,
	}
}
