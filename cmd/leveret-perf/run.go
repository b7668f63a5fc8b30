package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

// headerSize is the part of each body leveret-perf reads back: the publish
// time (Unix nanoseconds), the producer's number and the sequence number.
const headerSize = 24

// runner is one run: its clients, counters and sequence tracking.
type runner struct {
	cfg   config
	st    *stats
	seqs  *seqTracker
	start time.Time
}

// run sets up the queues, runs consumers and producers, reports progress
// to out and returns the summary. ctx ending (an interrupt) stops the
// producers early; the summary still follows.
func run(ctx context.Context, cfg config, out io.Writer) (summary, error) {
	r := &runner{cfg: cfg, st: newStats(), seqs: newSeqTracker(cfg.producers)}
	admin, err := r.dial(ctx, "admin")
	if err != nil {
		return summary{}, err
	}
	defer admin.Close(context.Background())
	queues, err := r.setup(ctx, admin)
	if err != nil {
		return summary{}, err
	}
	if !cfg.keep {
		defer r.teardown(admin, queues)
	}

	var clients []*leveret.Client
	defer func() {
		for _, c := range clients {
			c.Close(context.Background())
		}
	}()
	var consumers []*leveret.Consumer
	for i := range cfg.consumers {
		c, err := r.dial(ctx, fmt.Sprintf("consumer-%d", i))
		if err != nil {
			return summary{}, err
		}
		clients = append(clients, c)
		cs, err := c.Consume(r.consumeOp(queues[i%len(queues)])).Wait(ctx)
		if err != nil {
			return summary{}, fmt.Errorf("starting consumer %d on %s: %w", i, queues[i%len(queues)], err)
		}
		consumers = append(consumers, cs)
	}
	producers := make([]*leveret.Client, cfg.producers)
	for i := range producers {
		if producers[i], err = r.dial(ctx, fmt.Sprintf("producer-%d", i)); err != nil {
			return summary{}, err
		}
		clients = append(clients, producers[i])
	}

	r.start = time.Now()
	pctx, stopProducers := context.WithCancel(ctx)
	if cfg.duration > 0 {
		pctx, stopProducers = context.WithTimeout(ctx, cfg.duration)
	}
	defer stopProducers()
	var consuming, producing sync.WaitGroup
	cctx, stopConsumers := context.WithCancel(context.Background())
	defer stopConsumers()
	for _, cs := range consumers {
		consuming.Go(func() { r.consume(cctx, cs) }) // owner: run; exits when stopConsumers is called or the consumer ends
	}
	for i, c := range producers {
		producing.Go(func() { r.produce(pctx, i, c, queues[i%len(queues)]) }) // owner: run; exits at -duration/-count, or ctx
	}
	rep := newReporter(r, out)
	reporting := make(chan struct{})
	var reported sync.WaitGroup
	reported.Go(func() { rep.loop(reporting) }) // owner: run; exits when reporting is closed

	producing.Wait()
	if cfg.consumers > 0 {
		r.waitDrained(ctx)
	}
	stopConsumers()
	consuming.Wait()
	close(reporting)
	reported.Wait()
	sum := r.summary()
	return sum, rep.final(sum)
}

// dial connects one client, bounded by -connect-timeout; it reconnects by
// itself afterwards, failing over between the URLs.
func (r *runner) dial(ctx context.Context, name string) (*leveret.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, r.cfg.connectTimeout)
	defer cancel()
	opts := []leveret.Option{
		leveret.WithConnectionName("leveret-perf " + name),
		leveret.WithEventHandler(r.st.event),
	}
	url := r.cfg.uris[0]
	if len(r.cfg.uris) > 1 {
		url, opts = "", append(opts, leveret.WithFailover(r.cfg.uris...))
	}
	c, err := leveret.Dial(dctx, url, opts...)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the broker (%s) within %v: %w", redacted(r.cfg.uris), r.cfg.connectTimeout, err)
	}
	return c, nil
}

