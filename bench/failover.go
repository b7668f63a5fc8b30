package main

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
	amqp "github.com/rabbitmq/amqp091-go"
)

// The failover scenario runs on the 3-node cluster of scripts/cluster.sh:
// a confirmed publishing loop (one message in flight) and an acking
// consumer on a quorum queue whose leader is on lc1, the node the client is
// connected to; then lc1 stops (stop_app) and stays down for
// failoverHold. It measures the time from stop_app returning to the next
// confirmed publish and to the next delivery, and, at the end (lc1 back),
// the messages lost (confirmed but never consumed nor left in the queue)
// and the duplicate deliveries. leveret is given the three URLs;
// amqp091-go v1.17.0 takes one URL (lc1's) and recovers with its defaults:
// it cannot fail over, only retry that node.

const (
	gFailover    = "failover"
	failoverHold = 30 * time.Second // longer than amqp091-go's default 5 × 5 s of retries
)

var clusterPorts = []int{5681, 5682, 5683}

func clusterURL(i int) string {
	return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", clusterPorts[i])
}

type failoverRun struct {
	client              string
	confirmResume       time.Duration // 0: did not resume while lc1 was down
	deliverResume       time.Duration
	confirmed, consumed int
	lost, dups          int
}

// consumeLoop counts deliveries per id and remembers the latest one.
type consumeLoop struct {
	mu            sync.Mutex
	seen          map[int]int
	lastDelivered atomic.Int64 // unix nanos
}

func (l *consumeLoop) got(body []byte) {
	id, err := strconv.Atoi(string(body))
	if err != nil {
		return
	}
	l.mu.Lock()
	l.seen[id]++
	l.mu.Unlock()
	l.lastDelivered.Store(time.Now().UnixNano())
}

func runFailover(ctx context.Context, e *env, client string) (failoverRun, error) {
	res := failoverRun{client: client}
	q := e.name("failover-" + client)
	// Declared through lc1: a quorum queue's leader starts on the
	// declaring connection's node, so lc1's loss also moves the leader.
	decl, err := leveret.Dial(ctx, clusterURL(0), leveret.WithReconnect(nil))
	if err != nil {
		return res, err
	}
	_, err = decl.QueueDeclare(ops.QueueDeclare{Queue: q, Durable: true, Args: ops.Table{"x-queue-type": "quorum"}}).Wait(ctx)
	decl.Close(ctx)
	if err != nil {
		return res, err
	}
	admin, err := leveret.Dial(ctx, "", leveret.WithFailover(clusterURL(1), clusterURL(2)))
	if err != nil {
		return res, err
	}
	defer admin.Close(context.Background())
	defer func() { admin.QueueDelete(ops.QueueDelete{Queue: q}).Wait(ctx) }()

	cons := &consumeLoop{seen: make(map[int]int)}
	var publish func(ctx context.Context, id int) error
	var wg sync.WaitGroup
	var closeClient func()
	switch client {
	case cLeveret:
		c, err := leveret.Dial(ctx, "", leveret.WithFailover(clusterURL(0), clusterURL(1), clusterURL(2)))
		if err != nil {
			return res, err
		}
		cs, err := c.Consume(ops.Consume{Queue: q, Prefetch: 100}).Wait(ctx)
		if err != nil {
			return res, err
		}
		wg.Go(func() { // owner: this run; exits when the client closes (Deliveries closes)
			for d := range cs.Deliveries() {
				cons.got(d.Body)
				d.Ack() // refused (stale) for a delivery from before the failover: it comes again
			}
		})
		closeClient = func() { c.Close(context.Background()) }
		publish = func(ctx context.Context, id int) error {
			_, err := c.Publish(ctx, ops.Publish{RoutingKey: q,
				Message: ops.Message{Body: recoveryMsg(id), DeliveryMode: ops.Persistent}}).Wait(ctx)
			return err
		}
	case cAMQP:
		conn, err := amqp.DialConfig(clusterURL(0), amqp.Config{Recovery: &amqp.Recovery{}})
		if err != nil {
			return res, err
		}
		ch, err := conn.Channel()
		if err != nil {
			return res, err
		}
		if err := ch.Confirm(false); err != nil {
			return res, err
		}
		cch, err := conn.Channel()
		if err != nil {
			return res, err
		}
		if err := cch.Qos(100, 0, false); err != nil {
			return res, err
		}
		deliveries, err := cch.Consume(q, "", false, false, false, false, nil)
		if err != nil {
			return res, err
		}
		wg.Go(func() { // owner: this run; exits when the connection closes (deliveries closes)
			for d := range deliveries {
				cons.got(d.Body)
				d.Ack(false)
			}
		})
		closeClient = func() { conn.Close() }
		publish = amqpPublishUntilAcked(conn, ch, q)
	}

	var loop publishLoop
	lctx, stop := context.WithCancel(ctx)
	var pwg sync.WaitGroup
	pwg.Go(func() { loop.run(lctx, publish) }) // owner: this run; exits when stop is called
	time.Sleep(2 * time.Second)
	if err := clusterCtl(0, "stop_app"); err != nil {
		stop()
		pwg.Wait()
		closeClient()
		wg.Wait()
		return res, err
	}
	t0 := time.Now()
	for time.Since(t0) < failoverHold {
		c, d := loop.lastConfirmed.Load(), cons.lastDelivered.Load()
		if res.confirmResume == 0 && c > t0.UnixNano() {
			res.confirmResume = time.Unix(0, c).Sub(t0)
		}
		if res.deliverResume == 0 && d > t0.UnixNano() {
			res.deliverResume = time.Unix(0, d).Sub(t0)
		}
		time.Sleep(time.Millisecond)
	}
	startErr := clusterUp()
	time.Sleep(3 * time.Second) // a client that gave up stays down; one that waited resumes
	stop()
	pwg.Wait()
	time.Sleep(2 * time.Second) // the consumer drains what was confirmed last
	closeClient()
	wg.Wait()
	if startErr != nil {
		return res, startErr
	}
	res.confirmed = int(loop.confirmed.Load())
	// What is still in the queue was not lost: drain it into the count.
	rest, err := drainIDs(ctx, admin, q)
	if err != nil {
		return res, err
	}
	cons.mu.Lock()
	defer cons.mu.Unlock()
	for id, n := range rest {
		cons.seen[id] += n
	}
	for id := range res.confirmed {
		if cons.seen[id] == 0 {
			res.lost++
		}
	}
	for _, n := range cons.seen {
		res.consumed++
		res.dups += n - 1
	}
	return res, nil
}

