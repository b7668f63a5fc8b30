package leveret

import (
	"context"
	"fmt"
	"maps"

	"github.com/leveret-mq/leveret/ops"
)

// Hook observes a Client's messaging, for tracing and metrics. A Hook is any
// value that implements one or more of PublishHook, PublishDoneHook,
// ConfirmHook, ReturnHook, DeliveryHook, SettleHook and ConnectionHook; the
// client calls each method it implements. Give hooks with WithHooks. A
// client without hooks makes no call and no allocation for them.
//
// A hook runs on the goroutine named in its interface's documentation, never
// on the connection's reader goroutine, and must return promptly: the
// client's callbacks, or the caller's publish or ack, wait for it. Hooks
// stay in place across reconnects; a message re-sent after a reconnect is
// reported once, by the outcome of its final send.
type Hook any

// PublishInfo describes one publish to hooks.
type PublishInfo struct {
	Exchange   string
	RoutingKey string
	Mandatory  bool
	// Message is what will be sent. OnPublish may add entries to
	// Message.Headers (making the table if it is nil), to carry a trace
	// context for example: the table is the client's own copy, the
	// caller's is never written. The body must not be changed, nor kept
	// after the hook returns: Client.Publish reuses its buffer once the
	// publish has been confirmed.
	Message *ops.Message
	// Channel is the explicit channel of Channel.Publish or Channel.Send;
	// nil for Client.Publish.
	Channel *Channel
	// Confirmed is true for Client.Publish, whose OnPublishDone reports the
	// broker's answer; false for a channel's publish, whose OnPublishDone
	// reports that the message was queued for the socket (a channel in
	// confirm mode reports its confirmations to ConfirmHook).
	Confirmed bool
}

// PublishHook is called for each Client.Publish, Channel.Publish and
// Channel.Send, on the publishing goroutine, before the message is sent.
// The context it returns (derive it from ctx) is the one the publish waits
// under and the one OnPublishDone is given.
type PublishHook interface {
	OnPublish(ctx context.Context, p *PublishInfo) context.Context
}

// PublishDoneHook is called once per publish that OnPublish saw. For
// Client.Publish it runs on the client's dispatcher goroutine when the
// promise settles: err is nil when the broker acked, ErrNacked, a
// *ReturnedError, the channel's error, or ErrNotConfirmed. For a channel's
// publish it runs on the publishing goroutine as soon as the message is
// queued for the socket (err nil) or refused (nothing was sent).
type PublishDoneHook interface {
	OnPublishDone(ctx context.Context, p *PublishInfo, err error)
}

// ConfirmHook is called for each publisher confirmation on an explicit
// channel in confirm mode (the confirm package's channels, ConfirmSelect),
// on the client's dispatcher goroutine in the broker's order. count is how
// many publishes it settles: 1, or more for a Multiple confirmation.
// Client.Publish's confirmations are reported by PublishDoneHook instead.
type ConfirmHook interface {
	OnConfirm(ch *Channel, cf Confirmation, count int)
}

// ReturnHook is called for each message the broker returns on an explicit
// channel, on the client's dispatcher goroutine, before the channel's
// OnReturn handler. Client.Publish's returns are reported by
// PublishDoneHook (a *ReturnedError) instead.
type ReturnHook interface {
	OnReturn(ch *Channel, r ops.Return)
}

// DeliveryInfo describes one delivery to a consumer.
type DeliveryInfo struct {
	Delivery *Delivery // the hook may read it, not keep or change it
	Queue    string    // the queue the consumer reads
	AutoAck  bool      // a NoAck consumer: no settlement follows
}

// DeliveryHook is called for each delivery to a consumer, before it is
// handed over, on a goroutine of the consumer's own (with a DeliveryHook,
// every delivery passes through the consumer's hand-over goroutine rather
// than going from the reader straight into the Deliveries channel). The
// context it returns is the delivery's Context and is given to OnSettle.
type DeliveryHook interface {
	OnDelivery(d DeliveryInfo) context.Context
}

// SettleKind says how deliveries were settled.
type SettleKind uint8

const (
	SettleAck    SettleKind = iota + 1 // basic.ack
	SettleNack                         // basic.nack
	SettleReject                       // basic.reject
)

func (k SettleKind) String() string {
	switch k {
	case SettleAck:
		return "ack"
	case SettleNack:
		return "nack"
	case SettleReject:
		return "reject"
	}
	return fmt.Sprintf("SettleKind(%d)", uint8(k))
}

// Settlement describes an ack, nack or reject to hooks.
type Settlement struct {
	// Delivery is the delivery settled through its Ack, Nack or Reject;
	// nil when settled by tag through Channel.Ack, Nack or Reject.
	Delivery    *Delivery
	Channel     *Channel
	DeliveryTag uint64 // as given: with Multiple, every delivery up to it (0: all)
	Multiple    bool
	Kind        SettleKind
	Requeue     bool
	// Count is how many deliveries it settled: 1, more with Multiple, 0
	// when it was refused (Err says why) and nothing was sent.
	Count int
	Err   error
}

// SettleHook is called for each ack, nack and reject, on the goroutine
// that issued it, once it is queued for the socket or refused. ctx is the
// delivery's Context when the Delivery's own method was used, else
// context.Background().
type SettleHook interface {
	OnSettle(ctx context.Context, s Settlement)
}