// setup declares the queues (afresh, so earlier runs' messages do not
// count) and the exchange with its bindings.
func (r *runner) setup(ctx context.Context, c *leveret.Client) ([]string, error) {
	cfg := r.cfg
	queues := make([]string, cfg.queues)
	var ws []leveret.Waiter
	if cfg.exchange != "" {
		ws = append(ws, c.ExchangeDeclare(ops.ExchangeDeclare{Exchange: cfg.exchange, Durable: cfg.durable}))
	}
	for i := range queues {
		queues[i] = fmt.Sprintf("%s-%d", cfg.queuePrefix, i)
		ws = append(ws, c.QueueDelete(ops.QueueDelete{Queue: queues[i]}),
			c.QueueDeclare(ops.QueueDeclare{Queue: queues[i], Durable: cfg.durable, Args: ops.Table{"x-queue-type": cfg.queueType}}))
		if cfg.exchange != "" {
			ws = append(ws, c.QueueBind(ops.QueueBind{Queue: queues[i], Exchange: cfg.exchange, RoutingKey: r.routingKey(queues[i])}))
		}
	}
	if err := leveret.WaitAll(ctx, ws...); err != nil {
		return nil, fmt.Errorf("declaring queues: %w", err)
	}
	return queues, nil
}

func (r *runner) teardown(c *leveret.Client, queues []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var ws []leveret.Waiter
	for _, q := range queues {
		ws = append(ws, c.QueueDelete(ops.QueueDelete{Queue: q}))
	}
	if r.cfg.exchange != "" {
		ws = append(ws, c.ExchangeDelete(ops.ExchangeDelete{Exchange: r.cfg.exchange}))
	}
	leveret.WaitAll(ctx, ws...)
}

func (r *runner) routingKey(queue string) string {
	if r.cfg.routingKey != "" {
		return r.cfg.routingKey
	}
	return queue
}

func (r *runner) consumeOp(queue string) ops.Consume {
	o := ops.Consume{Queue: queue, NoAck: r.cfg.autoAck}
	if !r.cfg.autoAck {
		o.Prefetch = uint16(r.cfg.prefetch)
	}
	return o
}

// produce publishes until pctx ends or -count is reached, at -rate, then
// waits (up to -drain) for the outcomes still pending.
func (r *runner) produce(pctx context.Context, id int, c *leveret.Client, queue string) {
	cfg := r.cfg
	var ch *leveret.Channel
	if cfg.confirm == 0 {
		var err error
		if ch, err = c.Channel(pctx); err != nil {
			r.st.failed.Add(1)
			return
		}
	}
	body := make([]byte, cfg.size)
	o := ops.Publish{Exchange: cfg.exchange, RoutingKey: r.routingKey(queue), Mandatory: cfg.mandatory, Message: ops.Message{Body: body}}
	if cfg.persistent {
		o.Message.DeliveryMode = ops.Persistent
	}
	window := newWindow(cfg.confirm, r)
	for seq := uint64(1); cfg.count == 0 || seq <= uint64(cfg.count); seq++ {
		if !r.pace(pctx, seq) {
			break
		}
		binary.BigEndian.PutUint64(body[0:], uint64(time.Now().UnixNano()))
		binary.BigEndian.PutUint64(body[8:], uint64(id))
		binary.BigEndian.PutUint64(body[16:], seq)
		if ch != nil {
			if err := ch.Send(pctx, o); err != nil {
				if pctx.Err() == nil {
					r.st.failed.Add(1)
				}
				break
			}
			r.st.sent(len(body))
			r.seqs.expect(id, seq)
			continue
		}
		if !window.room(pctx) {
			break
		}
		p := c.Publish(pctx, o)
		if err := p.Err(); err != nil && !errors.Is(err, leveret.ErrPending) && pctx.Err() != nil {
			break // ctx ended before it went out: nothing was sent
		}
		r.st.sent(len(body))
		window.add(id, seq, p)
	}
	dctx, cancel := context.WithTimeout(context.Background(), cfg.drain)
	defer cancel()
	window.drain(dctx)
}

