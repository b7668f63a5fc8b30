package fakeserver

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// Broker is a script that plays a broker with no queues behind it: it
// answers what a client sends while it declares topology, opens channels
// and starts consumers, and keeps only what it needs to deliver to the
// consumers it started. Tests of recovery use it to see every method a
// reconnect re-sends and to drop the connection at any of them.
//
// It answers channel.open and channel.close, basic.qos, basic.recover,
// confirm.select (then basic.ack for each publish, once its body has
// arrived; a mandatory publish with routing key "unroutable" is returned
// first, 312 NO_ROUTE, as a broker with no queue bound returns it, and
// one with routing key "nack" is nacked),
// tx.select/commit/rollback, exchange and queue declare, delete, bind and
// unbind (a server-named queue gets "amq.gen-N"), basic.consume and
// basic.cancel, and connection.close. basic.get gets get-empty, except on
// a queue whose name starts with "full", which always has a message (its
// body is the queue's name); other methods are ignored. The zero value is ready; one Broker serves every
// connection of a Server (pass Serve as its script).
type Broker struct {
	// Before, if set, is called with each method the client sends after
	// the handshake, before it is answered: n is the connection's number
	// (1 for the first the server accepted), step the method's (1 for the
	// first on that connection). Returning true closes the connection
	// instead of answering. It runs on the connection's script goroutine.
	Before func(n, step int, channel uint16, m proto.Method) bool
	// Refuse, if set, is asked about each method Before let through: a
	// channel.close or connection.close it returns is sent instead of the
	// answer, as a broker refusing the method does (then, as RabbitMQ
	// does, the channel's methods are ignored until its close-ok).
	Refuse func(n int, channel uint16, m proto.Method) proto.Method
	// Answered, if set, is called after the broker has answered a method
	// (or taken one that has no answer), on the script goroutine.
	Answered func(n int, channel uint16, m proto.Method)

	mu      sync.Mutex
	conns   int
	live    map[*Conn]*brokerConn
	queueNo int
}

// brokerConn is what the Broker keeps of one connection: its consumers,
// the channels in confirm mode and the last delivery tag on each channel.
type brokerConn struct {
	consumers map[string]uint16 // tag → channel
	confirm   map[uint16]uint64 // channel → last publish sequence number
	tags      map[uint16]uint64 // channel → last delivery tag
}

// Serve runs the broker on c until the client closes it, the connection
// drops or Before asks for the drop. It is a script for StartWith.
func (b *Broker) Serve(c *Conn) {
	b.mu.Lock()
	b.conns++
	n := b.conns
	if b.live == nil {
		b.live = make(map[*Conn]*brokerConn)
	}
	bc := &brokerConn{consumers: make(map[string]uint16), confirm: make(map[uint16]uint64), tags: make(map[uint16]uint64)}
	b.live[c] = bc
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.live, c)
		b.mu.Unlock()
	}()
	step := 0
	closing := make(map[uint16]bool) // channels closed by the broker, awaiting close-ok
	var publishing *contentState     // the publish whose content is being read
	for {
		f, err := c.ReadFrame()
		if errors.Is(err, ErrTimeout) {
			continue
		}
		if err != nil {
			return
		}
		if f.Type != proto.FrameMethod {
			if publishing != nil && publishing.take(f) {
				if err := b.published(c, publishing); err != nil {
					return
				}
				publishing = nil
			}
			continue
		}
		m, err := proto.DecodeMethod(f.Payload)
		if err != nil {
			return
		}
		if closing[f.Channel] {
			if m.ID() == proto.ChannelCloseOkID {
				delete(closing, f.Channel)
			}
			continue
		}
		step++
		if b.Before != nil && b.Before(n, step, f.Channel, m) {
			return // the script's end closes the connection
		}
		if b.Refuse != nil {
			if r := b.Refuse(n, f.Channel, m); r != nil {
				ch := f.Channel
				if r.ID() == proto.ConnectionCloseID {
					ch = 0
				} else {
					closing[ch] = true
				}
				if c.Send(ch, r) != nil {
					return
				}
				continue
			}
		}
		if p, ok := m.(*proto.BasicPublish); ok {
			publishing = &contentState{channel: f.Channel, publish: p}
			continue
		}
		done, err := b.answer(c, bc, f.Channel, m)
		if done || err != nil {
			return
		}
		if b.Answered != nil {
			b.Answered(n, f.Channel, m)
		}
	}
}

