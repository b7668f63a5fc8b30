package confirm_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/confirm"
	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// Protocol-level tests against a scripted broker that confirms exactly
// when and how each test says. Integration tests against RabbitMQ are in
// tests/confirm_test.go.

// published is a basic.publish the fake broker received.
type published struct {
	ch  uint16
	m   *proto.BasicPublish
	msg ops.Message
}

// broker is a fake broker that answers confirm.select and channel.close
// and hands every publish to the test, which confirms them by hand.
type broker struct {
	t    *testing.T
	srv  *fakeserver.Server
	pubs chan published
	ch   uint16 // the publisher's channel, known after the first publish
}

// startBroker starts the fake broker and dials it; the client is closed
// before the broker when the test ends.
func startBroker(t *testing.T) (*broker, *leveret.Client) {
	b := &broker{t: t, pubs: make(chan published, 1024)}
	b.srv = fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true}, b.script)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := leveret.Dial(ctx, b.srv.URL())
	require.NoError(t, err)
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Close(cctx)
	})
	return b, c
}

func (b *broker) script(c *fakeserver.Conn) {
	for {
		ch, m, err := c.ReadMethod()
		if errors.Is(err, fakeserver.ErrTimeout) {
			continue
		}
		if err != nil {
			return
		}
		switch m := m.(type) {
		case *proto.ConfirmSelect:
			c.Send(ch, &proto.ConfirmSelectOk{})
		case *proto.ChannelClose:
			c.Send(ch, &proto.ChannelCloseOk{})
		case *proto.ConnectionClose:
			c.Send(0, &proto.ConnectionCloseOk{})
			return
		case *proto.BasicPublish:
			p := published{ch: ch, m: m}
			if !b.readContent(c, &p.msg) {
				return
			}
			b.pubs <- p
		}
	}
}

func (b *broker) readContent(c *fakeserver.Conn, msg *ops.Message) bool {
	f, err := c.ReadFrame()
	if err != nil {
		return false
	}
	_, size, err := proto.DecodeContentHeader(f.Payload, msg)
	if err != nil {
		return false
	}
	for uint64(len(msg.Body)) < size {
		if f, err = c.ReadFrame(); err != nil {
			return false
		}
		msg.Body = append(msg.Body, f.Payload...)
	}
	return true
}

// next returns the next publish the broker received.
func (b *broker) next() published {
	b.t.Helper()
	select {
	case p := <-b.pubs:
		b.ch = p.ch
		return p
	case <-time.After(5 * time.Second):
		require.FailNow(b.t, "the broker received no publish")
		return published{}
	}
}

// none checks that no publish arrives within d.
func (b *broker) none(d time.Duration) {
	b.t.Helper()
	select {
	case p := <-b.pubs:
		require.Failf(b.t, "unexpected publish", "%+v", p.m)
	case <-time.After(d):
	}
}

func (b *broker) send(m proto.Method) {
	b.t.Helper()
	require.NoError(b.t, b.srv.Conns()[0].Send(b.ch, m))
}

func (b *broker) sendReturn(p published) {
	b.t.Helper()
	r := &proto.BasicReturn{ReplyCode: 312, ReplyText: "NO_ROUTE", Exchange: p.m.Exchange, RoutingKey: p.m.RoutingKey}
	require.NoError(b.t, b.srv.Conns()[0].SendContent(b.ch, r, &p.msg))
}

func newPublisher(t *testing.T, c *leveret.Client, opts ...confirm.Option) *confirm.Publisher {
	t.Helper()
	p, err := confirm.New(context.Background(), c, opts...)
	require.NoError(t, err)
	return p
}

func wait(t *testing.T, pr *leveret.Promise[confirm.Outcome]) (confirm.Outcome, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	o, err := pr.Wait(ctx)
	require.NotErrorIs(t, err, context.DeadlineExceeded, "the promise did not settle")
	return o, err
}

func msg(i int) ops.Publish {
	return ops.Publish{RoutingKey: "q", Message: ops.Message{MessageID: fmt.Sprint(i), Body: []byte("body")}}
}

