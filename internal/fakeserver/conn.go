package fakeserver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// ErrTimeout is returned by ReadMethod and ReadFrame when the client sent
// nothing within Options.ReadTimeout.
var ErrTimeout = errors.New("fakeserver: read timed out")

// Conn is the server side of one connection. Its methods are safe for
// concurrent use. A reader goroutine reads every frame the client sends as
// it arrives, counting heartbeats, so the client never blocks on writing
// while the script does something else.
type Conn struct {
	nc   net.Conn
	fr   *proto.FrameReader // reader goroutine only, once started
	opts Options

	heartbeats atomic.Int64

	// Guarded by qmu: the handshake's record (written by the goroutine
	// running the handshake) and frames read and not yet taken (filled by
	// the reader goroutine).
	qmu    sync.Mutex
	hs     Handshake
	queue  []proto.Frame
	rerr   error         // why the reader stopped; set once
	notify chan struct{} // capacity 1: something was queued or the reader stopped
	done   chan struct{} // closed when the reader stops

	wmu sync.Mutex // serialises writes

	// While paused is open (PauseReading), the reader reads nothing more.
	pmu    sync.Mutex
	paused chan struct{}

	mu     sync.Mutex
	closed bool
	quit   chan struct{} // closed by Close
	wg     sync.WaitGroup
}

func newConn(nc net.Conn, opts Options) *Conn {
	fr := proto.NewFrameReader(nc)
	fr.SetMaxFrameSize(opts.FrameMax)
	return &Conn{
		nc:     nc,
		fr:     fr,
		opts:   opts,
		notify: make(chan struct{}, 1),
		done:   make(chan struct{}),
		quit:   make(chan struct{}),
	}
}

// start launches the reader (and the heartbeat sender with KeepAlive)
// unless the connection is already closed.
func (c *Conn) start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		c.stopReading(net.ErrClosed)
		return
	}
	c.wg.Add(1)
	go c.readLoop() // owner: Conn; exits when the socket fails or Close closes it.
	if c.opts.KeepAlive && c.opts.Heartbeat > 0 {
		c.wg.Add(1)
		go c.keepAlive() // owner: Conn; exits on Close or a failed write.
	}
}

// Close closes the socket and joins the connection's goroutines. It is
// idempotent and safe to call from the script.
func (c *Conn) Close() {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.quit)
		c.nc.Close()
	}
	c.mu.Unlock()
	c.wg.Wait()
}

// Done is closed when the reader has stopped: the client hung up, the
// connection was closed, or the client sent bytes that are not frames.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err is nil while the reader runs, then why it stopped.
func (c *Conn) Err() error {
	select {
	case <-c.done:
		return c.rerr
	default:
		return nil
	}
}

// Heartbeats is the number of heartbeat frames received from the client.
func (c *Conn) Heartbeats() int { return int(c.heartbeats.Load()) }

// Handshake is what the client sent during the handshake.
type Handshake struct {
	StartOk *proto.ConnectionStartOk // nil until received
	TuneOk  *proto.ConnectionTuneOk  // nil until received
	Vhost   string                   // from connection.open
	Err     error                    // why the server side gave up, if it did
}

// Handshake returns what the handshake has received so far. Pipe
// connections have none.
func (c *Conn) Handshake() Handshake {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	return c.hs
}

func (c *Conn) recordHandshake(f func(*Handshake)) {
	c.qmu.Lock()
	f(&c.hs)
	c.qmu.Unlock()
}

func (c *Conn) readLoop() {
	defer c.wg.Done()
	for {
		c.pmu.Lock()
		paused := c.paused
		c.pmu.Unlock()
		if paused != nil {
			select {
			case <-paused:
			case <-c.quit:
				c.stopReading(net.ErrClosed)
				return
			}
		}
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.stopReading(err)
			return
		}
		if f.Type == proto.FrameHeartbeat {
			c.heartbeats.Add(1)
			continue
		}
		f.Payload = append([]byte(nil), f.Payload...)
		c.qmu.Lock()
		c.queue = append(c.queue, f)
		c.qmu.Unlock()
		c.signal()
	}
}

// PauseReading stops the reader before its next frame, so that the
// client's writes back up in the socket as they do against a broker that
// stops reading. Frames already read stay queued for ReadFrame. A frame
// the reader is in the middle of is still read whole.
func (c *Conn) PauseReading() {
	c.pmu.Lock()
	if c.paused == nil {
		c.paused = make(chan struct{})
	}
	c.pmu.Unlock()
}

// ResumeReading undoes PauseReading.
func (c *Conn) ResumeReading() {
	c.pmu.Lock()
	if c.paused != nil {
		close(c.paused)
		c.paused = nil
	}
	c.pmu.Unlock()
}

func (c *Conn) stopReading(err error) {
	c.qmu.Lock()
	c.rerr = err
	c.qmu.Unlock()
	close(c.done)
	c.signal()
}

func (c *Conn) signal() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

func (c *Conn) keepAlive() {
	defer c.wg.Done()
	t := time.NewTicker(time.Duration(c.opts.Heartbeat) * time.Second / 2)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if c.SendHeartbeat() != nil {
				return
			}
		case <-c.quit:
			return
		}
	}
}

// ReadFrame returns the next frame the client sent other than a heartbeat
// (those are only counted). It waits at most Options.ReadTimeout; after the
// client hangs up it returns the queued frames, then the read error.
func (c *Conn) ReadFrame() (proto.Frame, error) {
	timer := time.NewTimer(c.opts.ReadTimeout)
	defer timer.Stop()
	for {
		c.qmu.Lock()
		if len(c.queue) > 0 {
			f := c.queue[0]
			c.queue = c.queue[1:]
			c.qmu.Unlock()
			return f, nil
		}
		err := c.rerr
		c.qmu.Unlock()
		if err != nil {
			return proto.Frame{}, err
		}
		select {
		case <-c.notify:
		case <-timer.C:
			return proto.Frame{}, ErrTimeout
		}
	}
}

