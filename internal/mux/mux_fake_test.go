package mux_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/internal/mux"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// outcome is what a request's Done received.
type outcome struct {
	reply proto.Method
	err   error
}

// call sends r on ch and returns where its outcome will arrive.
func call(t *testing.T, ch *mux.Channel, r *mux.Request) <-chan outcome {
	t.Helper()
	out := make(chan outcome, 1)
	r.Done = func(reply proto.Method, _ *ops.Message, err error) { out <- outcome{reply, err} }
	require.NoError(t, ch.Call(r))
	return out
}

func await(t *testing.T, out <-chan outcome) outcome {
	t.Helper()
	select {
	case o := <-out:
		return o
	case <-time.After(10 * time.Second):
		t.Fatal("request not completed within 10 s")
		return outcome{}
	}
}

// newConn starts a mux.Conn over an in-memory pipe whose other end runs
// script (no handshake: mux starts after it). Cleanup closes the Conn
// before the fake server, so both sides' goroutines are joined.
func newConn(t *testing.T, opts fakeserver.Options, cfg mux.Config, script func(*fakeserver.Conn)) *mux.Conn {
	t.Helper()
	cli, _ := fakeserver.Pipe(t, opts, script)
	if cfg.FrameMax == 0 {
		cfg.FrameMax = 131072
	}
	if cfg.ChannelMax == 0 {
		cfg.ChannelMax = 2047
	}
	c := mux.New(cli, proto.NewFrameReader(cli), cfg)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.Close(ctx)
	})
	return c
}

// openChannel opens a channel and waits for open-ok.
func openChannel(t *testing.T, c *mux.Conn) *mux.Channel {
	t.Helper()
	opened := make(chan error, 1)
	ch, err := c.OpenChannel(nil, func(err error) { opened <- err })
	require.NoError(t, err)
	select {
	case err := <-opened:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("channel.open-ok not processed within 10 s")
	}
	return ch
}

// TestFakeConsumeOkMatchedByTag: RabbitMQ may send basic.consume-ok after
// later replies; consume-ok and cancel-ok are matched by consumer tag,
// other replies by type to the oldest request expecting them.
func TestFakeConsumeOkMatchedByTag(t *testing.T) {
	c := newConn(t, fakeserver.Options{}, mux.Config{}, func(s *fakeserver.Conn) {
		ch := s.ExpectOpen(t)
		_, a := s.Expect(t, proto.BasicConsumeID)
		s.Expect(t, proto.QueueDeclareID)
		_, b := s.Expect(t, proto.BasicConsumeID)
		require.Equal(t, "a", a.(*proto.BasicConsume).ConsumerTag)
		require.Equal(t, "b", b.(*proto.BasicConsume).ConsumerTag)
		s.Send(ch, &proto.BasicConsumeOk{ConsumerTag: "b"})
		s.Send(ch, &proto.QueueDeclareOk{Queue: "q"})
		s.Send(ch, &proto.BasicConsumeOk{ConsumerTag: "a"})

		s.Expect(t, proto.BasicCancelID)
		s.Expect(t, proto.BasicCancelID)
		s.Send(ch, &proto.BasicCancelOk{ConsumerTag: "b"})
		s.Send(ch, &proto.BasicCancelOk{ConsumerTag: "a"})
		s.Serve()
	})
	ch := openChannel(t, c)
	a := call(t, ch, &mux.Request{Method: &proto.BasicConsume{Queue: "q", ConsumerTag: "a"}, Tag: "a"})
	q := call(t, ch, &mux.Request{Method: &proto.QueueDeclare{Queue: "q"}})
	b := call(t, ch, &mux.Request{Method: &proto.BasicConsume{Queue: "q", ConsumerTag: "b"}, Tag: "b"})

	ob, oq, oa := await(t, b), await(t, q), await(t, a)
	require.NoError(t, oa.err)
	require.NoError(t, ob.err)
	require.NoError(t, oq.err)
	require.Equal(t, &proto.BasicConsumeOk{ConsumerTag: "a"}, oa.reply)
	require.Equal(t, &proto.BasicConsumeOk{ConsumerTag: "b"}, ob.reply)
	require.Equal(t, &proto.QueueDeclareOk{Queue: "q"}, oq.reply)

	ca := call(t, ch, &mux.Request{Method: &proto.BasicCancel{ConsumerTag: "a"}, Tag: "a"})
	cb := call(t, ch, &mux.Request{Method: &proto.BasicCancel{ConsumerTag: "b"}, Tag: "b"})
	require.Equal(t, &proto.BasicCancelOk{ConsumerTag: "a"}, await(t, ca).reply)
	require.Equal(t, &proto.BasicCancelOk{ConsumerTag: "b"}, await(t, cb).reply)
	require.NoError(t, c.Err())
}