// A full window makes Publish wait, honouring its context; a confirmation
// makes room.
func TestConfirmWindowWaitsForRoom(t *testing.T) {
	b, c := startBroker(t)
	p := newPublisher(t, c, confirm.WithWindow(2))
	ctx := context.Background()

	p1 := p.Publish(ctx, msg(1))
	p2 := p.Publish(ctx, msg(2))
	b.next()
	b.next()
	assert.Equal(t, 2, p.InFlight())

	tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	p3 := p.Publish(tctx, msg(3))
	require.ErrorIs(t, p3.Err(), context.DeadlineExceeded, "settled when Publish returns")
	assert.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond, "it waited for room")
	b.none(50 * time.Millisecond)

	var wg sync.WaitGroup
	var p4 *leveret.Promise[confirm.Outcome]
	wg.Go(func() { p4 = p.Publish(ctx, msg(4)) }) // owner: this test; exits once there is room
	b.none(50 * time.Millisecond)
	b.send(&proto.BasicAck{DeliveryTag: 1})
	got := b.next()
	wg.Wait()
	assert.Equal(t, "4", got.msg.MessageID)
	o, err := wait(t, p1)
	require.NoError(t, err)
	assert.Equal(t, confirm.Acked, o.Status)

	b.send(&proto.BasicAck{DeliveryTag: 3, Multiple: true}) // publish 4 is number 3: 3 sent nothing
	for _, pr := range []*leveret.Promise[confirm.Outcome]{p2, p4} {
		o, err := wait(t, pr)
		require.NoError(t, err)
		assert.Equal(t, confirm.Acked, o.Status)
	}
	assert.Zero(t, p.InFlight())
	require.NoError(t, p.Close(ctx))
}

// Multiple acks and nacks settle ranges; a return is linked to its own
// publish by the sequence header, even when other confirmations come
// between the return and the publish's own confirmation.
func TestConfirmOutcomesAndRanges(t *testing.T) {
	b, c := startBroker(t)
	p := newPublisher(t, c)
	ctx := context.Background()

	userHeaders := ops.Table{"app": "x"}
	var ps []*leveret.Promise[confirm.Outcome]
	var got []published
	for i := 1; i <= 6; i++ {
		o := msg(i)
		o.Mandatory = true
		o.Message.Headers = userHeaders
		ps = append(ps, p.Publish(ctx, o))
		got = append(got, b.next())
	}
	assert.Equal(t, ops.Table{"app": "x"}, userHeaders, "the caller's table is not modified")
	assert.Equal(t, int64(3), got[2].msg.Headers[confirm.SeqHeader])
	assert.Equal(t, "x", got[2].msg.Headers["app"])

	b.sendReturn(got[2])                                     // publish 3 is unroutable
	b.send(&proto.BasicAck{DeliveryTag: 2, Multiple: true})  // 1 and 2: not 3
	b.send(&proto.BasicNack{DeliveryTag: 4})                 // 4 alone
	b.send(&proto.BasicAck{DeliveryTag: 3})                  // 3: returned
	b.send(&proto.BasicNack{DeliveryTag: 6, Multiple: true}) // 5 and 6
	want := []confirm.Status{confirm.Acked, confirm.Acked, confirm.Returned, confirm.Nacked, confirm.Nacked, confirm.Nacked}
	for i, pr := range ps {
		o, err := wait(t, pr)
		require.NoError(t, err, "publish %d", i+1)
		assert.Equal(t, want[i], o.Status, "publish %d", i+1)
		if o.Status == confirm.Returned {
			require.NotNil(t, o.Return)
			assert.Equal(t, ops.ReplyCode(312), o.Return.ReplyCode)
			assert.Equal(t, "3", o.Return.Message.MessageID)
			assert.Equal(t, ops.Table{"app": "x"}, o.Return.Message.Headers, "the sequence header is removed")
		} else {
			assert.Nil(t, o.Return)
		}
	}
	assert.Zero(t, p.InFlight())
	require.NoError(t, p.Flush(ctx))
}