// answer replies to m as a broker would; done means the client closed
// the connection.
func (b *Broker) answer(c *Conn, bc *brokerConn, ch uint16, m proto.Method) (done bool, err error) {
	var reply proto.Method
	switch m := m.(type) {
	case *proto.ConnectionClose:
		return true, c.Send(0, &proto.ConnectionCloseOk{})
	case *proto.ChannelOpen:
		reply = &proto.ChannelOpenOk{}
	case *proto.ChannelClose:
		b.forgetChannel(bc, ch)
		reply = &proto.ChannelCloseOk{}
	case *proto.BasicQos:
		reply = &proto.BasicQosOk{}
	case *proto.BasicRecover:
		reply = &proto.BasicRecoverOk{}
	case *proto.ConfirmSelect:
		b.mu.Lock()
		bc.confirm[ch] = 0
		b.mu.Unlock()
		if m.NoWait {
			return false, nil
		}
		reply = &proto.ConfirmSelectOk{}
	case *proto.TxSelect:
		reply = &proto.TxSelectOk{}
	case *proto.TxCommit:
		reply = &proto.TxCommitOk{}
	case *proto.TxRollback:
		reply = &proto.TxRollbackOk{}
	case *proto.ExchangeDeclare:
		reply = &proto.ExchangeDeclareOk{}
	case *proto.ExchangeDelete:
		reply = &proto.ExchangeDeleteOk{}
	case *proto.ExchangeBind:
		reply = &proto.ExchangeBindOk{}
	case *proto.ExchangeUnbind:
		reply = &proto.ExchangeUnbindOk{}
	case *proto.QueueDeclare:
		name := m.Queue
		if name == "" {
			b.mu.Lock()
			b.queueNo++
			name = fmt.Sprintf("amq.gen-%d", b.queueNo)
			b.mu.Unlock()
		}
		reply = &proto.QueueDeclareOk{Queue: name}
	case *proto.QueueDelete:
		reply = &proto.QueueDeleteOk{}
	case *proto.QueueBind:
		reply = &proto.QueueBindOk{}
	case *proto.QueueUnbind:
		reply = &proto.QueueUnbindOk{}
	case *proto.QueuePurge:
		reply = &proto.QueuePurgeOk{}
	case *proto.BasicGet:
		if strings.HasPrefix(m.Queue, "full") {
			b.mu.Lock()
			bc.tags[ch]++
			tag := bc.tags[ch]
			b.mu.Unlock()
			return false, c.SendContent(ch, &proto.BasicGetOk{DeliveryTag: tag, RoutingKey: m.Queue, MessageCount: 1}, &ops.Message{Body: []byte(m.Queue)})
		}
		reply = &proto.BasicGetEmpty{}
	case *proto.BasicConsume:
		tag := m.ConsumerTag
		if tag == "" {
			tag = fmt.Sprintf("amq.ctag-%d-%d", ch, len(bc.consumers))
		}
		b.mu.Lock()
		bc.consumers[tag] = ch
		b.mu.Unlock()
		reply = &proto.BasicConsumeOk{ConsumerTag: tag}
	case *proto.BasicCancel:
		b.mu.Lock()
		delete(bc.consumers, m.ConsumerTag)
		b.mu.Unlock()
		reply = &proto.BasicCancelOk{ConsumerTag: m.ConsumerTag}
	default:
		return false, nil // acks, nacks, rejects, recover: nothing to say
	}
	return false, c.Send(ch, reply)
}

func (b *Broker) forgetChannel(bc *brokerConn, ch uint16) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for tag, on := range bc.consumers {
		if on == ch {
			delete(bc.consumers, tag)
		}
	}
	delete(bc.confirm, ch)
	delete(bc.tags, ch)
}

// published returns a publish whose content has arrived if it is
// mandatory and unroutable, and acks it on a channel in confirm mode.
func (b *Broker) published(c *Conn, p *contentState) error {
	ch := p.channel
	if p.publish.Mandatory && p.publish.RoutingKey == "unroutable" {
		ret := &proto.BasicReturn{ReplyCode: uint16(proto.NoRoute), ReplyText: "NO_ROUTE", Exchange: p.publish.Exchange, RoutingKey: p.publish.RoutingKey}
		if err := c.SendContent(ch, ret, &p.msg); err != nil {
			return err
		}
	}
	b.mu.Lock()
	bc := b.live[c]
	seq, confirming := bc.confirm[ch]
	if confirming {
		seq++
		bc.confirm[ch] = seq
	}
	b.mu.Unlock()
	if !confirming {
		return nil
	}
	if p.publish.RoutingKey == "nack" {
		return c.Send(ch, &proto.BasicNack{DeliveryTag: seq})
	}
	return c.Send(ch, &proto.BasicAck{DeliveryTag: seq})
}

// Consumers returns the consumer tags started on c and not cancelled.
func (b *Broker) Consumers(c *Conn) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var tags []string
	if bc := b.live[c]; bc != nil {
		for tag := range bc.consumers {
			tags = append(tags, tag)
		}
	}
	return tags
}

// ChannelOf returns the channel consumer tag was started on, on c.
func (b *Broker) ChannelOf(c *Conn, tag string) (uint16, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if bc := b.live[c]; bc != nil {
		ch, ok := bc.consumers[tag]
		return ch, ok
	}
	return 0, false
}

// DeliverToAll sends one message with body to every consumer started on c,
// and returns how many it sent.
func (b *Broker) DeliverToAll(c *Conn, body string) (int, error) {
	type target struct {
		tag string
		ch  uint16
		dt  uint64
	}
	b.mu.Lock()
	bc := b.live[c]
	var targets []target
	if bc != nil {
		for tag, ch := range bc.consumers {
			bc.tags[ch]++
			targets = append(targets, target{tag, ch, bc.tags[ch]})
		}
	}
	b.mu.Unlock()
	if bc == nil {
		return 0, errors.New("fakeserver: the connection is not being served")
	}
	for _, t := range targets {
		err := c.SendContent(t.ch, &proto.BasicDeliver{ConsumerTag: t.tag, DeliveryTag: t.dt, RoutingKey: t.tag},
			&ops.Message{Body: []byte(body)})
		if err != nil {
			return 0, err
		}
	}
	return len(targets), nil
}

// contentState follows the header and body frames of one publish.
type contentState struct {
	channel uint16
	publish *proto.BasicPublish
	msg     ops.Message
	header  bool
	left    uint64
}

// take accounts for one content frame and reports whether the content is
// complete.
func (s *contentState) take(f proto.Frame) bool {
	switch {
	case f.Type == proto.FrameHeader && !s.header:
		_, size, err := proto.DecodeContentHeader(f.Payload, &s.msg)
		if err != nil {
			return false
		}
		s.header, s.left = true, size
	case f.Type == proto.FrameBody && s.header:
		s.msg.Body = append(s.msg.Body, f.Payload...)
		s.left -= min(s.left, uint64(len(f.Payload)))
	default:
		return false
	}
	return s.header && s.left == 0
}
