package leveret_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// refusingBroker plays a broker without the delayed-message plugin: an
// exchange.declare of that type closes the connection (503 naming
// exchange.declare), as RabbitMQ does; text is the close's text. It counts
// connections and the declares of the refused type.
type refusingBroker struct {
	text           string
	acceptOn       int32 // a connection on which the type is still accepted (its plugin was there)
	conns, refused atomic.Int32
	drop           chan struct{} // a receive drops the current connection
}

func (b *refusingBroker) serve(c *fakeserver.Conn) {
	n := b.conns.Add(1)
	serveMethods(c, func(ch uint16, m proto.Method) (bool, error) {
		switch m := m.(type) {
		case nil:
			select {
			case <-b.drop:
				return true, nil
			default:
			}
		case *proto.ExchangeDeclare:
			if m.Type == "x-delayed-message" && n != b.acceptOn {
				b.refused.Add(1)
				closeBlaming(c, proto.CommandInvalid, b.text, proto.ExchangeDeclareID)
				return true, nil
			}
			return false, c.Send(ch, &proto.ExchangeDeclareOk{})
		case *proto.QueueDeclare:
			return false, c.Send(ch, &proto.QueueDeclareOk{Queue: m.Queue})
		}
		return false, nil
	})
}

// closeBlaming closes the connection as RabbitMQ does for a refusal it
// takes for a connection error, naming the method, and waits for the
// client's close-ok (or hang-up).
func closeBlaming(c *fakeserver.Conn, code proto.ReplyCode, text string, method proto.MethodID) {
	c.Send(0, &proto.ConnectionClose{ReplyCode: uint16(code), ReplyText: text, ClassID: uint16(method >> 16), MethodID: uint16(method & 0xffff)})
	readUntilClose(c)
}

// TestRecoveryRefusalFailsAlone (issue 23, §1): a declaration the broker
// refuses by closing the connection fails its own promise with that
// *ConnectionError, is not re-sent and not recorded, and every operation
// in flight with it succeeds. When the close quotes the refused exchange
// type, the culprit is known at once (one reconnect); when it does not,
// the exchange.declares in flight are re-sent one at a time and the
// culprit is the one in flight at the next close (two). Before, the client
// re-sent the declaration on every new connection, for ever.
func TestRecoveryRefusalFailsAlone(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		conns      int32 // connections until the culprit is found
	}{
		{"quoted", "COMMAND_INVALID - unknown exchange type 'x-delayed-message'", 2},
		{"not quoted", "COMMAND_INVALID - refused", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			b := &refusingBroker{text: tc.text, drop: make(chan struct{})}
			s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true, ReadTimeout: 50 * time.Millisecond}, b.serve)
			c := dial(t, s, leveret.WithReconnect(&leveret.Backoff{Initial: time.Millisecond, Max: time.Millisecond}))
			var good []*leveret.Promise[ops.ExchangeDeclareOk]
			var queues []*leveret.Promise[ops.QueueDeclareOk]
			for i := range 20 {
				good = append(good, c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: fmt.Sprint("x", i), Kind: "direct"}))
				queues = append(queues, c.QueueDeclare(ops.QueueDeclare{Queue: fmt.Sprint("q", i), Durable: true}))
			}
			poison := c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: "delayed", Kind: "x-delayed-message"})
			for i := range 20 {
				good = append(good, c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: fmt.Sprint("y", i), Kind: "topic"}))
			}
			_, err := await(t, poison)
			ce := requireConnErr(t, err, leveret.ReplyCode(proto.CommandInvalid))
			require.Equal(t, "exchange.declare", ce.Method())
			for _, p := range good {
				_, err := await(t, p)
				require.NoError(t, err)
			}
			for _, p := range queues {
				_, err := await(t, p)
				require.NoError(t, err)
			}
			require.Equal(t, tc.conns, b.conns.Load(), "connections")
			refused := b.refused.Load()

			// Not recorded: the next recovery does not declare it again.
			b.drop <- struct{}{}
			_, err = await(t, c.QueueDeclare(ops.QueueDeclare{Queue: "after", Durable: true}))
			require.NoError(t, err)
			require.Equal(t, tc.conns+1, b.conns.Load(), "connections")
			require.Equal(t, refused, b.refused.Load(), "the refused declaration was replayed")
			require.NoError(t, c.Err())
		})
	}
}

