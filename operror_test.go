package leveret_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// TestWaitAllNamesEveryFailure: of 50 declarations and a bind waited for
// together, the broker refuses two declarations and the bind; WaitAll
// reports all three, in argument order, each naming its operation and
// entity, and errors.Is/As still match each. Before, WaitAll returned the
// first error alone, which named neither.
func TestWaitAllNamesEveryFailure(t *testing.T) {
	leakCheck(t)
	b := &fakeserver.Broker{Refuse: func(_ int, _ uint16, m proto.Method) proto.Method {
		switch m := m.(type) {
		case *proto.QueueDeclare:
			if strings.HasPrefix(m.Queue, "bad") {
				return &proto.ChannelClose{ReplyCode: 406, ReplyText: fmt.Sprintf("PRECONDITION_FAILED - inequivalent arg 'durable' for queue '%s'", m.Queue), ClassID: 50, MethodID: 10}
			}
		case *proto.QueueBind:
			return &proto.ChannelClose{ReplyCode: 404, ReplyText: "NOT_FOUND - no exchange 'nowhere' in vhost '/'", ClassID: 50, MethodID: 20}
		}
		return nil
	}}
	s := fakeserver.StartWith(t, fakeserver.Options{ReadTimeout: time.Second}, b.Serve)
	c := dial(t, s)
	var ws []leveret.Waiter
	for i := range 50 {
		name := fmt.Sprintf("q%d", i)
		if i == 7 || i == 31 {
			name = fmt.Sprintf("bad%d", i)
		}
		ws = append(ws, c.QueueDeclare(ops.QueueDeclare{Queue: name}))
	}
	ws = append(ws, c.QueueBind(ops.QueueBind{Queue: "q1", Exchange: "nowhere"}))
	err := leveret.WaitAll(waitCtx(t), ws...)
	require.Error(t, err)
	t.Log(err)
	lines := strings.Split(err.Error(), "\n")
	require.Len(t, lines, 3, "one line per failed operation")
	require.True(t, strings.HasPrefix(lines[0], `queue.declare "bad7": `), lines[0])
	require.True(t, strings.HasPrefix(lines[1], `queue.declare "bad31": `), lines[1])
	require.True(t, strings.HasPrefix(lines[2], `queue.bind "q1" to "nowhere": `), lines[2])
	require.ErrorIs(t, err, leveret.ErrPreconditionFailed)
	require.ErrorIs(t, err, leveret.ErrNotFound)
	var ce *leveret.ChannelError
	require.ErrorAs(t, err, &ce)
	var oe *leveret.OperationError
	require.ErrorAs(t, leveret.FirstError(err), &oe)
	require.Equal(t, "queue.declare", oe.Op)
	require.Equal(t, `"bad7"`, oe.Entity)
	require.ErrorIs(t, oe, leveret.ErrPreconditionFailed)

	// One failure alone is not wrapped in a join; Collect joins like WaitAll.
	_, err = leveret.Collect(waitCtx(t), []*leveret.Promise[ops.QueueDeclareOk]{
		c.QueueDeclare(ops.QueueDeclare{Queue: "ok"}), c.QueueDeclare(ops.QueueDeclare{Queue: "bad-alone"})})
	require.ErrorAs(t, err, &oe)
	require.Equal(t, `"bad-alone"`, oe.Entity)
	require.Same(t, err, leveret.FirstError(err))
	require.False(t, errors.Is(err, leveret.ErrNotFound))
}