// TestFakeConsumeOkUnknownTag: a consume-ok for a tag nobody is waiting for
// is a reply nobody asked for: 503 COMMAND_INVALID, sent to the peer, and
// the pending consume fails with the connection error.
func TestFakeConsumeOkUnknownTag(t *testing.T) {
	closed := make(chan *proto.ConnectionClose, 1)
	c := newConn(t, fakeserver.Options{}, mux.Config{}, func(s *fakeserver.Conn) {
		ch := s.ExpectOpen(t)
		s.Expect(t, proto.BasicConsumeID)
		s.Send(ch, &proto.BasicConsumeOk{ConsumerTag: "zzz"})
		_, m := s.Expect(t, proto.ConnectionCloseID)
		closed <- m.(*proto.ConnectionClose)
	})
	ch := openChannel(t, c)
	a := call(t, ch, &mux.Request{Method: &proto.BasicConsume{Queue: "q", ConsumerTag: "a"}, Tag: "a"})
	o := await(t, a)
	var me *mux.Error
	require.ErrorAs(t, o.err, &me)
	require.True(t, me.Hard)
	require.Equal(t, proto.CommandInvalid, me.Code)
	require.Equal(t, uint16(proto.CommandInvalid), (<-closed).ReplyCode)
	<-c.Dead()
	require.Equal(t, o.err, c.Err())
}

// TestFakeBarrierHoldsLaterSends: nothing goes out behind tx.commit until
// its reply arrives; then the held request is sent and completes.
func TestFakeBarrierHoldsLaterSends(t *testing.T) {
	early := make(chan error, 1)
	c := newConn(t, fakeserver.Options{ReadTimeout: 300 * time.Millisecond}, mux.Config{}, func(s *fakeserver.Conn) {
		ch := s.ExpectOpen(t)
		s.Expect(t, proto.TxCommitID)
		_, m, err := s.ReadMethod() // must time out: the declare is held
		if m != nil {
			err = errors.New("sent behind the barrier: " + m.ID().String())
		}
		early <- err
		s.Send(ch, &proto.TxCommitOk{})
		for {
			_, m, err := s.ReadMethod()
			if errors.Is(err, fakeserver.ErrTimeout) {
				continue
			}
			if err != nil || m.ID() != proto.QueueDeclareID {
				t.Errorf("after commit-ok: got %v, %v; want queue.declare", m, err)
				return
			}
			break
		}
		s.Send(ch, &proto.QueueDeclareOk{Queue: "q"})
		s.Serve()
	})
	ch := openChannel(t, c)
	commit := call(t, ch, &mux.Request{Method: &proto.TxCommit{}, Barrier: true})
	declare := call(t, ch, &mux.Request{Method: &proto.QueueDeclare{Queue: "q"}})
	require.ErrorIs(t, <-early, fakeserver.ErrTimeout)
	require.NoError(t, await(t, commit).err)
	o := await(t, declare)
	require.NoError(t, o.err)
	require.Equal(t, &proto.QueueDeclareOk{Queue: "q"}, o.reply)
}