// ReadMethod returns the next method the client sent and its channel.
// Heartbeats are skipped (and counted); with Options.AutoOpen, channel.open
// and confirm.select are answered and skipped. A content frame is an error: read content with
// ReadFrame.
func (c *Conn) ReadMethod() (channel uint16, m proto.Method, err error) {
	for {
		f, err := c.ReadFrame()
		if err != nil {
			return 0, nil, err
		}
		if f.Type != proto.FrameMethod {
			return f.Channel, nil, fmt.Errorf("fakeserver: frame type %d on channel %d where a method was expected", f.Type, f.Channel)
		}
		m, err := proto.DecodeMethod(f.Payload)
		if err != nil {
			return f.Channel, nil, err
		}
		if c.opts.AutoOpen && (m.ID() == proto.ChannelOpenID || m.ID() == proto.ConfirmSelectID) {
			var ok proto.Method = &proto.ChannelOpenOk{}
			if m.ID() == proto.ConfirmSelectID {
				ok = &proto.ConfirmSelectOk{}
			}
			if err := c.Send(f.Channel, ok); err != nil {
				return f.Channel, nil, err
			}
			continue
		}
		return f.Channel, m, nil
	}
}

// Expect reads the next method and fails the test (t.Fatalf, which ends the
// calling goroutine: call it from the script) unless its id is id.
func (c *Conn) Expect(t testing.TB, id proto.MethodID) (channel uint16, m proto.Method) {
	t.Helper()
	channel, m, err := c.ReadMethod()
	if err != nil {
		t.Fatalf("fakeserver: waiting for %v: %v", id, err)
	}
	if m.ID() != id {
		t.Fatalf("fakeserver: got %v on channel %d, want %v", m.ID(), channel, id)
	}
	return channel, m
}

// ExpectOpen expects channel.open, answers channel.open-ok and returns the
// channel number.
func (c *Conn) ExpectOpen(t testing.TB) uint16 {
	t.Helper()
	ch, _ := c.Expect(t, proto.ChannelOpenID)
	if err := c.Send(ch, &proto.ChannelOpenOk{}); err != nil {
		t.Fatalf("fakeserver: sending channel.open-ok: %v", err)
	}
	return ch
}

// Serve plays a broker that does nothing until the client closes: it
// answers channel.open, channel.close and connection.close, ignores other
// methods and content, and returns nil once it has sent
// connection.close-ok (or the read error if the client hung up first).
func (c *Conn) Serve() error {
	for {
		f, err := c.ReadFrame()
		if errors.Is(err, ErrTimeout) {
			continue
		}
		if err != nil {
			return err
		}
		if f.Type != proto.FrameMethod {
			continue
		}
		m, err := proto.DecodeMethod(f.Payload)
		if err != nil {
			return err
		}
		switch m.ID() {
		case proto.ChannelOpenID:
			err = c.Send(f.Channel, &proto.ChannelOpenOk{})
		case proto.ChannelCloseID:
			err = c.Send(f.Channel, &proto.ChannelCloseOk{})
		case proto.ConnectionCloseID:
			return c.Send(0, &proto.ConnectionCloseOk{})
		}
		if err != nil {
			return err
		}
	}
}

// Send writes one method frame.
func (c *Conn) Send(channel uint16, m proto.Method) error {
	b, err := proto.AppendMethodFrame(nil, channel, m)
	if err != nil {
		return err
	}
	return c.SendRaw(b)
}

// SendContent writes a content-bearing method (basic.deliver, basic.get-ok,
// basic.return) with its header and body frames, the body split to the
// server's frame_max.
func (c *Conn) SendContent(channel uint16, m proto.Method, msg *ops.Message) error {
	b, err := proto.AppendMethodFrame(nil, channel, m)
	if err != nil {
		return err
	}
	if b, err = proto.AppendContentHeader(b, channel, proto.ClassBasic, uint64(len(msg.Body)), msg); err != nil {
		return err
	}
	return c.SendRaw(proto.AppendBodyFrames(b, channel, c.opts.FrameMax, msg.Body))
}

// SendHeartbeat writes one heartbeat frame.
func (c *Conn) SendHeartbeat() error { return c.SendRaw(proto.AppendHeartbeat(nil)) }

// SendRaw writes b as it is: for frames the codec would refuse to produce.
// The write gives up after Options.ReadTimeout.
func (c *Conn) SendRaw(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(c.opts.ReadTimeout))
	_, err := c.nc.Write(b)
	return err
}

// RawFrame encodes a frame with any type, channel and payload, and a
// correct frame-end octet; corrupt the result to taste.
func RawFrame(typ uint8, channel uint16, payload []byte) []byte {
	b := make([]byte, 0, len(payload)+proto.FrameOverhead)
	b = append(b, typ)
	b = binary.BigEndian.AppendUint16(b, channel)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	b = append(b, payload...)
	return append(b, proto.FrameEnd)
}

// MethodFrame encodes m as a method frame on channel. It panics if m does
// not encode: it is for test inputs.
func MethodFrame(channel uint16, m proto.Method) []byte {
	b, err := proto.AppendMethodFrame(nil, channel, m)
	if err != nil {
		panic(fmt.Sprintf("fakeserver: encoding %v: %v", m.ID(), err))
	}
	return b
}
