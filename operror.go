package leveret

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/leveret-mq/leveret/internal/proto"
)

// OperationError is the error of a topology operation (a declare, bind,
// unbind, purge or delete, on the Client or a Channel) and of qos, recover,
// confirm.select and tx.select: it names the operation and the entities it
// named, so that the errors WaitAll gathers from many promises say which
// failed, e.g. `queue.declare "svc.q137": amqp: channel closed: 406 ...`.
// It unwraps to the failure: errors.Is and errors.As match through it
// (ErrPreconditionFailed, *ChannelError, ErrClosed, ...).
type OperationError struct {
	Op     string // the AMQP method, such as "queue.declare"
	Entity string // the entities it named, quoted, such as `"q" to "x"`; "" if none
	Err    error
}

func (e *OperationError) Error() string {
	if e.Entity == "" {
		return e.Op + ": " + e.Err.Error()
	}
	return e.Op + " " + e.Entity + ": " + e.Err.Error()
}

// Unwrap returns the failure.
func (e *OperationError) Unwrap() error { return e.Err }

// operationError names m in err, once.
func operationError(m proto.Method, err error) error {
	var oe *OperationError
	if errors.As(err, &oe) {
		return err
	}
	id := m.ID()
	return &OperationError{Op: id.String(), Entity: entityOf(m), Err: err}
}

// entityOf quotes what m names: a queue, an exchange, or a binding's two
// ends (destination to source).
func entityOf(m proto.Method) string {
	q := strconv.Quote
	switch m := m.(type) {
	case *proto.QueueDeclare:
		if m.Queue == "" {
			return "(server-named)"
		}
		return q(m.Queue)
	case *proto.QueueDelete:
		return q(m.Queue)
	case *proto.QueuePurge:
		return q(m.Queue)
	case *proto.QueueBind:
		return fmt.Sprintf("%s to %s", q(m.Queue), q(m.Exchange))
	case *proto.QueueUnbind:
		return fmt.Sprintf("%s from %s", q(m.Queue), q(m.Exchange))
	case *proto.ExchangeDeclare:
		return q(m.Exchange)
	case *proto.ExchangeDelete:
		return q(m.Exchange)
	case *proto.ExchangeBind:
		return fmt.Sprintf("%s to %s", q(m.Destination), q(m.Source))
	case *proto.ExchangeUnbind:
		return fmt.Sprintf("%s from %s", q(m.Destination), q(m.Source))
	}
	return ""
}
