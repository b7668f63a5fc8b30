package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/leveret-mq/leveret/ops"
)

// gLatency is the fixed-rate latency group: a publisher at a set rate on
// one connection, a NoAck consumer on another, and the publish-to-consume
// latency of every message (a timestamp in its body) in an HDR histogram.
const gLatency = "latency"

// latencyRun is one client at one rate.
type latencyRun struct {
	client    string
	rate      int     // asked for, msg/s
	achieved  float64 // received msg/s
	lat       *hdrhistogram.Histogram
	confirmed bool                    // published with confirms (leveret: Client.Publish)
	confirm   *hdrhistogram.Histogram // publish to confirmation, when confirmed
}

// confirmRate is the rate of the confirmed rows.
const confirmRate = 10000

// pendingConfirm is one confirmed publish the collector waits for.
type pendingConfirm struct {
	sent  time.Time
	done  <-chan struct{}
	acked func() bool
}

func newLatencyHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
}

// rateLatencyAll runs both clients, interleaved, at 1k and 10k msg/s and at
// 80% of what an unthrottled leveret pair reaches here, and returns the
// report section.
func rateLatencyAll(ctx context.Context, e *env) (string, error) {
	if !e.cfg.wants(gLatency, cLeveret) && !e.cfg.wants(gLatency, cAMQP) {
		return "", nil
	}
	top, err := runLatency(ctx, e, cLeveret, 0, 3*time.Second, false)
	if err != nil {
		return "", err
	}
	rates := []int{1000, 10000, int(0.8*top.achieved) / 1000 * 1000}
	if len(e.cfg.latencyRates) > 0 {
		rates = e.cfg.latencyRates
	}
	var runs []latencyRun
	for _, rate := range rates {
		for _, client := range []string{cLeveret, cAMQP} {
			if !e.cfg.wants(gLatency, client) {
				continue
			}
			r, err := runLatency(ctx, e, client, rate, e.cfg.latencyFor, false)
			if err != nil {
				return "", fmt.Errorf("latency %s at %d msg/s: %w", client, rate, err)
			}
			runs = append(runs, r)
		}
	}
	for _, client := range []string{cLeveret, cAMQP} {
		if !e.cfg.wants(gLatency, client) {
			continue
		}
		r, err := runLatency(ctx, e, client, confirmRate, e.cfg.latencyFor, true)
		if err != nil {
			return "", fmt.Errorf("latency %s at %d msg/s, confirmed: %w", client, confirmRate, err)
		}
		runs = append(runs, r)
	}
	return latencySection(top.achieved, e.cfg.latencyFor, runs), nil
}

// runLatency publishes at rate (0: as fast as it goes) for d and measures;
// with confirmed, it also measures each publish's time to its confirmation
// on a collector goroutine that waits for them in publish order.
func runLatency(ctx context.Context, e *env, client string, rate int, d time.Duration, confirmed bool) (latencyRun, error) {
	res := latencyRun{client: client, rate: rate, lat: newLatencyHistogram(), confirmed: confirmed}
	q, err := e.declareQueue(ctx, fmt.Sprintf("latency-%s-%d", client, rate))
	if err != nil {
		return res, err
	}
	defer e.deleteQueues(context.Background(), q)
	var mu sync.Mutex
	var received int
	got := func(body []byte) {
		us := max(time.Now().UnixNano()-int64(binary.BigEndian.Uint64(body)), 1000) / 1000
		mu.Lock()
		res.lat.RecordValue(us)
		received++
		mu.Unlock()
	}
	// publish returns, when confirmed, what the collector waits for.
	var publish func(ctx context.Context, body []byte) (pendingConfirm, error)
	var consuming sync.WaitGroup
	switch client {
	case cLeveret:
		cc, closeC, err := dialLeveret(ctx, e.url)
		if err != nil {
			return res, err
		}
		defer closeC()
		cs, err := cc.Consume(ops.Consume{Queue: q, NoAck: true}).Wait(ctx)
		if err != nil {
			return res, err
		}
		consuming.Go(func() { // owner: this run; exits when Cancel closes Deliveries
			for dl := range cs.Deliveries() {
				got(dl.Body)
			}
		})
		defer func() { cs.Cancel().Wait(ctx); consuming.Wait() }()
		pc, closeP, err := dialLeveret(ctx, e.url)
		if err != nil {
			return res, err
		}
		defer closeP()
		ch, err := pc.Channel(ctx)
		if err != nil {
			return res, err
		}
		publish = func(ctx context.Context, body []byte) (pendingConfirm, error) {
			o := ops.Publish{RoutingKey: q, Message: ops.Message{Body: body}}
			if confirmed {
				p := pc.Publish(ctx, o)
				return pendingConfirm{done: p.Done(), acked: func() bool { return p.Err() == nil }}, nil
			}
			return pendingConfirm{}, ch.Send(ctx, o)
		}
	case cAMQP:
		cconn, closeC, err := dialAMQP(e.url)
		if err != nil {
			return res, err
		}
		defer closeC()
		cch, err := cconn.Channel()
		if err != nil {
			return res, err
		}
		dl, err := cch.Consume(q, "latency", true, false, false, false, nil)
		if err != nil {
			return res, err
		}
		consuming.Go(func() { // owner: this run; exits when Cancel closes the delivery channel
			for m := range dl {
				got(m.Body)
			}
		})
		defer func() { cch.Cancel("latency", false); consuming.Wait() }()
		pconn, closeP, err := dialAMQP(e.url)
		if err != nil {
			return res, err
		}
		defer closeP()
		pch, err := pconn.Channel()
		if err != nil {
			return res, err
		}
		if confirmed {
			if err := pch.Confirm(false); err != nil {
				return res, err
			}
		}
		publish = func(ctx context.Context, body []byte) (pendingConfirm, error) {
			if confirmed {
				dc, err := pch.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false, amqp.Publishing{Body: body})
				if err != nil {
					return pendingConfirm{}, err
				}
				return pendingConfirm{done: dc.Done(), acked: dc.Acked}, nil
			}
			return pendingConfirm{}, pch.PublishWithContext(ctx, "", q, false, false, amqp.Publishing{Body: body})
		}
	}

	pending, finish := collectConfirms(&res)
	defer finish() // on an early return too: the collector ends before the connections close

	body := make([]byte, bodySize)
	start := time.Now()
	sent := 0
	for time.Since(start) < d {
		// Send what is due, then sleep a millisecond: a timer per message
		// would cost more than the messages at 10k msg/s.
		due := int(time.Since(start).Seconds() * float64(rate))
		if rate == 0 {
			due = sent + 100
		}
		for ; sent < due; sent++ {
			now := time.Now()
			binary.BigEndian.PutUint64(body, uint64(now.UnixNano()))
			pc, err := publish(ctx, body)
			if err != nil {
				return res, err
			}
			if confirmed {
				pc.sent = now
				pending <- pc
			}
		}
		if rate > 0 {
			time.Sleep(time.Millisecond)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := received
		mu.Unlock()
		if n >= sent {
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("received %d of %d", n, sent)
		}
		time.Sleep(10 * time.Millisecond)
	}
	res.achieved = float64(sent) / time.Since(start).Seconds()
	if n := finish(); n > 0 {
		return res, fmt.Errorf("%d of %d publishes not acked", n, sent)
	}
	return res, nil
}

