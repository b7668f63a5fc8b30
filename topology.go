package leveret

import (
	"github.com/leveret-mq/leveret/internal/pool"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// issuer sends one method and reports its reply: the client's channel pool
// or an explicit channel. keys name the exchanges and queues it touches, so
// the pool can keep operations on one entity in order.
type issuer interface {
	issue(keys [2]string, m proto.Method, done replyFunc)
}

// replyFunc gets an operation's reply, the content that came with it (valid
// only during the call) and the channel it ran on, or the error.
type replyFunc func(reply proto.Method, msg *ops.Message, ch *Channel, err error)

// issue sends m through is and returns a promise of conv(reply). Its error
// names the operation (OperationError).
func issue[T any](is issuer, keys [2]string, m proto.Method, conv func(proto.Method) T) *Promise[T] {
	p := newPromise[T]()
	is.issue(keys, m, func(reply proto.Method, _ *ops.Message, _ *Channel, err error) {
		if err != nil {
			var zero T
			p.resolve(zero, operationError(m, err))
			return
		}
		p.resolve(conv(reply), nil)
	})
	return p
}

func exchangeKeys(a, b string) [2]string { return [2]string{pool.Key('e', a), pool.Key('e', b)} }
func queueKeys(q, e string) [2]string    { return [2]string{pool.Key('q', q), pool.Key('e', e)} }

func exchangeDeclare(o ops.ExchangeDeclare) proto.Method {
	kind := string(o.Kind)
	if kind == "" {
		kind = string(ops.Direct)
	}
	return &proto.ExchangeDeclare{Exchange: o.Exchange, Type: kind, Passive: o.Passive, Durable: o.Durable,
		AutoDelete: o.AutoDelete, Internal: o.Internal, Arguments: o.Args}
}

func exchangeDelete(o ops.ExchangeDelete) proto.Method {
	return &proto.ExchangeDelete{Exchange: o.Exchange, IfUnused: o.IfUnused}
}

func exchangeBind(o ops.ExchangeBind) proto.Method {
	return &proto.ExchangeBind{Destination: o.Destination, Source: o.Source, RoutingKey: o.RoutingKey, Arguments: o.Args}
}

func exchangeUnbind(o ops.ExchangeUnbind) proto.Method {
	return &proto.ExchangeUnbind{Destination: o.Destination, Source: o.Source, RoutingKey: o.RoutingKey, Arguments: o.Args}
}

func queueDeclare(o ops.QueueDeclare) proto.Method {
	return &proto.QueueDeclare{Queue: o.Queue, Passive: o.Passive, Durable: o.Durable, Exclusive: o.Exclusive,
		AutoDelete: o.AutoDelete, Arguments: o.Args}
}

func queueBind(o ops.QueueBind) proto.Method {
	return &proto.QueueBind{Queue: o.Queue, Exchange: o.Exchange, RoutingKey: o.RoutingKey, Arguments: o.Args}
}

func queueUnbind(o ops.QueueUnbind) proto.Method {
	return &proto.QueueUnbind{Queue: o.Queue, Exchange: o.Exchange, RoutingKey: o.RoutingKey, Arguments: o.Args}
}

func queuePurge(o ops.QueuePurge) proto.Method { return &proto.QueuePurge{Queue: o.Queue} }

func queueDelete(o ops.QueueDelete) proto.Method {
	return &proto.QueueDelete{Queue: o.Queue, IfUnused: o.IfUnused, IfEmpty: o.IfEmpty}
}

func exchangeDeclareOk(proto.Method) ops.ExchangeDeclareOk { return ops.ExchangeDeclareOk{} }
func exchangeDeleteOk(proto.Method) ops.ExchangeDeleteOk   { return ops.ExchangeDeleteOk{} }
func exchangeBindOk(proto.Method) ops.ExchangeBindOk       { return ops.ExchangeBindOk{} }
func exchangeUnbindOk(proto.Method) ops.ExchangeUnbindOk   { return ops.ExchangeUnbindOk{} }
func queueBindOk(proto.Method) ops.QueueBindOk             { return ops.QueueBindOk{} }
func queueUnbindOk(proto.Method) ops.QueueUnbindOk         { return ops.QueueUnbindOk{} }

func queueDeclareOk(m proto.Method) ops.QueueDeclareOk {
	ok, _ := m.(*proto.QueueDeclareOk)
	if ok == nil {
		return ops.QueueDeclareOk{}
	}
	return ops.QueueDeclareOk{Queue: ok.Queue, MessageCount: ok.MessageCount, ConsumerCount: ok.ConsumerCount}
}

func queuePurgeOk(m proto.Method) ops.QueuePurgeOk {
	ok, _ := m.(*proto.QueuePurgeOk)
	if ok == nil {
		return ops.QueuePurgeOk{}
	}
	return ops.QueuePurgeOk{MessageCount: ok.MessageCount}
}

func queueDeleteOk(m proto.Method) ops.QueueDeleteOk {
	ok, _ := m.(*proto.QueueDeleteOk)
	if ok == nil {
		return ops.QueueDeleteOk{}
	}
	return ops.QueueDeleteOk{MessageCount: ok.MessageCount}
}