// ConnectionHook is called with each connection event (see
// WithEventHandler), on the client's dispatcher goroutine, in order.
type ConnectionHook interface {
	OnConnectionEvent(e Event)
}

// WithHooks adds hooks to the client (see Hook); they are called in the
// order given. Dial fails if a hook implements none of the interfaces.
func WithHooks(hooks ...Hook) Option {
	return optionFunc(func(c *config) { c.hooks = append(c.hooks, hooks...) })
}

// hookSet is a client's hooks, sorted by interface once at Dial. A client
// without hooks has none (nil), so each call site costs one nil check.
type hookSet struct {
	publish  []PublishHook
	done     []PublishDoneHook
	confirm  []ConfirmHook
	ret      []ReturnHook
	delivery []DeliveryHook
	settle   []SettleHook
	conn     []ConnectionHook
}

func newHookSet(hooks []Hook) (*hookSet, error) {
	if len(hooks) == 0 {
		return nil, nil
	}
	h := &hookSet{}
	for _, x := range hooks {
		n := 0
		if v, ok := x.(PublishHook); ok {
			h.publish, n = append(h.publish, v), n+1
		}
		if v, ok := x.(PublishDoneHook); ok {
			h.done, n = append(h.done, v), n+1
		}
		if v, ok := x.(ConfirmHook); ok {
			h.confirm, n = append(h.confirm, v), n+1
		}
		if v, ok := x.(ReturnHook); ok {
			h.ret, n = append(h.ret, v), n+1
		}
		if v, ok := x.(DeliveryHook); ok {
			h.delivery, n = append(h.delivery, v), n+1
		}
		if v, ok := x.(SettleHook); ok {
			h.settle, n = append(h.settle, v), n+1
		}
		if v, ok := x.(ConnectionHook); ok {
			h.conn, n = append(h.conn, v), n+1
		}
		if n == 0 {
			return nil, fmt.Errorf("leveret: hook of type %T implements none of the hook interfaces", x)
		}
	}
	return h, nil
}

// publishes reports whether publishes are observed at all.
func (h *hookSet) publishes() bool { return h != nil && (len(h.publish) > 0 || len(h.done) > 0) }

// startPublish gives msg a headers table of its own and runs OnPublish.
func (h *hookSet) startPublish(ctx context.Context, info *PublishInfo) context.Context {
	if info.Message.Headers != nil {
		info.Message.Headers = maps.Clone(info.Message.Headers)
	}
	return h.runPublish(ctx, info)
}

// runPublish runs OnPublish on a message whose headers table is the client's.
func (h *hookSet) runPublish(ctx context.Context, info *PublishInfo) context.Context {
	for _, x := range h.publish {
		ctx = x.OnPublish(ctx, info)
	}
	return ctx
}

func (h *hookSet) donePublish(ctx context.Context, info *PublishInfo, err error) {
	for _, x := range h.done {
		x.OnPublishDone(ctx, info, err)
	}
}

// delivered runs OnDelivery; ctx is the delivery's Context.
func (h *hookSet) delivered(d *Delivery, cs *Consumer) {
	ctx := context.Background()
	info := DeliveryInfo{Delivery: d, Queue: cs.queue(), AutoAck: cs.noAck}
	for _, x := range h.delivery {
		if c := x.OnDelivery(info); c != nil {
			ctx = c
		}
	}
	d.hctx = ctx
}

// settled reports an acknowledgement that acknowledge queued or refused.
func (h *hookSet) settled(d *Delivery, s Settlement) {
	ctx := context.Background()
	if d != nil && d.hctx != nil {
		ctx = d.hctx
	}
	s.Delivery = d
	for _, x := range h.settle {
		x.OnSettle(ctx, s)
	}
}

// Context is the context a DeliveryHook made for this delivery (a trace
// span's, say), to process the message under; context.Background() when
// there is none.
func (d *Delivery) Context() context.Context {
	if d.hctx == nil {
		return context.Background()
	}
	return d.hctx
}

// confirmCounter counts how many publishes each confirmation settles, for
// ConfirmHook. The broker may confirm out of order (a single ack of 10
// before a multiple ack of 8), so it keeps the tags confirmed one by one
// above the floor below which all are settled. Reader goroutine only.
type confirmCounter struct {
	floor uint64              // every tag ≤ floor is settled (or was lost with an earlier link)
	above map[uint64]struct{} // tags > floor confirmed singly
}

// settle records cf and returns how many unsettled publishes it settles.
// base is the current link's first tag minus one: publishes of earlier
// links are never confirmed.
func (c *confirmCounter) settle(cf Confirmation, base uint64) int {
	if base > c.floor {
		c.floor = base
		for t := range c.above {
			if t <= base {
				delete(c.above, t)
			}
		}
	}
	tag := cf.DeliveryTag
	if tag <= c.floor {
		return 0
	}
	if !cf.Multiple {
		if _, seen := c.above[tag]; seen {
			return 0
		}
		if c.above == nil {
			c.above = map[uint64]struct{}{}
		}
		c.above[tag] = struct{}{}
		for { // absorb a run that now joins the floor
			if _, ok := c.above[c.floor+1]; !ok {
				break
			}
			delete(c.above, c.floor+1)
			c.floor++
		}
		return 1
	}
	n := int(tag - c.floor)
	for t := range c.above {
		if t <= tag {
			delete(c.above, t)
			n--
		}
	}
	c.floor = tag
	return n
}