// clusterCtl runs rabbitmqctl ARGS against cluster node lc<i+1>.
func clusterCtl(i int, args ...string) error {
	host := "localhost"
	if out, err := exec.Command("hostname", "-s").Output(); err == nil {
		host = strings.TrimSpace(string(out))
	}
	node := fmt.Sprintf("lc%d@%s", i+1, host)
	if out, err := exec.Command("rabbitmqctl", append([]string{"-n", node}, args...)...).CombinedOutput(); err != nil {
		return fmt.Errorf("rabbitmqctl -n %s %v: %v: %s", node, args, err, out)
	}
	return nil
}

// clusterUp starts the cluster, or the app of a stopped node, and waits
// until all three nodes run (scripts/cluster.sh up).
func clusterUp() error {
	if out, err := exec.Command("../scripts/cluster.sh", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("scripts/cluster.sh up: %v: %s", err, out)
	}
	return nil
}

// failoverAll runs the failover scenario for the selected clients (not
// with -quick: each run holds a node down for failoverHold).
func failoverAll(ctx context.Context, e *env) (string, error) {
	if e.cfg.quick || !(e.cfg.wants(gFailover, cLeveret) || e.cfg.wants(gFailover, cAMQP)) {
		return "", nil
	}
	if err := clusterUp(); err != nil {
		return "", err
	}
	var runs []failoverRun
	for _, client := range []string{cLeveret, cAMQP} {
		if !e.cfg.wants(gFailover, client) {
			continue
		}
		r, err := runFailover(ctx, e, client)
		if err != nil {
			return "", fmt.Errorf("failover, %s: %w", client, err)
		}
		runs = append(runs, r)
	}
	return failoverSection(runs), nil
}

func failoverSection(runs []failoverRun) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n### Failover: the connected node of a 3-node cluster stops for %v\n\n", failoverHold)
	b.WriteString("A quorum queue led by lc1; a confirmed publishing loop (one in flight) and an acking consumer (prefetch 100) on a client connected to lc1; then `stop_app` on lc1. Resumed = from stop_app returning to the next confirmed publish / delivery while lc1 is down. Lost = confirmed, never consumed and not left in the queue. leveret has the three URLs; amqp091-go v1.17.0 takes one URL, so it can only retry lc1 (default recovery: 5 attempts 5 s apart).\n\n")
	b.WriteString("| client | publishing resumed | consuming resumed | confirmed | lost | duplicate deliveries |\n|---|---|---|---|---|---|\n")
	show := func(d time.Duration) string {
		if d == 0 {
			return fmt.Sprintf("not within %v", failoverHold)
		}
		return d.Round(time.Millisecond).String()
	}
	for _, r := range runs {
		fmt.Fprintf(&b, "| %s | %s | %s | %d | %d | %d |\n", r.client, show(r.confirmResume), show(r.deliverResume), r.confirmed, r.lost, r.dups)
	}
	return b.String()
}
