// Package fakeserver is a scripted AMQP 0-9-1 server for tests of faults no
// real broker produces: malformed frames, replies out of order or unasked,
// silent peers, forced closes. It speaks frames through internal/proto.
//
// Start listens on a loopback port; for each connection it runs the server
// side of the handshake and then the test's script on its own goroutine.
// Pipe skips the network and the handshake, for tests of internal/mux.
// Every goroutine the server starts is joined by Close, which Start and
// Pipe register with t.Cleanup.
package fakeserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// Options configure a Server. The zero value is a plain broker that
// accepts guest/guest and does not ask for heartbeats.
type Options struct {
	// Heartbeat is the interval in seconds proposed in connection.tune;
	// 0 leaves the choice to the client.
	Heartbeat uint16
	// KeepAlive makes each connection send a heartbeat every Heartbeat/2
	// seconds (as a live broker does) until it closes.
	KeepAlive bool
	// FrameMax is proposed in connection.tune and is the largest frame the
	// server accepts; default 131072.
	FrameMax uint32
	// ChannelMax is proposed in connection.tune; default 2047.
	ChannelMax uint16
	// RejectAuth answers connection.start-ok with connection.close 403
	// ACCESS_REFUSED, as RabbitMQ does for bad credentials. The script
	// still runs, on the refused connection (to Expect the close-ok).
	RejectAuth bool
	// HangUpAfterStartOk closes the socket after connection.start-ok, as a
	// broker without authentication_failure_close does. No script runs.
	HangUpAfterStartOk bool
	// AutoOpen makes ReadMethod answer channel.open with channel.open-ok,
	// and confirm.select with confirm.select-ok (the client's pooled
	// channels send it right after opening), instead of returning them.
	AutoOpen bool
	// Mechanisms is the SASL mechanism list connection.start offers;
	// default "PLAIN".
	Mechanisms string
	// ForgetEnded drops a connection from Conns once its script has
	// returned, for tests that make many connections and measure the
	// client's memory (each Conn keeps its read buffer).
	ForgetEnded bool
	// AfterStartOk, if set, is sent instead of connection.tune after
	// connection.start-ok (connection.secure, say: a step the client may
	// not follow). The script still runs, on that connection.
	AfterStartOk proto.Method
	// ReadBuffer, if set, is the socket receive buffer of each accepted
	// connection (SO_RCVBUF), for tests that need the client's writes to
	// back up quickly once the server stops reading (Conn.PauseReading).
	ReadBuffer int
	// Product and Version, if set, replace "fakeserver" and "0.0.0" in
	// the server properties of connection.start (to play a RabbitMQ of a
	// given version).
	Product, Version string
	// ReadTimeout bounds each ReadMethod, ReadFrame and handshake step, so
	// a script waiting for something the client never sends fails rather
	// than hangs; it also bounds writes. Default 10 s.
	ReadTimeout time.Duration
}

func (o *Options) setDefaults() {
	if o.FrameMax == 0 {
		o.FrameMax = 131072
	}
	if o.ChannelMax == 0 {
		o.ChannelMax = 2047
	}
	if o.Mechanisms == "" {
		o.Mechanisms = "PLAIN"
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 10 * time.Second
	}
}

// Server accepts connections and runs a script on each.
type Server struct {
	t      testing.TB
	opts   Options
	script func(*Conn)
	ln     net.Listener // nil for Pipe

	mu     sync.Mutex
	conns  []*Conn
	closed bool

	wg        sync.WaitGroup
	closeOnce sync.Once
}

// Start is StartWith with default Options.
func Start(t testing.TB, script func(*Conn)) *Server {
	t.Helper()
	return StartWith(t, Options{}, script)
}