// TestFakeHeartbeatTimeout runs in a synctest bubble: with a 1 s heartbeat
// and a peer that sends nothing, the connection dies of ErrHeartbeat after
// two intervals, not before, and sends heartbeats of its own meanwhile.
func TestFakeHeartbeatTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := make(chan *fakeserver.Conn, 1)
		c := newConn(t, fakeserver.Options{ReadTimeout: time.Hour}, mux.Config{Heartbeat: time.Second}, func(s *fakeserver.Conn) {
			srv <- s
			<-s.Done()
		})
		s := <-srv
		start := time.Now()
		pending := call(t, openChannelNoWait(t, c), &mux.Request{Method: &proto.QueueDeclare{Queue: "q"}})
		<-c.Dead()
		elapsed := time.Since(start)
		require.GreaterOrEqual(t, elapsed, 1250*time.Millisecond, "died before an interval and a quarter of silence")
		require.LessOrEqual(t, elapsed, 1500*time.Millisecond)
		require.ErrorIs(t, c.Err(), mux.ErrHeartbeat)
		require.ErrorIs(t, (<-pending).err, mux.ErrHeartbeat)
		require.Positive(t, s.Heartbeats(), "the client sent heartbeats while the peer was silent")
	})
}

// TestFakeHeartbeatsKeepAlive: a peer that sends heartbeats keeps an
// otherwise idle connection alive.
func TestFakeHeartbeatsKeepAlive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := make(chan *fakeserver.Conn, 1)
		opts := fakeserver.Options{Heartbeat: 1, KeepAlive: true, ReadTimeout: time.Hour}
		c := newConn(t, opts, mux.Config{Heartbeat: time.Second}, func(s *fakeserver.Conn) {
			srv <- s
			s.Serve()
		})
		s := <-srv
		time.Sleep(10 * time.Second)
		require.NoError(t, c.Err())
		require.Positive(t, s.Heartbeats())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, c.Close(ctx))
	})
}

func openChannelNoWait(t *testing.T, c *mux.Conn) *mux.Channel {
	t.Helper()
	ch, err := c.OpenChannel(nil, nil)
	require.NoError(t, err)
	return ch
}

// TestFakeHeartbeatDetectedWithinIntervalAndAHalf: a silent peer is
// detected within 1.5 heartbeat intervals. The peer sends one frame at
// various offsets from the writer's ticks and then nothing: the connection
// must end no later than an interval and a half after that frame (issue
// 23: before, up to two), and not before one and a quarter.
func TestFakeHeartbeatDetectedWithinIntervalAndAHalf(t *testing.T) {
	for offset := 50 * time.Millisecond; offset < 1250*time.Millisecond; offset += 70 * time.Millisecond {
		synctest.Test(t, func(t *testing.T) {
			last := make(chan time.Time, 1)
			c := newConn(t, fakeserver.Options{ReadTimeout: time.Hour}, mux.Config{Heartbeat: time.Second}, func(s *fakeserver.Conn) {
				time.Sleep(offset)
				s.SendHeartbeat()
				last <- time.Now()
				<-s.Done()
			})
			<-c.Dead()
			silent := time.Since(<-last)
			require.ErrorIs(t, c.Err(), mux.ErrHeartbeat)
			require.LessOrEqual(t, silent, 1500*time.Millisecond, "frame at %v: peer silent for %v before the connection ended", offset, silent)
			require.GreaterOrEqual(t, silent, 1250*time.Millisecond, "frame at %v: ended after only %v of silence", offset, silent)
		})
	}
}