// collectConfirms starts, for a confirmed run, the goroutine that records
// each publish's time to its confirmation, in publish order, and returns
// the channel to hand it publishes on. finish ends it (closing pending,
// waiting for what is queued) and says how many publishes were not acked;
// it may be called more than once. For an unconfirmed run nothing starts.
func collectConfirms(res *latencyRun) (pending chan<- pendingConfirm, finish func() int) {
	if !res.confirmed {
		return nil, func() int { return 0 }
	}
	res.confirm = newLatencyHistogram()
	queue := make(chan pendingConfirm, 1<<16)
	done := make(chan int, 1)
	go func() { // owner: runLatency, whose finish closes queue; exits when it is drained
		failed := 0
		for pc := range queue {
			<-pc.done // both clients settle every outstanding confirmation when their channel ends
			res.confirm.RecordValue(max(time.Since(pc.sent).Microseconds(), 1))
			if !pc.acked() {
				failed++
			}
		}
		done <- failed
	}()
	var once sync.Once
	var failed int
	return queue, func() int {
		once.Do(func() { close(queue); failed = <-done })
		return failed
	}
}

func latencySection(top float64, d time.Duration, runs []latencyRun) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n## Publish-to-consume latency at fixed rates\n\n")
	fmt.Fprintf(&b, "One publisher (%d-byte bodies) and one NoAck consumer, each on its own connection, %v per row; "+
		"latency from a timestamp in each body, HDR histogram. The top rate is 80%% of an unthrottled leveret pair here (%.0f msg/s). "+
		"Confirmed rows publish with leveret's Client.Publish and amqp091-go's deferred confirms, and also give each "+
		"publish's time to its confirmation.\n\n", bodySize, d, top)
	fmt.Fprintf(&b, "| rate | publish | client | received msg/s | p50 ms | p99 ms | p99.9 ms | max ms | confirm p50 / p99 / max ms |\n|---|---|---|---|---|---|---|---|---|\n")
	ms := func(us int64) string { return fmt.Sprintf("%.2f", float64(us)/1000) }
	for _, r := range runs {
		mode, conf := "unconfirmed", "—"
		if r.confirmed {
			mode = "confirmed"
			conf = ms(r.confirm.ValueAtQuantile(50)) + " / " + ms(r.confirm.ValueAtQuantile(99)) + " / " + ms(r.confirm.Max())
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %.0f | %s | %s | %s | %s | %s |\n", r.rate, mode, r.client, r.achieved,
			ms(r.lat.ValueAtQuantile(50)), ms(r.lat.ValueAtQuantile(99)), ms(r.lat.ValueAtQuantile(99.9)), ms(r.lat.Max()), conf)
	}
	return b.String()
}