// Flush waits for everything issued before it, and no longer.
func TestConfirmFlush(t *testing.T) {
	b, c := startBroker(t)
	p := newPublisher(t, c)
	ctx := context.Background()

	require.NoError(t, p.Flush(ctx), "nothing in flight")
	for i := 1; i <= 3; i++ {
		p.Publish(ctx, msg(i))
		b.next()
	}
	done := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() { done <- p.Flush(ctx) }) // owner: this test; exits when 1-3 settle
	b.send(&proto.BasicAck{DeliveryTag: 3})
	b.send(&proto.BasicAck{DeliveryTag: 1})
	select {
	case err := <-done:
		require.Failf(t, "Flush returned early", "%v", err)
	case <-time.After(50 * time.Millisecond):
	}
	p.Publish(ctx, msg(4)) // issued after the Flush: not waited for
	b.next()
	b.send(&proto.BasicAck{DeliveryTag: 2})
	wg.Wait()
	require.NoError(t, <-done)
	assert.Equal(t, 1, p.InFlight())

	tctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, p.Flush(tctx), context.DeadlineExceeded)
	b.send(&proto.BasicAck{DeliveryTag: 4})
	require.NoError(t, p.Flush(ctx))
}

// The broker closing the channel fails every unsettled publish with the
// channel error wrapped in ErrNotConfirmed, never as a nack; later
// publishes are refused at once with the cause.
func TestConfirmChannelCloseFailsPending(t *testing.T) {
	b, c := startBroker(t)
	p := newPublisher(t, c)
	ctx := context.Background()

	var ps []*leveret.Promise[confirm.Outcome]
	for i := 1; i <= 4; i++ {
		ps = append(ps, p.Publish(ctx, msg(i)))
		b.next()
	}
	b.send(&proto.BasicAck{DeliveryTag: 1})
	b.send(&proto.ChannelClose{ReplyCode: 404, ReplyText: "NOT_FOUND - no exchange 'x'", ClassID: 60, MethodID: 40})
	o, err := wait(t, ps[0])
	require.NoError(t, err)
	assert.Equal(t, confirm.Acked, o.Status)
	for i, pr := range ps[1:] {
		_, err := wait(t, pr)
		require.ErrorIs(t, err, confirm.ErrNotConfirmed, "publish %d", i+2)
		require.ErrorIs(t, err, leveret.ErrNotFound, "publish %d", i+2)
		require.ErrorAs(t, err, new(*leveret.ChannelError), "publish %d", i+2)
	}
	assert.Zero(t, p.InFlight())
	late := p.Publish(ctx, msg(5))
	require.ErrorIs(t, late.Err(), leveret.ErrNotFound, "refused at once")
	require.NotErrorIs(t, late.Err(), confirm.ErrNotConfirmed)
	require.ErrorIs(t, p.Flush(ctx), leveret.ErrNotFound)
	require.ErrorIs(t, p.Err(), leveret.ErrNotFound)
	require.NoError(t, p.Close(ctx))
}

// Close gives publishes in flight until ctx ends, then closes the channel:
// what is left fails with ErrClosed, and later publishes are refused.
func TestConfirmCloseWithPending(t *testing.T) {
	b, c := startBroker(t)
	p := newPublisher(t, c)
	ctx := context.Background()

	pr := p.Publish(ctx, msg(1))
	b.next()
	tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, p.Close(tctx), context.DeadlineExceeded)
	_, err := wait(t, pr)
	require.ErrorIs(t, err, confirm.ErrNotConfirmed)
	require.ErrorIs(t, err, leveret.ErrClosed)
	require.ErrorIs(t, p.Publish(ctx, msg(2)).Err(), leveret.ErrClosed)
	require.NoError(t, p.Close(ctx), "idempotent")
}

func TestConfirmWindowOption(t *testing.T) {
	_, c := startBroker(t)
	for _, n := range []int{0, -1, 1 << 20} {
		_, err := confirm.New(context.Background(), c, confirm.WithWindow(n))
		require.Error(t, err, "window %d", n)
	}
	p := newPublisher(t, c)
	assert.Equal(t, confirm.DefaultWindow, p.Window())
}