// TestRecoveryReplayRefusalDropped (issue 23, §1): a declaration the
// broker took once and refuses at replay, by closing the connection (the
// plugin was removed), is dropped from the record and reported in the next
// EventRecovered; the rest of the record is replayed. With a close that
// does not quote it, the exchanges replayed with it are replayed one at a
// time on the next connection. Before, every replay closed the connection.
func TestRecoveryReplayRefusalDropped(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		conns      int32 // connections until recovered without it
	}{
		{"quoted", "COMMAND_INVALID - unknown exchange type 'x-delayed-message'", 3},
		{"not quoted", "COMMAND_INVALID - refused", 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			b := &refusingBroker{text: tc.text, acceptOn: 1, drop: make(chan struct{})}
			s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true, ReadTimeout: 50 * time.Millisecond}, b.serve)
			c, recovered := dialEvents(t, s, leveret.EventRecovered)
			var all []leveret.Waiter
			for i := range 10 {
				all = append(all, c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: fmt.Sprint("x", i), Kind: "direct"}))
			}
			all = append(all, c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: "delayed", Kind: "x-delayed-message"}))
			for i := range 10 {
				all = append(all, c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: fmt.Sprint("y", i), Kind: "direct"}),
					c.QueueDeclare(ops.QueueDeclare{Queue: fmt.Sprint("q", i), Durable: true}))
			}
			require.NoError(t, leveret.WaitAll(waitCtx(t), all...))

			b.drop <- struct{}{}
			rep := receive(t, recovered, "EventRecovered").Recovery
			require.Equal(t, tc.conns, b.conns.Load(), "connections")
			require.Equal(t, 20, rep.Exchanges)
			require.Equal(t, 10, rep.Queues)
			require.Len(t, rep.Failed, 1)
			require.ErrorContains(t, rep.Failed[0], `exchange "delayed"`)
			requireConnErr(t, rep.Failed[0], leveret.ReplyCode(proto.CommandInvalid))
			refused := b.refused.Load()

			b.drop <- struct{}{} // the record no longer holds it
			rep = receive(t, recovered, "EventRecovered").Recovery
			require.Empty(t, rep.Failed)
			require.Equal(t, refused, b.refused.Load())
			require.NoError(t, c.Err())
		})
	}
}

// TestRecoveryRefusedQosNotReapplied (issue 23, §1): basic.qos with a
// prefetch size, which RabbitMQ does not implement (it closes the
// connection, 540), fails with that error, and the re-opened channel does
// not apply it again; the prefetch count taken before it is re-applied.
// Before, it was recorded when issued and re-applied on every re-open.
func TestRecoveryRefusedQosNotReapplied(t *testing.T) {
	leakCheck(t)
	var conns atomic.Int32
	qos := make(chan *proto.BasicQos, 8)
	s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true}, func(c *fakeserver.Conn) {
		conns.Add(1)
		serveMethods(c, func(ch uint16, m proto.Method) (bool, error) {
			q, ok := m.(*proto.BasicQos)
			switch {
			case !ok:
				return false, nil
			case q.PrefetchSize > 0:
				qos <- q
				closeBlaming(c, proto.NotImplemented, "NOT_IMPLEMENTED - prefetch_size!=0 (65536)", proto.BasicQosID)
				return true, nil
			}
			qos <- q
			return false, c.Send(ch, &proto.BasicQosOk{})
		})
	})
	c, recovered := dialEvents(t, s, leveret.EventRecovered)
	ch, err := c.Channel(waitCtx(t))
	require.NoError(t, err)
	_, err = await(t, ch.Qos(ops.Qos{PrefetchCount: 10}))
	require.NoError(t, err)
	require.EqualValues(t, 10, receive(t, qos, "basic.qos").PrefetchCount)
	_, err = await(t, ch.Qos(ops.Qos{PrefetchCount: 20, PrefetchSize: 65536}))
	requireConnErr(t, err, leveret.ReplyCode(proto.NotImplemented))
	require.EqualValues(t, 65536, receive(t, qos, "the refused basic.qos").PrefetchSize)

	receive(t, recovered, "EventRecovered")
	again := receive(t, qos, "basic.qos on the re-opened channel")
	require.EqualValues(t, 10, again.PrefetchCount)
	require.Zero(t, again.PrefetchSize, "the refused prefetch size was re-applied")
	require.Equal(t, int32(2), conns.Load())
	require.NoError(t, ch.Err())
}

// Suspects of a connection close on a client that does not reconnect fail
// with the close's error at once: nothing will send them again.
func TestRefusalSuspectsFailWithoutReconnect(t *testing.T) {
	leakCheck(t)
	s := fakeserver.StartWith(t, fakeserver.Options{AutoOpen: true, ReadTimeout: time.Second}, func(c *fakeserver.Conn) {
		for declared := 0; declared < 2; {
			_, m, err := c.ReadMethod()
			if err != nil {
				return
			}
			if m.ID() == proto.ExchangeDeclareID {
				declared++
			}
		}
		// Both are pending; the text names neither: both are suspects.
		c.Send(0, &proto.ConnectionClose{ReplyCode: 503, ReplyText: "COMMAND_INVALID - unknown exchange type", ClassID: 40, MethodID: 10})
		c.Serve()
	})
	c := dial(t, s)
	first := c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: "first", Kind: "x-unknown"})
	second := c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: "second", Kind: "x-unknown"})
	for _, p := range []*leveret.Promise[ops.ExchangeDeclareOk]{first, second} {
		_, err := p.Wait(waitCtx(t))
		require.ErrorIs(t, err, leveret.ErrCommandInvalid)
	}
	<-c.Done()
}
