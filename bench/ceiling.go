package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// The ceiling client ("raw codec") is the least work a Go client can do
// for a messaging scenario: leveret's codec over a bare TCP connection,
// every publish pre-encoded and written in batches as large as the window
// allows, replies parsed on the goroutine that reads them, no promises, no
// channel bookkeeping, no error recovery. It is not a usable client. Its
// rate is what the broker gives a client that costs it nothing, so a
// client's rate over the ceiling's says how much of the broker's capacity
// the client leaves unused, and a target above the ceiling is out of reach
// on this broker whatever the client does.

// rawConn is one connection with channel 1 open.
type rawConn struct {
	nc       net.Conn
	fr       *proto.FrameReader
	frameMax uint32
	out      []byte // queued by send, written by flush
	err      error  // the first encoding failure
}

// rawDial connects and opens channel 1. Its deadline is ctx's (or 10 s).
func rawDial(ctx context.Context, rawURL string) (*rawConn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	host := u.Host
	if u.Port() == "" {
		host += ":5672"
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(10 * time.Second)
	}
	nc.SetDeadline(deadline)
	r := &rawConn{nc: nc, fr: proto.NewFrameReader(nc)}
	if err := r.handshake(u); err != nil {
		nc.Close()
		return nil, fmt.Errorf("raw dial: %w", err)
	}
	nc.SetDeadline(time.Time{})
	return r, nil
}

func (r *rawConn) handshake(u *url.URL) error {
	if _, err := r.nc.Write(proto.ProtocolHeader); err != nil {
		return err
	}
	if _, err := r.expect(proto.ConnectionStartID); err != nil {
		return err
	}
	pass, _ := u.User.Password()
	r.send(0, &proto.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00" + u.User.Username() + "\x00" + pass, Locale: "en_US"})
	if err := r.flush(); err != nil {
		return err
	}
	m, err := r.expect(proto.ConnectionTuneID)
	if err != nil {
		return err
	}
	tune := m.(*proto.ConnectionTune)
	r.frameMax = tune.FrameMax
	vhost := strings.TrimPrefix(u.Path, "/")
	if vhost == "" {
		vhost = "/" // as amqp091-go and leveret read "amqp://host/"
	}
	r.send(0, &proto.ConnectionTuneOk{ChannelMax: tune.ChannelMax, FrameMax: tune.FrameMax})
	r.send(0, &proto.ConnectionOpen{VirtualHost: vhost})
	if err := r.flush(); err != nil {
		return err
	}
	if _, err := r.expect(proto.ConnectionOpenOkID); err != nil {
		return err
	}
	r.send(1, &proto.ChannelOpen{})
	if err := r.flush(); err != nil {
		return err
	}
	_, err = r.expect(proto.ChannelOpenOkID)
	return err
}

// send queues a method frame; flush writes what is queued, or reports
// the first method that could not be encoded.
func (r *rawConn) send(channel uint16, m proto.Method) {
	out, err := proto.AppendMethodFrame(r.out, channel, m)
	if err != nil && r.err == nil {
		r.err = err
	}
	r.out = out
}

func (r *rawConn) flush() error {
	if r.err != nil {
		return r.err
	}
	_, err := r.nc.Write(r.out)
	r.out = r.out[:0]
	return err
}

// readMethod returns the next method, skipping other frames.
func (r *rawConn) readMethod() (proto.Method, error) {
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		if f.Type == proto.FrameMethod {
			return proto.DecodeMethod(f.Payload)
		}
	}
}

// expect reads the next method, which must be id.
func (r *rawConn) expect(id proto.MethodID) (proto.Method, error) {
	m, err := r.readMethod()
	if err != nil {
		return nil, err
	}
	if cl, ok := m.(*proto.ConnectionClose); ok {
		return nil, fmt.Errorf("expected %v, got connection.close %d %s", id, cl.ReplyCode, cl.ReplyText)
	}
	if m.ID() != id {
		return nil, fmt.Errorf("expected %v, got %v", id, m.ID())
	}
	return m, nil
}

func (r *rawConn) close() { r.nc.Close() }

// publishes returns k copies of one publish of a body-byte message to q,
// back to back.
func (r *rawConn) publishes(q string, k, body int) ([]byte, error) {
	one, err := proto.AppendPublish(nil, 1, r.frameMax, &proto.BasicPublish{RoutingKey: q}, &ops.Message{Body: make([]byte, body)})
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(one)*k)
	for range k {
		out = append(out, one...)
	}
	return out, nil
}

