// Package mux runs one AMQP connection after its handshake: a reader
// goroutine that decodes frames and routes them to channels, and a writer
// goroutine that coalesces queued frames into single writes and sends
// heartbeats. Callers register completion functions; mux calls them with a
// decoded reply or an error. mux knows nothing of promises.
package mux

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leveret-mq/leveret/internal/proto"
)

// Config is the negotiated connection state and the hooks the owner supplies.
type Config struct {
	FrameMax   uint32        // negotiated maximum frame size, including overhead
	ChannelMax uint16        // negotiated; 0 means 65535
	Heartbeat  time.Duration // negotiated; 0 disables heartbeats
	WriteLimit int           // queued bytes past which publishers wait; default 1 MiB
	// MaxMessageSize is the largest message body accepted from the peer; a
	// larger one is skipped as it arrives, never buffered, and refused
	// (see Handler.Oversized). 0 means 128 MiB.
	MaxMessageSize uint64

	// Errors are the sentinels to report; see Errors.
	Errors Errors
	// FaultError turns a Fault into the error callers see. nil uses *Error.
	FaultError func(Fault) error
	// OnBlocked reports connection.blocked (true) and connection.unblocked.
	// It runs on the reader goroutine and must not block.
	OnBlocked func(blocked bool, reason string)
	// OnReadIdle, if set, is called on the reader goroutine each time it has
	// handled every frame it has read and is about to read the socket again,
	// and once after the connection ended. Handlers can batch the events
	// of one read and pass them on here. It must not block.
	OnReadIdle func()
}

// DefaultMaxMessageSize is RabbitMQ's own default max_message_size.
const DefaultMaxMessageSize = 128 << 20

// Conn is one multiplexed AMQP connection.
//
// Lock order: Channel.mu before Conn.cmu before Conn.wmu before Conn.ioMu.
type Conn struct {
	nc  net.Conn
	fr  *proto.FrameReader
	cfg Config

	// Queued output, filled by any goroutine and drained by the writer.
	wmu       sync.Mutex
	wbuf      []byte
	wcbs      []func(error) // called after the bytes queued with them are written
	wspare    []byte
	wspareCbs []func(error)
	// Body chunks queued by reference (PublishShared): each goes out after
	// the first At bytes of wbuf. wrefBytes is their total length, which
	// counts against WriteLimit like queued bytes.
	wrefs      []proto.BodyRef
	wrefBytes  int
	wspareRefs []proto.BodyRef
	// wbatch counts the batches taken from the queue (written, or dropped
	// when the connection ended): a reference queued in batch wbatch is
	// still in wrefs, untouched by the writer.
	wbatch   uint64
	vectored bool        // nc takes vectored writes (TCP): large publishes write through (see writeThrough)
	wiov     net.Buffers // writer only: the I/O vector of a batch with references
	wflat    []byte      // writer only: such a batch copied flat, where there is no writev
	werr     error       // set once nothing more can be written
	// backedUp is set (under wmu) once len(wbuf)+wrefBytes passes
	// backlogLimit and cleared when the writer takes the queue, so that
	// the reader can check the backlog per frame without taking wmu, and
	// an enqueue under the limit pays a comparison, not an atomic store.
	backedUp    atomic.Bool
	blocked     bool          // connection.blocked in force: publishes wait
	roomWaiters bool          // someone waits on room
	room        chan struct{} // closed and replaced when the writer drains or unblocks
	wake        chan struct{} // capacity 1: tells the writer there is output
	ioMu        sync.Mutex    // serialises writes to nc
	// The basic.ack frame at wbuf[ackStart:ackEnd] may be merged with a
	// following cumulative ack (see Channel.Ack) while it is the last
	// frame queued; ackEnd is 0 when there is none.
	ackStart, ackEnd int
	ackChan          uint16
	ackTag           uint64
	// readerHeld is set while a handler holds the reader (HoldReader):
	// silence then is ours, not the peer's, and does not count towards the
	// heartbeat timeout.
	readerHeld atomic.Bool

	// Reader only: bytes reserved for bodies being assembled (reserveBody).
	bodyReserved int
	// Reader only: the method and text of the broker's connection.close,
	// if it sent one (see Blame).
	closeMethod proto.MethodID
	closeText   string

	// Channel table.
	cmu       sync.Mutex
	chans     map[uint16]*Channel
	nextID    uint16
	chansDead bool // set once every channel has been failed
	// connection.update-secret requests awaiting update-secret-ok, oldest first.
	secretWaiters []func(error)

	// Lifecycle.
	closing  atomic.Bool // Close has begun: no new operations
	failOnce sync.Once
	dead     chan struct{} // closed when the connection has ended
	deadErr  error         // why; written before dead is closed
	closeOk  chan struct{} // closed when connection.close-ok arrives
	// closedErrByUs is the error of everything Close ends: it wraps
	// Errors.Closed and says what was closed.
	closedErrByUs error
	wg            sync.WaitGroup
}