// StartWith listens on 127.0.0.1:0. For each accepted connection it runs
// the server side of the handshake (connection.start offering PLAIN,
// start-ok, tune, tune-ok, open, open-ok) and then script(conn) on its own
// goroutine; when the script returns, the connection is closed. A nil
// script is Conn.Serve. Close is registered with t.Cleanup.
func StartWith(t testing.TB, opts Options, script func(*Conn)) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("fakeserver: listen: %v", err)
	}
	s := newServer(t, opts, script)
	s.ln = ln
	s.wg.Add(1)
	go s.acceptLoop() // owner: Server; exits when Close closes the listener.
	t.Cleanup(s.Close)
	return s
}

// Pipe runs script against the server end of an in-memory connection
// (net.Pipe) and returns the client end, with no handshake: internal/mux
// takes over a connection after its handshake, so its tests can start
// speaking frames at once. The caller owns the client end. Close is
// registered with t.Cleanup.
func Pipe(t testing.TB, opts Options, script func(*Conn)) (net.Conn, *Server) {
	t.Helper()
	client, server := net.Pipe()
	s := newServer(t, opts, script)
	t.Cleanup(s.Close)
	s.serve(server, false)
	return client, s
}

// InMemory makes a server with no listener whose connections are
// in-memory pipes made by Dial, each with the handshake and then script,
// as Start's are. Nothing in it uses the network or the wall clock's
// goroutines, so a test inside a testing/synctest bubble can run a client
// against it in fake time. Close is registered with t.Cleanup.
func InMemory(t testing.TB, opts Options, script func(*Conn)) *Server {
	t.Helper()
	s := newServer(t, opts, script)
	t.Cleanup(s.Close)
	return s
}

// Dial connects to an InMemory server: it has the signature of
// leveret.WithDialer's function and ignores the address.
func (s *Server) Dial(context.Context, string, string) (net.Conn, error) {
	client, server := net.Pipe()
	s.serve(server, true)
	return client, nil
}

func newServer(t testing.TB, opts Options, script func(*Conn)) *Server {
	opts.setDefaults()
	if script == nil {
		script = func(c *Conn) { c.Serve() }
	}
	return &Server{t: t, opts: opts, script: script}
}

// URL is the address to Dial: amqp://guest:guest@127.0.0.1:PORT/%2f, or
// for an InMemory server a placeholder its Dial ignores.
func (s *Server) URL() string {
	if s.ln == nil {
		return "amqp://guest:guest@fakeserver.invalid/%2f"
	}
	return fmt.Sprintf("amqp://guest:guest@%s/%%2f", s.ln.Addr())
}

// Conns returns the connections accepted so far, oldest first.
func (s *Server) Conns() []*Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Conn(nil), s.conns...)
}

// Close stops accepting, closes every connection and joins every goroutine
// the server started, scripts included. It is idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		conns := s.conns
		s.mu.Unlock()
		if s.ln != nil {
			s.ln.Close()
		}
		for _, c := range conns {
			c.Close()
		}
	})
	s.wg.Wait()
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.serve(nc, true)
	}
}

// serve registers nc and starts the goroutine that runs its handshake and
// script, unless the server is closed.
func (s *Server) serve(nc net.Conn, handshake bool) {
	if tc, ok := nc.(*net.TCPConn); ok && s.opts.ReadBuffer > 0 {
		tc.SetReadBuffer(s.opts.ReadBuffer)
	}
	c := newConn(nc, s.opts)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.conns = append(s.conns, c)
	s.wg.Add(1)
	s.mu.Unlock()
	go s.run(c, handshake) // owner: Server; exits when the script returns or the handshake fails.
}

func (s *Server) run(c *Conn, handshake bool) {
	defer s.wg.Done()
	if s.opts.ForgetEnded {
		defer s.forget(c)
	}
	defer c.Close()
	if handshake {
		if err := c.handshake(); err != nil {
			c.recordHandshake(func(h *Handshake) { h.Err = err })
			c.stopReading(err)
			if !errors.Is(err, errHungUp) {
				s.t.Logf("fakeserver: handshake: %v", err)
			}
			return
		}
	}
	c.start()
	s.script(c)
}

