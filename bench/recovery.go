package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
	amqp "github.com/rabbitmq/amqp091-go"
)

// The recovery scenario: a confirmed publishing loop (one message in
// flight, so "confirmed" is unambiguous) while the broker force-closes the
// client's connection (rabbitmqctl close_connection) again and again. Per
// close it measures the time from close_connection returning to the first
// publish confirmed after it, and at the end the messages lost (confirmed
// to the loop but not in the queue) and duplicated. Each client runs with
// its library's default recovery: leveret's (on by default) and
// amqp091-go v1.17.0's Config.Recovery with its defaults (fixed 5 s retry
// interval, 5 attempts). The loop code each needs is counted in
// recoveryUserLines.

const gRecovery = "recovery"

// recoveryUserLines is the number of lines of the publishing loop each
// client needs to survive the faults: the code lines (comments excluded)
// between the "user code" markers below.
var recoveryUserLines = map[string]int{cLeveret: 3, cAMQP: 18}

type recoveryRun struct {
	client    string
	resumes   []time.Duration // per close: close_connection returned → next confirmed publish
	gaveUp    int             // closes after which no publish was confirmed within recoveryWait
	confirmed int
	lost      int
	dups      int
}

const recoveryWait = 60 * time.Second

// publishLoop runs publish(id) for id = 0, 1, ... until stop, recording
// when each id was confirmed; publish retries as its client needs to and
// returns nil once id is confirmed.
type publishLoop struct {
	lastConfirmed atomic.Int64 // unix nanos of the latest confirmation
	confirmed     atomic.Int64 // ids confirmed so far (0..n-1)
}

func (l *publishLoop) run(ctx context.Context, publish func(ctx context.Context, id int) error) error {
	for id := 0; ctx.Err() == nil; id++ {
		if err := publish(ctx, id); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("publish %d: %w", id, err)
		}
		l.confirmed.Store(int64(id + 1))
		l.lastConfirmed.Store(time.Now().UnixNano())
	}
	return nil
}

func recoveryMsg(id int) []byte { return []byte(strconv.Itoa(id)) }

// recoveryTarget is the broker a recovery run uses and the fault it
// injects there.
type recoveryTarget struct {
	url    string
	admin  *leveret.Client             // declares, counts and deletes the queue
	faults int                         // how many times to inject
	inject func(connName string) error // returns once the fault is over
}

// runRecovery measures one client over t.faults faults.
func runRecovery(ctx context.Context, e *env, client string, t recoveryTarget) (recoveryRun, error) {
	res := recoveryRun{client: client}
	name := "bench-recovery-" + client
	q := e.name("recovery-" + client)
	if _, err := t.admin.QueueDeclare(ops.QueueDeclare{Queue: q, Durable: true}).Wait(ctx); err != nil {
		return res, err
	}
	defer func() { t.admin.QueueDelete(ops.QueueDelete{Queue: q}).Wait(ctx) }()

	var publish func(ctx context.Context, id int) error
	var closeClient func()
	switch client {
	case cLeveret:
		c, err := leveret.Dial(ctx, t.url, leveret.WithConnectionName(name))
		if err != nil {
			return res, err
		}
		closeClient = func() { c.Close(context.Background()) }
		publish = func(ctx context.Context, id int) error {
			// user code
			_, err := c.Publish(ctx, ops.Publish{RoutingKey: q,
				Message: ops.Message{Body: recoveryMsg(id), DeliveryMode: ops.Persistent}}).Wait(ctx)
			return err
			// end of user code
		}
	case cAMQP:
		conn, err := amqp.DialConfig(t.url, amqp.Config{Recovery: &amqp.Recovery{},
			Properties: amqp.Table{"connection_name": name}})
		if err != nil {
			return res, err
		}
		closeClient = func() { conn.Close() }
		ch, err := conn.Channel()
		if err != nil {
			return res, err
		}
		if err := ch.Confirm(false); err != nil {
			return res, err
		}
		publish = amqpPublishUntilAcked(conn, ch, q)
	}
	defer closeClient()

	var loop publishLoop
	lctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var loopErr error
	wg.Go(func() { loopErr = loop.run(lctx, publish) })
	for range t.faults {
		time.Sleep(300 * time.Millisecond)
		if err := t.inject(name); err != nil {
			stop()
			wg.Wait()
			return res, err
		}
		t0 := time.Now()
		deadline := t0.Add(recoveryWait)
		for loop.lastConfirmed.Load() < t0.UnixNano() && time.Now().Before(deadline) && loopErr == nil {
			time.Sleep(time.Millisecond)
		}
		if last := loop.lastConfirmed.Load(); last >= t0.UnixNano() {
			res.resumes = append(res.resumes, time.Unix(0, last).Sub(t0))
		} else {
			res.gaveUp++
			break // it did not come back: the rest would measure nothing
		}
	}
	stop()
	wg.Wait()
	if loopErr != nil && res.gaveUp == 0 {
		return res, loopErr
	}
	res.confirmed = int(loop.confirmed.Load())
	var err error
	res.lost, res.dups, err = countIDs(ctx, t.admin, q, res.confirmed)
	return res, err
}