// rawPublisher dials and declares a fresh queue to publish to; done
// deletes the queue and closes the connection.
func rawPublisher(ctx context.Context, e *env, purpose string) (r *rawConn, q string, done func(), err error) {
	if r, err = rawDial(ctx, e.url); err != nil {
		return nil, "", nil, err
	}
	if q, err = e.declareQueue(ctx, purpose); err != nil {
		r.close()
		return nil, "", nil, err
	}
	return r, q, func() { e.deleteQueues(ctx, q); r.close() }, nil
}

// rawPublish writes n publishes in 64 KiB batches and stops the clock,
// like the other clients, when the queue holds them all.
func rawPublish(ctx context.Context, e *env) (cost, error) {
	r, q, done, err := rawPublisher(ctx, e, "publish")
	if err != nil {
		return cost{}, err
	}
	defer done()
	const batch = 256 // about 64 KiB
	buf, err := r.publishes(q, batch, bodySize)
	if err != nil {
		return cost{}, err
	}
	one := len(buf) / batch
	n := e.cfg.messages
	return measure(func() error {
		for sent := 0; sent < n; sent += batch {
			k := min(batch, n-sent)
			if _, err := r.nc.Write(buf[:k*one]); err != nil {
				return err
			}
		}
		return e.waitCount(ctx, q, n)
	})
}

// rawConfirmed keeps up to the window of publishes unconfirmed, writing
// all the room there is in one write; acks are counted by a reader
// goroutine (owned by this function, it ends when the connection closes).
func rawConfirmed(ctx context.Context, e *env, l load) (cost, error) {
	r, q, done, err := rawPublisher(ctx, e, "confirm")
	if err != nil {
		return cost{}, err
	}
	defer done()
	r.send(1, &proto.ConfirmSelect{})
	if err := r.flush(); err != nil {
		return cost{}, err
	}
	if _, err := r.expect(proto.ConfirmSelectOkID); err != nil {
		return cost{}, err
	}
	size := l.window
	buf, err := r.publishes(q, size, l.body)
	if err != nil {
		return cost{}, err
	}
	one := len(buf) / size
	w := newWindow(size)

	// The reader ends when the connection does: on return (deferred
	// close), or on a failure, when it cancels the publishing loop.
	pctx, cancel := context.WithCancel(ctx)
	readErr := make(chan error, 1)
	go func() { // owner: rawConfirmed, which closes the connection and joins it
		defer cancel()
		readErr <- r.readAcks(w)
	}()
	defer func() {
		r.close()
		<-readErr
	}()

	n := l.messages
	return measure(func() error {
		for sent := 0; sent < n; {
			k, err := w.acquireUpTo(pctx, min(size, n-sent))
			if err != nil {
				return readFailure(ctx, err, readErr)
			}
			if _, err := r.nc.Write(buf[:k*one]); err != nil {
				return err
			}
			sent += k
		}
		if err := w.drain(pctx); err != nil {
			return readFailure(ctx, err, readErr)
		}
		return nil
	})
}

// readFailure explains a wait cut short: by ctx, or by the reader's end.
func readFailure(ctx context.Context, err error, readErr chan error) error {
	if ctx.Err() != nil {
		return err
	}
	rerr := <-readErr
	readErr <- rerr // for the deferred join
	return fmt.Errorf("reading acks: %w", rerr)
}

// readAcks feeds basic.ack and basic.nack to w until the connection ends.
func (r *rawConn) readAcks(w *window) error {
	for {
		m, err := r.readMethod()
		if err != nil {
			return err
		}
		switch m := m.(type) {
		case *proto.BasicAck:
			w.confirm(leveret.Confirmation{DeliveryTag: m.DeliveryTag, Multiple: m.Multiple, Ack: true})
		case *proto.BasicNack:
			w.confirm(leveret.Confirmation{DeliveryTag: m.DeliveryTag, Multiple: m.Multiple})
		default:
			return fmt.Errorf("unexpected %v", m.ID())
		}
	}
}