// New takes over nc, whose handshake is complete, and starts the reader and
// writer goroutines. Close (or a connection failure followed by Close) joins them.
func New(nc net.Conn, fr *proto.FrameReader, cfg Config) *Conn {
	if cfg.WriteLimit <= 0 {
		cfg.WriteLimit = 1 << 20
	}
	if cfg.ChannelMax == 0 {
		cfg.ChannelMax = 65535
	}
	cfg.Errors.setDefaults()
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	fr.SetMaxFrameSize(cfg.FrameMax)
	c := &Conn{
		nc:      nc,
		fr:      fr,
		cfg:     cfg,
		room:    make(chan struct{}),
		wake:    make(chan struct{}, 1),
		chans:   make(map[uint16]*Channel),
		dead:    make(chan struct{}),
		closeOk: make(chan struct{}),
	}
	_, c.vectored = nc.(*net.TCPConn)
	c.closedErrByUs = &contextError{"amqp: connection closed by this client (Close)", cfg.Errors.Closed}
	c.wg.Add(2)
	go c.readLoop()  // owner: Conn; exits when nc fails or is closed by fail.
	go c.writeLoop() // owner: Conn; exits when dead is closed or a write fails.
	return c
}

// HoldReader runs wait, which blocks, on the reader goroutine: for a handler
// that must apply backpressure (a consumer over its memory limit waits for
// its user to read). While wait runs the socket is not read, and the
// heartbeat check does not take that silence for the peer's. wait must end
// when the owner closes the connection.
func (c *Conn) HoldReader(wait func()) {
	c.readerHeld.Store(true)
	defer c.readerHeld.Store(false)
	wait()
}

// FrameMax is the negotiated maximum frame size.
func (c *Conn) FrameMax() uint32 { return c.cfg.FrameMax }

// Dead is closed when the connection has ended; Err then says why.
func (c *Conn) Dead() <-chan struct{} { return c.dead }

// Err is nil while the connection is up, then the reason it ended.
func (c *Conn) Err() error {
	select {
	case <-c.dead:
		return c.deadErr
	default:
		return nil
	}
}

// fail ends the connection once: it records why, closes the socket (which
// stops the reader and the writer) and refuses further output.
func (c *Conn) fail(err error) {
	c.failOnce.Do(func() {
		c.deadErr = err
		c.wmu.Lock()
		if c.werr == nil {
			c.werr = err
		}
		c.wmu.Unlock()
		close(c.dead)
		c.nc.Close()
	})
}

// Close closes the connection gracefully: it queues connection.close behind
// everything already queued, waits for close-ok (or ctx, or the connection
// failing), then closes the socket and joins both goroutines. Operations
// still pending fail with an error wrapping Errors.Closed. Close is idempotent; later calls only
// join. It returns ctx.Err() if ctx ended before the broker acknowledged.
func (c *Conn) Close(ctx context.Context) error {
	var err error
	if c.closing.CompareAndSwap(false, true) {
		m := &proto.ConnectionClose{ReplyCode: uint16(proto.ReplySuccess), ReplyText: "closed by client"}
		if c.enqueueMethod(0, m, nil) == nil {
			select {
			case <-c.closeOk:
			case <-c.dead:
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
		c.fail(c.closedErrByUs)
	}
	c.wg.Wait()
	return err
}

// Join waits for the reader and writer to exit, once the connection has
// ended (Dead is closed): then every channel has been told. Unlike Close it
// changes nothing, so operations still report the connection's own error.
func (c *Conn) Join() {
	<-c.dead
	c.wg.Wait()
}

// Abort ends the connection at once with err, without a close handshake,
// and joins the goroutines. It is for owners that must stop on a fault.
func (c *Conn) Abort(err error) {
	c.closing.Store(true)
	c.fail(err)
	c.wg.Wait()
}

// closedErr is the error for an operation issued after the connection ended
// or began to close.
func (c *Conn) closedErr() error {
	if err := c.Err(); err != nil {
		return err
	}
	// fail sets werr before it closes dead: in between, werr is the cause.
	c.wmu.Lock()
	err := c.werr
	c.wmu.Unlock()
	if err != nil {
		return err
	}
	return c.closedErrByUs
}