// closeConnection force-closes the connection with the given
// connection_name, retrying while it is not (yet) listed.
func closeConnection(name string) error {
	deadline := time.Now().Add(recoveryWait)
	for {
		out, err := exec.Command("rabbitmqctl", "-q", "list_connections", "--no-table-headers", "pid", "client_properties").Output()
		if err != nil {
			return fmt.Errorf("rabbitmqctl list_connections: %w", err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			pid, props, ok := strings.Cut(line, "\t")
			if ok && strings.Contains(props, `"`+name+`"`) {
				if out, err := exec.Command("rabbitmqctl", "-q", "close_connection", pid, "bench recovery").CombinedOutput(); err != nil {
					return fmt.Errorf("rabbitmqctl close_connection: %v: %s", err, out)
				}
				return nil
			}
		}
		if time.Now().After(deadline) {
			return errors.New("connection " + name + " not found")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// countIDs drains q and reports how many of ids 0..confirmed-1 are
// missing and how many messages arrived more than once.
func countIDs(ctx context.Context, admin *leveret.Client, q string, confirmed int) (lost, dups int, err error) {
	seen, err := drainIDs(ctx, admin, q)
	if err != nil {
		return 0, 0, err
	}
	for id := range confirmed {
		if seen[id] == 0 {
			lost++
		}
	}
	for _, n := range seen {
		dups += n - 1
	}
	return lost, dups, nil
}

// drainIDs takes every message out of q and counts them by id.
func drainIDs(ctx context.Context, admin *leveret.Client, q string) (map[int]int, error) {
	seen := make(map[int]int)
	for {
		r, err := admin.Get(ops.Get{Queue: q, NoAck: true}).Wait(ctx)
		if err != nil {
			return nil, err
		}
		if r.Empty() {
			return seen, nil
		}
		id, _ := strconv.Atoi(string(r.Delivery.Body))
		seen[id]++
	}
}

// recoverySection is the report's table for one recovery fault.
func recoverySection(title string, runs []recoveryRun) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n### Recovery: %s\n\n", title)
	b.WriteString("Time from the fault's end (close_connection returning, or start_app) to the next confirmed publish; lost = confirmed to the loop but not in the queue. Each client with its own default recovery; loop lines = the publishing loop's code (recoveryUserLines).\n\n")
	b.WriteString("| client | resumed after (median) | max | faults survived | confirmed | lost | duplicates | loop lines |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range runs {
		med, mx := "—", "—"
		if len(r.resumes) > 0 {
			s := slices.Clone(r.resumes)
			slices.Sort(s)
			med, mx = s[len(s)/2].Round(time.Millisecond).String(), s[len(s)-1].Round(time.Millisecond).String()
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %d of %d | %d | %d | %d | %d |\n", r.client, med, mx, len(r.resumes),
			len(r.resumes)+r.gaveUp, r.confirmed, r.lost, r.dups, recoveryUserLines[r.client])
	}
	return b.String()
}

// node2URL is the extra node scripts/broker.sh starts (make test does);
// the outage stops and starts it, never the default broker.
const (
	node2URL  = "amqp://guest:guest@127.0.0.1:5673/%2f"
	node2Node = "leveret2"
	outage    = 35 * time.Second
)

// recoveryAll runs the recovery scenarios for the selected clients: 20
// forced closes (3 with -quick) on the default broker, and (not with
// -quick) one 35 s outage of the extra node, longer than amqp091-go's
// default 5 × 5 s of retries.
func recoveryAll(ctx context.Context, e *env) (string, error) {
	closes := 20
	if e.cfg.quick {
		closes = 3
	}
	forced := recoveryTarget{url: e.url, admin: e.admin, faults: closes, inject: closeConnection}
	text, err := recoveryScenario(ctx, e, fmt.Sprintf("%d forced closes (rabbitmqctl close_connection) during a confirmed publish loop", closes), forced)
	if err != nil || text == "" || e.cfg.quick {
		return text, err
	}
	if err := exec.Command("../scripts/broker.sh", "node", node2Node, "5673").Run(); err != nil {
		return "", fmt.Errorf("start the extra node: %w", err)
	}
	admin2, err := leveret.Dial(ctx, node2URL)
	if err != nil {
		return "", err
	}
	defer admin2.Close(context.Background())
	host := "localhost"
	if out, err := exec.Command("hostname", "-s").Output(); err == nil {
		host = strings.TrimSpace(string(out))
	}
	node := node2Node + "@" + host
	long := recoveryTarget{url: node2URL, admin: admin2, faults: 1, inject: func(string) error {
		if out, err := exec.Command("rabbitmqctl", "-n", node, "stop_app").CombinedOutput(); err != nil {
			return fmt.Errorf("stop_app: %v: %s", err, out)
		}
		time.Sleep(outage)
		if out, err := exec.Command("rabbitmqctl", "-n", node, "start_app").CombinedOutput(); err != nil {
			return fmt.Errorf("start_app: %v: %s", err, out)
		}
		return nil
	}}
	more, err := recoveryScenario(ctx, e, fmt.Sprintf("a %v broker outage (stop_app, then start_app)", outage), long)
	return text + more, err
}

func recoveryScenario(ctx context.Context, e *env, title string, t recoveryTarget) (string, error) {
	var runs []recoveryRun
	for _, client := range []string{cLeveret, cAMQP} {
		if !e.cfg.wants(gRecovery, client) {
			continue
		}
		r, err := runRecovery(ctx, e, client, t)
		if err != nil {
			return "", fmt.Errorf("recovery, %s: %w", client, err)
		}
		runs = append(runs, r)
	}
	if len(runs) == 0 {
		return "", nil
	}
	return recoverySection(title, runs), nil
}

// amqpPublishUntilAcked is the publishing loop amqp091-go's user needs to
// survive its recovery: publish id with a deferred confirm, and publish it
// again until it is acked.
func amqpPublishUntilAcked(conn *amqp.Connection, ch *amqp.Channel, q string) func(ctx context.Context, id int) error {
	return func(ctx context.Context, id int) error {
		// user code: republish until acked, wait out a recovering channel
		for ctx.Err() == nil {
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false,
				amqp.Publishing{Body: recoveryMsg(id), DeliveryMode: amqp.Persistent})
			if err != nil {
				if conn.IsClosed() && !conn.IsRecoveryEnabled() {
					return err
				}
				time.Sleep(50 * time.Millisecond) // the channel is recovering
				continue
			}
			// Bounded: after a reconnect a confirmation may never come.
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			ok, err := dc.WaitContext(wctx)
			cancel()
			if err == nil && ok {
				return nil
			}
			// nacked at the reconnect, or never confirmed: publish it again
		}
		return ctx.Err()
		// end of user code
	}
}