// rawConsume consumes n messages and acks them, then closes the channel.
// Its acks go out whenever the acking side has seen all there was: with
// ackEvery 1, one multiple ack for the deliveries seen since the last ack
// (all of them, in order, so it names exactly those, as leveret's merged
// acks do); otherwise a multiple ack every ackEvery deliveries. The
// reading goroutine acks itself, or with handoff passes each delivery tag
// over a Go channel to a second goroutine that acks: the least any client
// costs that keeps user code off its reader, as leveret must.
func rawConsume(ctx context.Context, e *env, l load, ackEvery int, handoff bool) (cost, error) {
	n := l.messages
	q, err := e.prefill(ctx, l)
	if err != nil {
		return cost{}, err
	}
	defer e.deleteQueues(ctx, q)
	r, err := rawDial(ctx, e.url)
	if err != nil {
		return cost{}, err
	}
	defer r.close()
	if deadline, ok := ctx.Deadline(); ok {
		r.nc.SetDeadline(deadline)
	}
	return measure(func() error {
		r.send(1, &proto.BasicQos{PrefetchCount: uint16(l.prefetch)})
		r.send(1, &proto.BasicConsume{Queue: q, ConsumerTag: "ceiling"})
		if err := r.flush(); err != nil {
			return err
		}
		consume := r.consumeInline
		if handoff {
			consume = r.consumeHandoff
		}
		if err := consume(n, ackEvery, l.prefetch); err != nil {
			return err
		}
		r.send(1, &proto.ChannelClose{ReplyCode: 200, ReplyText: "done"})
		if err := r.flush(); err != nil {
			return err
		}
		for { // deliveries still in flight come before close-ok
			m, err := r.readMethod()
			if err != nil {
				return err
			}
			if m.ID() == proto.ChannelCloseOkID {
				return nil
			}
		}
	})
}

// nextDelivery reads the next whole delivery, its content frames
// included, and returns its tag. Reading the content before returning
// keeps "nothing buffered" meaning "the broker has nothing more for now":
// a header or body still in the buffer would hold back the ack that lets
// the broker send more.
func (r *rawConn) nextDelivery() (uint64, error) {
	var tag uint64
	for tag == 0 {
		m, err := r.readMethod()
		if err != nil {
			return 0, err
		}
		if d, ok := m.(*proto.BasicDeliver); ok {
			tag = d.DeliveryTag
		}
	}
	f, err := r.fr.ReadFrame()
	if err != nil {
		return 0, err
	}
	if f.Type != proto.FrameHeader {
		return 0, fmt.Errorf("delivery %d: frame type %d, want a content header", tag, f.Type)
	}
	var msg ops.Message
	_, size, err := proto.DecodeContentHeader(f.Payload, &msg)
	if err != nil {
		return 0, err
	}
	for got := uint64(0); got < size; got += uint64(len(f.Payload)) {
		if f, err = r.fr.ReadFrame(); err != nil {
			return 0, err
		}
		if f.Type != proto.FrameBody {
			return 0, fmt.Errorf("delivery %d: frame type %d, want a body", tag, f.Type)
		}
	}
	return tag, nil
}

// acker decides when to ack; idle says the acking side has seen all there
// was for now.
type acker struct {
	n, ackEvery, got int
	unacked          uint64
}

func (a *acker) seen(tag uint64) {
	a.got++
	if a.ackEvery == 1 || a.got%a.ackEvery == 0 || a.got == a.n {
		a.unacked = tag
	}
}

// appendAck appends the ack due now, if any.
func (a *acker) appendAck(dst []byte, idle bool) []byte {
	if a.unacked == 0 || !(a.ackEvery != 1 || idle || a.got == a.n) {
		return dst
	}
	dst = proto.AppendAckFrame(dst, 1, &proto.BasicAck{DeliveryTag: a.unacked, Multiple: true})
	a.unacked = 0
	return dst
}

func (r *rawConn) consumeInline(n, ackEvery, _ int) error {
	a := acker{n: n, ackEvery: ackEvery}
	for a.got < n {
		tag, err := r.nextDelivery()
		if err != nil {
			return err
		}
		a.seen(tag)
		if r.out = a.appendAck(r.out, r.fr.Buffered() == 0); len(r.out) > 0 {
			if err := r.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// consumeHandoff reads on this goroutine and acks on another, which it
// starts and joins; the acker writes to the socket alone until it ends.
func (r *rawConn) consumeHandoff(n, ackEvery, prefetch int) error {
	tags := make(chan uint64, prefetch)
	ackErr := make(chan error, 1)
	go func() { // owner: consumeHandoff; exits after n tags or when tags closes
		a := acker{n: n, ackEvery: ackEvery}
		var out []byte
		for tag := range tags {
			a.seen(tag)
			if out = a.appendAck(out[:0], len(tags) == 0); len(out) > 0 {
				if _, err := r.nc.Write(out); err != nil {
					ackErr <- err
					return
				}
			}
			if a.got == n {
				break
			}
		}
		ackErr <- nil
	}()
	for range n {
		tag, err := r.nextDelivery()
		if err != nil {
			close(tags)
			<-ackErr
			return err
		}
		tags <- tag
	}
	return <-ackErr
}