// TestFakeCrossingChannelClose: the broker closes a channel while the
// client's own channel.close is in flight. The client answers close-ok,
// the pending close gets the broker's error, and the broker's close-ok
// for the released channel is ignored rather than taken for a violation.
func TestFakeCrossingChannelClose(t *testing.T) {
	c := newConn(t, fakeserver.Options{}, mux.Config{}, func(s *fakeserver.Conn) {
		ch := s.ExpectOpen(t)
		s.Expect(t, proto.ChannelCloseID)
		s.Send(ch, &proto.ChannelClose{ReplyCode: 406, ReplyText: "PRECONDITION_FAILED", ClassID: 50, MethodID: 10})
		got, _ := s.Expect(t, proto.ChannelCloseOkID)
		require.Equal(t, ch, got)
		s.Send(ch, &proto.ChannelCloseOk{})
		s.Serve()
	})
	ch := openChannel(t, c)
	closed := make(chan error, 1)
	require.NoError(t, ch.Close(func(err error) { closed <- err }))
	var me *mux.Error
	require.ErrorAs(t, <-closed, &me)
	require.Equal(t, proto.PreconditionFailed, me.Code)
	require.Equal(t, proto.QueueDeclareID, me.Method)
	require.ErrorAs(t, ch.Err(), &me)
	openChannel(t, c) // a round trip after the stray close-ok
	require.NoError(t, c.Err())
}

// TestFakeCrossingConnectionClose: the broker sends connection.close while
// the client's Close waits for close-ok. The client answers close-ok and
// Close returns with the broker's reason as the connection's error.
func TestFakeCrossingConnectionClose(t *testing.T) {
	closeOk := make(chan proto.MethodID, 1)
	c := newConn(t, fakeserver.Options{}, mux.Config{}, func(s *fakeserver.Conn) {
		s.Expect(t, proto.ConnectionCloseID)
		s.Send(0, &proto.ConnectionClose{ReplyCode: 320, ReplyText: "CONNECTION_FORCED"})
		_, m := s.Expect(t, proto.ConnectionCloseOkID)
		closeOk <- m.ID()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, c.Close(ctx))
	require.Equal(t, proto.ConnectionCloseOkID, <-closeOk)
	var me *mux.Error
	require.ErrorAs(t, c.Err(), &me)
	require.Equal(t, proto.ConnectionForced, me.Code)
}

// TestFakeCloseUnanswered: a broker that never answers connection.close
// makes Close return ctx's error once ctx ends, with pending requests
// failed with ErrClosed and the goroutines joined.
func TestFakeCloseUnanswered(t *testing.T) {
	c := newConn(t, fakeserver.Options{}, mux.Config{}, func(s *fakeserver.Conn) {
		s.ExpectOpen(t)
		s.Expect(t, proto.QueueDeclareID)
		s.Expect(t, proto.ConnectionCloseID)
		<-s.Done()
	})
	pending := call(t, openChannel(t, c), &mux.Request{Method: &proto.QueueDeclare{Queue: "q"}})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, c.Close(ctx), context.DeadlineExceeded)
	require.ErrorIs(t, c.Err(), mux.ErrClosed)
	require.ErrorIs(t, await(t, pending).err, mux.ErrClosed)
}

// TestFakeBlockedPausesPublish: connection.blocked makes Publish wait
// (honouring ctx) while other methods still flow; connection.unblocked
// lets it through.
func TestFakeBlockedPausesPublish(t *testing.T) {
	unblock := make(chan struct{})
	published := make(chan error, 1)
	c := newConn(t, fakeserver.Options{}, mux.Config{}, func(s *fakeserver.Conn) {
		ch := s.ExpectOpen(t)
		s.Send(0, &proto.ConnectionBlocked{Reason: "low on memory"})
		for range 2 {
			s.Expect(t, proto.QueueDeclareID)
			s.Send(ch, &proto.QueueDeclareOk{Queue: "q"})
		}
		<-unblock
		s.Send(0, &proto.ConnectionUnblocked{})
		_, m := s.Expect(t, proto.BasicPublishID)
		require.Equal(t, "after", m.(*proto.BasicPublish).RoutingKey)
		f, err := s.ReadFrame()
		if err == nil && f.Type != proto.FrameHeader {
			err = errors.New("no content header after basic.publish")
		}
		published <- err
		s.Serve()
	})
	ch := openChannel(t, c)
	// The declare-ok comes after connection.blocked: once it is processed,
	// so is the block.
	require.NoError(t, await(t, call(t, ch, &mux.Request{Method: &proto.QueueDeclare{Queue: "q"}})).err)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := ch.Publish(ctx, &proto.BasicPublish{RoutingKey: "during"}, &ops.Message{}, nil)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NoError(t, await(t, call(t, ch, &mux.Request{Method: &proto.QueueDeclare{Queue: "q"}})).err,
		"other methods flow while blocked")

	close(unblock)
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, ch.Publish(ctx, &proto.BasicPublish{RoutingKey: "after"}, &ops.Message{}, nil))
	require.NoError(t, <-published)
}