func (s *Server) forget(c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, other := range s.conns {
		if other == c {
			s.conns = append(s.conns[:i], s.conns[i+1:]...)
			return
		}
	}
}

// errHungUp ends a handshake on purpose (Options.HangUpAfterStartOk).
var errHungUp = errors.New("fakeserver: hung up after start-ok")

// handshake runs the server side of the connection handshake. It reads
// synchronously; the reader goroutine starts after it.
func (c *Conn) handshake() error {
	o := c.opts
	c.nc.SetReadDeadline(time.Now().Add(o.ReadTimeout))
	defer c.nc.SetReadDeadline(time.Time{})
	if err := proto.ReadProtocolHeader(c.nc); err != nil {
		return fmt.Errorf("protocol header: %w", err)
	}
	props := ServerProperties()
	if o.Product != "" {
		props["product"] = o.Product
	}
	if o.Version != "" {
		props["version"] = o.Version
	}
	start := &proto.ConnectionStart{
		VersionMajor:     0,
		VersionMinor:     9,
		ServerProperties: props,
		Mechanisms:       o.Mechanisms,
		Locales:          "en_US",
	}
	if err := c.Send(0, start); err != nil {
		return err
	}
	m, err := c.handshakeMethod(proto.ConnectionStartOkID)
	if err != nil {
		return err
	}
	c.recordHandshake(func(h *Handshake) { h.StartOk = m.(*proto.ConnectionStartOk) })
	switch {
	case o.HangUpAfterStartOk:
		return errHungUp
	case o.AfterStartOk != nil:
		return c.Send(0, o.AfterStartOk)
	case o.RejectAuth:
		return c.Send(0, &proto.ConnectionClose{ReplyCode: uint16(proto.AccessRefused),
			ReplyText: "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN"})
	}
	tune := &proto.ConnectionTune{ChannelMax: o.ChannelMax, FrameMax: o.FrameMax, Heartbeat: o.Heartbeat}
	if err := c.Send(0, tune); err != nil {
		return err
	}
	if m, err = c.handshakeMethod(proto.ConnectionTuneOkID); err != nil {
		return err
	}
	c.recordHandshake(func(h *Handshake) { h.TuneOk = m.(*proto.ConnectionTuneOk) })
	if m, err = c.handshakeMethod(proto.ConnectionOpenID); err != nil {
		return err
	}
	c.recordHandshake(func(h *Handshake) { h.Vhost = m.(*proto.ConnectionOpen).VirtualHost })
	return c.Send(0, &proto.ConnectionOpenOk{})
}

// handshakeMethod reads the next method on channel 0 and checks its id.
func (c *Conn) handshakeMethod(want proto.MethodID) (proto.Method, error) {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return nil, fmt.Errorf("reading %v: %w", want, err)
		}
		if f.Type == proto.FrameHeartbeat {
			c.heartbeats.Add(1)
			continue
		}
		if f.Type != proto.FrameMethod || f.Channel != 0 {
			return nil, fmt.Errorf("frame type %d on channel %d where %v was expected", f.Type, f.Channel, want)
		}
		m, err := proto.DecodeMethod(f.Payload)
		if err != nil {
			return nil, err
		}
		if m.ID() != want {
			return nil, fmt.Errorf("got %v where %v was expected", m.ID(), want)
		}
		return m, nil
	}
}

// ServerProperties is the table the server sends in connection.start:
// RabbitMQ's product fields and capabilities.
func ServerProperties() ops.Table {
	return ops.Table{
		"product":  "fakeserver",
		"version":  "0.0.0",
		"platform": "Go",
		"capabilities": ops.Table{
			"publisher_confirms":           true,
			"exchange_exchange_bindings":   true,
			"basic.nack":                   true,
			"consumer_cancel_notify":       true,
			"connection.blocked":           true,
			"consumer_priorities":          true,
			"authentication_failure_close": true,
			"per_consumer_qos":             true,
			"direct_reply_to":              true,
		},
	}
}
