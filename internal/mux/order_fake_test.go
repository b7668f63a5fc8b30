package mux_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/internal/mux"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// Publishing order and pauses: the send order a channel records, and
// channel.flow from the peer.

// TestFakeFailedAtOrdersPublishes: when the broker closes a channel
// blaming a request, FailedAt is that request's place in the send order,
// which publishes also take: those before it were processed, those after
// were discarded.
func TestFakeFailedAtOrdersPublishes(t *testing.T) {
	// The server holds its replies until the test has looked at the open
	// channel: it may read both declares before the last publish is even
	// issued, and a close that came in first would make "open" a race.
	checked := make(chan struct{})
	c := newConn(t, fakeserver.Options{}, mux.Config{}, func(s *fakeserver.Conn) {
		ch := s.ExpectOpen(t)
		for declares := 0; declares < 2; { // publishes' content frames in between
			f, err := s.ReadFrame()
			require.NoError(t, err)
			if f.Type != proto.FrameMethod {
				continue
			}
			if m, err := proto.DecodeMethod(f.Payload); err == nil && m.ID() == proto.QueueDeclareID {
				declares++
			}
		}
		<-checked
		s.Send(ch, &proto.QueueDeclareOk{Queue: "a"})
		s.Send(ch, &proto.ChannelClose{ReplyCode: 406, ReplyText: "PRECONDITION_FAILED", ClassID: proto.ClassQueue, MethodID: proto.QueueDeclareID.Method()})
		s.Serve()
	})
	var release sync.Once
	t.Cleanup(func() { release.Do(func() { close(checked) }) }) // a failed check must not strand the script
	ch := openChannel(t, c)
	msg := &ops.Message{Body: []byte("x")}
	first, err := ch.PublishNow(&proto.BasicPublish{RoutingKey: "q"}, msg)
	require.NoError(t, err)
	a := call(t, ch, &mux.Request{Method: &proto.QueueDeclare{Queue: "a"}})
	mid, err := ch.PublishNow(&proto.BasicPublish{RoutingKey: "q"}, msg)
	require.NoError(t, err)
	b := call(t, ch, &mux.Request{Method: &proto.QueueDeclare{Queue: "b"}})
	last, err := ch.PublishNow(&proto.BasicPublish{RoutingKey: "q"}, msg)
	require.NoError(t, err)
	require.Less(t, first, mid)
	require.Less(t, mid, last)
	require.Equal(t, uint64(0), ch.FailedAt(), "open")
	release.Do(func() { close(checked) })
	require.NoError(t, await(t, a).err)
	require.Error(t, await(t, b).err)
	at := ch.FailedAt()
	require.Greater(t, at, mid, "the publish before the failed declare was processed")
	require.Less(t, at, last, "the one after it was discarded")
}