// TestFakePublishFramesContiguous: publishes from several goroutines on
// several channels reach the wire with each message's method, header and
// body frames together, bodies split to the negotiated frame_max (the fake
// server refuses larger frames).
func TestFakePublishFramesContiguous(t *testing.T) {
	const perChannel, bodySize = 20, 10000
	checked := make(chan error, 1)
	opts := fakeserver.Options{FrameMax: 4096}
	c := newConn(t, opts, mux.Config{FrameMax: 4096}, func(s *fakeserver.Conn) {
		checked <- checkContiguous(s, 2*perChannel, bodySize)
		s.Serve()
	})
	body := make([]byte, bodySize)
	errs := make(chan error, 2*perChannel)
	for range 2 {
		ch, err := c.OpenChannel(nil, nil)
		require.NoError(t, err)
		go func() { // owner: this test; exits after perChannel publishes.
			for range perChannel {
				errs <- ch.Publish(context.Background(), &proto.BasicPublish{RoutingKey: "k"}, &ops.Message{Body: body}, nil)
			}
		}()
	}
	select {
	case err := <-checked:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("fake server did not see every publish")
	}
	for range 2 * perChannel {
		require.NoError(t, <-errs)
	}
}

// checkContiguous reads n publishes and reports the first frame that is
// out of place.
func checkContiguous(s *fakeserver.Conn, n int, bodySize uint64) error {
	var open uint16 // channel whose content is being read, 0 if none
	var left uint64 // body bytes still due on it
	var header bool // its header has arrived
	for done := 0; done < n || open != 0; {
		f, err := s.ReadFrame()
		if err != nil {
			return err
		}
		switch {
		case open == 0 && f.Type == proto.FrameMethod:
			m, err := proto.DecodeMethod(f.Payload)
			switch {
			case err != nil:
				return err
			case m.ID() == proto.ChannelOpenID:
				s.Send(f.Channel, &proto.ChannelOpenOk{})
				continue
			case m.ID() != proto.BasicPublishID:
				return fmt.Errorf("unexpected %v", m.ID())
			}
			open, left, header = f.Channel, bodySize, false
		case open != f.Channel:
			return fmt.Errorf("frame type %d on channel %d inside content on channel %d", f.Type, f.Channel, open)
		case !header && f.Type == proto.FrameHeader:
			header = true
		case header && f.Type == proto.FrameBody && uint64(len(f.Payload)) <= left:
			left -= uint64(len(f.Payload))
			if left == 0 {
				open = 0
				done++
			}
		default:
			return fmt.Errorf("unexpected frame type %d on channel %d", f.Type, f.Channel)
		}
	}
	return nil
}

// TestFakeChannelLimit: channel numbers are allocated up to the negotiated
// channel_max and no further.
func TestFakeChannelLimit(t *testing.T) {
	c := newConn(t, fakeserver.Options{AutoOpen: true}, mux.Config{ChannelMax: 2}, nil)
	a, err := c.OpenChannel(nil, nil)
	require.NoError(t, err)
	b, err := c.OpenChannel(nil, nil)
	require.NoError(t, err)
	require.ElementsMatch(t, []uint16{1, 2}, []uint16{a.ID, b.ID})
	_, err = c.OpenChannel(nil, nil)
	require.ErrorIs(t, err, mux.ErrChannelLimit)
}