// pace waits until publish number seq is due at -rate; false if ctx ended.
func (r *runner) pace(ctx context.Context, seq uint64) bool {
	if ctx.Err() != nil {
		return false
	}
	if r.cfg.rate == 0 {
		return true
	}
	due := r.start.Add(time.Duration(float64(seq-1) / r.cfg.rate * float64(time.Second)))
	if d := time.Until(due); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// window keeps at most n Client.Publish outcomes pending, settling the
// oldest first.
type window struct {
	r       *runner
	n       int
	pending []pendingPub
}

type pendingPub struct {
	id  int
	seq uint64
	p   *leveret.Promise[struct{}]
}

func newWindow(n int, r *runner) *window { return &window{r: r, n: n} }

// room waits for the oldest outcome while the window is full.
func (w *window) room(ctx context.Context) bool {
	for len(w.pending) >= w.n {
		if !w.settleOldest(ctx) {
			return false
		}
	}
	return true
}

func (w *window) add(id int, seq uint64, p *leveret.Promise[struct{}]) {
	w.pending = append(w.pending, pendingPub{id, seq, p})
}

func (w *window) settleOldest(ctx context.Context) bool {
	pp := w.pending[0]
	_, err := pp.p.Wait(ctx)
	if err != nil && errors.Is(pp.p.Err(), leveret.ErrPending) {
		return false // ctx ended first
	}
	w.pending = w.pending[1:]
	w.r.outcome(pp.id, pp.seq, err)
	return true
}

// drain settles what is pending; what does not settle before ctx ends
// counts as failed.
func (w *window) drain(ctx context.Context) {
	for len(w.pending) > 0 {
		if !w.settleOldest(ctx) {
			w.r.st.failed.Add(int64(len(w.pending)))
			return
		}
	}
}

// outcome counts a Client.Publish's result.
func (r *runner) outcome(id int, seq uint64, err error) {
	var ret *leveret.ReturnedError
	switch {
	case err == nil:
		r.st.confirmed.Add(1)
		r.seqs.expect(id, seq)
	case errors.As(err, &ret):
		r.st.returned.Add(1)
	case errors.Is(err, leveret.ErrNacked):
		r.st.nacked.Add(1)
	default:
		r.st.failed.Add(1)
	}
}

// consume receives until ctx ends or the consumer does, acknowledging as
// -ack says.
func (r *runner) consume(ctx context.Context, cs *leveret.Consumer) {
	unacked := 0
	defer func() {
		// Whatever is received is acknowledged before the end, so Close does not requeue it.
		if r.cfg.ackEvery > 1 && unacked > 0 {
			if ch := cs.Channel(); ch != nil {
				ch.Ack(ops.Ack{Multiple: true})
			}
		}
	}()
	for {
		var d *leveret.Delivery
		var ok bool
		select {
		case d, ok = <-cs.Deliveries():
			if !ok {
				return
			}
		case <-ctx.Done():
			return
		}
		r.received(d)
		switch {
		case r.cfg.autoAck:
		case r.cfg.ackEvery == 1:
			d.Ack() // a stale delivery (received before a reconnect) is redelivered
		default:
			if unacked++; unacked >= r.cfg.ackEvery {
				d.Channel().Ack(ops.Ack{DeliveryTag: d.DeliveryTag, Multiple: true})
				unacked = 0
			}
		}
	}
}

// received records one delivery: latency, and the sequence number's
// first or repeated arrival.
func (r *runner) received(d *leveret.Delivery) {
	b := d.Body
	if len(b) < headerSize {
		r.st.foreign.Add(1)
		return
	}
	sent := int64(binary.BigEndian.Uint64(b[0:]))
	id := binary.BigEndian.Uint64(b[8:])
	seq := binary.BigEndian.Uint64(b[16:])
	if id >= uint64(r.cfg.producers) || seq == 0 {
		r.st.foreign.Add(1)
		return
	}
	r.st.received(len(b), time.Now().UnixNano()-sent)
	if r.seqs.receive(int(id), seq) {
		r.st.duplicates.Add(1)
	}
}

// waitDrained waits until every message expected has arrived, or until
// -drain passes without progress.
func (r *runner) waitDrained(ctx context.Context) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	last, lastChange := r.seqs.missing(), time.Now()
	for last > 0 && time.Since(lastChange) < r.cfg.drain {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		if m := r.seqs.missing(); m != last {
			last, lastChange = m, time.Now()
		}
	}
}

func (r *runner) summary() summary {
	s := r.st.snapshot(time.Since(r.start))
	sum := summary{line: s, Lost: r.seqs.missing(), Duplicates: r.st.duplicates.Load(), Reconnects: r.st.reconnects.Load(),
		Latency: r.st.totalLatency()}
	if r.cfg.consumers == 0 {
		sum.Lost = 0 // nothing consumed: nothing to compare
	}
	return sum
}