// TestFakeChannelFlowPausesPublishing: after channel.flow active=false a
// publish with a ctx waits (and gives up with its ctx, sending nothing),
// one without is held; after active=true the held and the waiting ones go
// out in order, and other methods were never paused.
func TestFakeChannelFlowPausesPublishing(t *testing.T) {
	got := make(chan string, 8)
	resume := make(chan struct{})
	c := newConn(t, fakeserver.Options{}, mux.Config{}, func(s *fakeserver.Conn) {
		ch := s.ExpectOpen(t)
		s.Send(ch, &proto.ChannelFlow{Active: false})
		for flowOk, declared := false, false; !flowOk || !declared; { // in either order
			_, m, err := s.ReadMethod()
			if err != nil {
				return
			}
			switch m := m.(type) {
			case *proto.ChannelFlowOk:
				flowOk = true
			case *proto.QueueDeclare: // not paused
				declared = true
				got <- "declare " + m.Queue
			}
		}
		s.Send(ch, &proto.QueueDeclareOk{Queue: "q"})
		<-resume
		s.Send(ch, &proto.ChannelFlow{Active: true})
		s.Expect(t, proto.ChannelFlowOkID)
		for {
			f, err := s.ReadFrame()
			if err != nil {
				return
			}
			if f.Type != proto.FrameMethod {
				continue
			}
			m, err := proto.DecodeMethod(f.Payload)
			if err != nil {
				return
			}
			switch m := m.(type) {
			case *proto.BasicPublish:
				got <- "publish " + m.RoutingKey
			case *proto.ChannelClose:
				s.Send(ch, &proto.ChannelCloseOk{})
			case *proto.ConnectionClose:
				s.Send(0, &proto.ConnectionCloseOk{})
				return
			}
		}
	})
	ch := openChannel(t, c)
	msg := &ops.Message{Body: []byte("x")}
	// The declare's reply comes after the pause: once it is in, the pause is.
	require.NoError(t, await(t, call(t, ch, &mux.Request{Method: &proto.QueueDeclare{Queue: "q"}})).err)
	require.Equal(t, "declare q", <-got)

	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, ch.Publish(short, &proto.BasicPublish{RoutingKey: "gave-up"}, msg, nil), context.DeadlineExceeded)
	seq, err := ch.PublishNow(&proto.BasicPublish{RoutingKey: "held"}, msg)
	require.NoError(t, err)
	require.Zero(t, seq, "held: no place in the send order yet")
	waited := make(chan error, 1)
	go func() {
		waited <- ch.Publish(context.Background(), &proto.BasicPublish{RoutingKey: "waited"}, msg, nil)
	}()
	select {
	case g := <-got:
		t.Fatalf("%s went out during the pause", g)
	case <-time.After(100 * time.Millisecond):
	}
	close(resume)
	require.NoError(t, <-waited)
	require.Equal(t, "publish held", <-got)
	require.Equal(t, "publish waited", <-got)
}

// TestFakePublishTagsCountInChannelOrder: PublishTags counts the
// publishes accepted after confirm.select, in the channel's order: not
// those before the select, those held behind a barrier as they are
// accepted (they go out in that order, or never), and nothing after the
// connection has ended.
func TestFakePublishTagsCountInChannelOrder(t *testing.T) {
	release := make(chan struct{})
	c := newConn(t, fakeserver.Options{}, mux.Config{}, func(s *fakeserver.Conn) {
		ch := s.ExpectOpen(t)
		for {
			f, err := s.ReadFrame()
			require.NoError(t, err)
			if f.Type != proto.FrameMethod {
				continue
			}
			if m, err := proto.DecodeMethod(f.Payload); err == nil && m.ID() == proto.TxCommitID {
				break
			}
		}
		<-release
		s.Send(ch, &proto.TxCommitOk{})
		for n := 0; n < 2; { // the two publishes released by the commit-ok
			f, err := s.ReadFrame()
			require.NoError(t, err)
			if f.Type == proto.FrameMethod {
				n++
			}
		}
		s.Close() // the connection drops
	})
	ch := openChannel(t, c)
	msg := &ops.Message{Body: []byte("x")}
	pub := func() error {
		_, err := ch.PublishNow(&proto.BasicPublish{RoutingKey: "q"}, msg)
		return err
	}
	require.NoError(t, pub())
	require.NoError(t, pub())
	require.Equal(t, uint64(0), ch.PublishTags(), "publishes before confirm.select take no tag")
	require.NoError(t, ch.Call(&mux.Request{Method: &proto.ConfirmSelect{}}))
	require.NoError(t, pub())
	require.Equal(t, uint64(1), ch.PublishTags())
	commit := call(t, ch, &mux.Request{Method: &proto.TxCommit{}, Barrier: true})
	require.NoError(t, pub())
	require.NoError(t, pub())
	require.Equal(t, uint64(3), ch.PublishTags(), "held behind the barrier: counted in their order")
	close(release)
	require.NoError(t, await(t, commit).err)
	require.Equal(t, uint64(3), ch.PublishTags(), "released with the commit-ok: not counted again")
	require.Eventually(t, func() bool { return ch.Err() != nil }, 10*time.Second, time.Millisecond)
	require.Error(t, pub(), "the connection has ended")
	require.Equal(t, uint64(3), ch.PublishTags(), "final once the channel has ended")
}