// TestFakeWriteToPeerThatStopsReading: a peer that keeps sending
// heartbeats but no longer reads leaves the writer blocked in a write,
// where it cannot see heartbeat ticks. The write deadline ends the
// connection within two heartbeat intervals of the write starting, and
// not before one and three quarters.
func TestFakeWriteToPeerThatStopsReading(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cli, srv := net.Pipe() // synchronous: a write waits for a read
		stop := make(chan struct{})
		beats := make(chan struct{})
		go func() { // owner: this test; exits when stop closes or the pipe fails
			defer close(beats)
			for {
				select {
				case <-stop:
					return
				case <-time.After(250 * time.Millisecond):
				}
				if _, err := srv.Write(proto.AppendHeartbeat(nil)); err != nil {
					return
				}
			}
		}()
		defer func() { close(stop); srv.Close(); <-beats }()
		c := mux.New(cli, proto.NewFrameReader(cli), mux.Config{Heartbeat: time.Second, FrameMax: 131072, ChannelMax: 2047})
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c.Close(ctx)
		}()
		time.Sleep(300 * time.Millisecond) // off the writer's tick
		start := time.Now()
		_, err := c.OpenChannel(nil, nil)
		require.NoError(t, err)
		select {
		case <-c.Dead():
		case <-time.After(10 * time.Second):
			t.Fatal("connection alive 10 s into a write the peer never reads")
		}
		elapsed := time.Since(start)
		require.ErrorIs(t, c.Err(), os.ErrDeadlineExceeded)
		require.GreaterOrEqual(t, elapsed, 1750*time.Millisecond)
		require.LessOrEqual(t, elapsed, 2*time.Second)
	})
}

// TestFakeCrossingCloseHoldsNumber: when the broker's channel.close
// crosses ours, the channel's number stays taken until the broker's
// close-ok for ours arrives (RabbitMQ sends it after answering ours with
// its close): reused earlier, that close-ok would land on the new channel
// and end the connection (503 unexpected channel.close-ok).
func TestFakeCrossingCloseHoldsNumber(t *testing.T) {
	proceed := make(chan struct{})
	blocked := make(chan bool, 1)
	c := newConn(t, fakeserver.Options{}, mux.Config{ChannelMax: 1, OnBlocked: func(b bool, _ string) { blocked <- b }},
		func(s *fakeserver.Conn) {
			ch := s.ExpectOpen(t)
			s.Expect(t, proto.ChannelCloseID) // ours
			s.Send(ch, &proto.ChannelClose{ReplyCode: 406, ReplyText: "PRECONDITION_FAILED", ClassID: 50, MethodID: 10})
			s.Expect(t, proto.ChannelCloseOkID) // the client's answer to the broker's close
			select {
			case <-proceed:
			case <-s.Done():
				return
			}
			s.Send(ch, &proto.ChannelCloseOk{}) // the broker's answer to ours
			s.Send(0, &proto.ConnectionBlocked{Reason: "marker"})
			again := s.ExpectOpen(t)
			require.Equal(t, ch, again)
			s.Serve()
		})
	ch := openChannel(t, c)
	closed := make(chan error, 1)
	require.NoError(t, ch.Close(func(err error) { closed <- err }))
	var me *mux.Error
	require.ErrorAs(t, <-closed, &me)
	require.Equal(t, proto.PreconditionFailed, me.Code)

	_, err := c.OpenChannel(nil, nil)
	close(proceed)
	require.ErrorIs(t, err, mux.ErrChannelLimit, "channel 1 is reused before the broker answered its close")
	select {
	case <-blocked: // the reader has handled the close-ok in front of it
	case <-time.After(10 * time.Second):
		t.Fatal("connection.blocked not seen")
	}
	require.NoError(t, c.Err())
	again := openChannel(t, c)
	require.Equal(t, uint16(1), again.ID)
	require.NoError(t, c.Err())
}
