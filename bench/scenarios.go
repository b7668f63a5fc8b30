package main

import (
	"context"
	"fmt"
	"log"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

// bodySize is the body of every message the 100-byte scenarios publish
// (all but the large-bodies group).
const bodySize = 100

// load is the shape of one messaging sample: how many messages of what
// body size, the confirm window and the consumer prefetch.
type load struct{ messages, body, window, prefetch int }

// load is the shape of the 100-byte scenarios, from the flags.
func (cfg *config) load() load { return load{cfg.messages, bodySize, cfg.window, cfg.prefetch} }

// shaped binds a scenario that takes a load to one load.
func shaped(f func(context.Context, *env, load) (cost, error), l load) func(context.Context, *env) (cost, error) {
	return func(ctx context.Context, e *env) (cost, error) { return f(ctx, e, l) }
}

// Client names as they appear in the report.
const (
	cLeveret = "leveret"
	cAMQP    = "amqp091-go"
	cAMQP16  = "amqp091-go-x16"  // 16 goroutines on 16 channels (declares only)
	cRaw     = "ceiling"         // the raw codec client of ceiling.go (no-wait for declares)
	cRawHand = "ceiling-handoff" // cRaw acking on a second goroutine (consume only)
)

// Scenario groups (for -only) and scenario names (rows of the report).
const (
	gDeclare = "declare"
	gPublish = "publish"
	gConfirm = "confirm"
	gConsume = "consume"
	gMany    = "consumers"

	sPublish     = "publish"
	sConfirm     = "publish-confirm"
	sClientPub   = "publish-client" // leveret's Client.Publish, which is confirmed; the others as in sConfirm
	sConsumeEach = "consume-ack-each"
	sConsumeMult = "consume-ack-multi100"
	sConsumers   = "consumers" // e.cfg.consumers consumers on one connection: setup, memory, goroutines
)

func declareScenario(ms int) string { return fmt.Sprintf("declare-%dms", ms) }

// sample is one timed run of one scenario by one client.
type sample struct {
	scenario string
	client   string
	round    int
	ops      int
	cost
}

func (s sample) rate() float64 { return float64(s.ops) / s.elapsed.Seconds() }

// cpuPerOp is the process CPU per operation in microseconds.
func (s sample) cpuPerOp() float64 { return float64(s.cpu.Microseconds()) / float64(s.ops) }

// brokerBusy is the broker's CPU over the wall time, in cores (2.0 = both
// cores of a 2-core machine), 0 when the broker's process was not found.
func (s sample) brokerBusy() float64 { return s.broker.Seconds() / s.elapsed.Seconds() }

// syscallsPerOp is the process's read+write system calls per operation.
func (s sample) syscallsPerOp() float64 { return float64(s.reads+s.write) / float64(s.ops) }

// env is what every scenario shares: the configuration, the broker
// address, one latency proxy per added latency, and an admin client on a
// direct connection for set-up, polling and clean-up (never timed work of
// the client under test).
type env struct {
	cfg           *config
	url           string
	admin         *leveret.Client
	proxies       map[int]*latencyProxy
	rtt           map[int]time.Duration // measured round trip per added latency
	brokerVersion string
	seq           int
}

func newEnv(ctx context.Context, cfg *config, u *url.URL) (*env, error) {
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	admin, err := leveret.Dial(dctx, cfg.url, leveret.WithConnectionName("bench-admin"))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", u.Redacted(), err)
	}
	e := &env{cfg: cfg, url: cfg.url, admin: admin, proxies: map[int]*latencyProxy{}, rtt: map[int]time.Duration{}}
	if h := u.Hostname(); h == "127.0.0.1" || h == "localhost" || h == "::1" {
		port, err := strconv.Atoi(u.Port())
		if err != nil {
			port = 5672
		}
		findBroker(port)
	}
	if v, ok := admin.ServerProperties()["version"].(string); ok {
		e.brokerVersion = v
	}
	if len(cfg.only) == 0 || cfg.only[gDeclare] {
		for _, ms := range cfg.latencies {
			if ms == 0 {
				continue
			}
			p, err := startLatencyProxy(u.Host, ms)
			if err != nil {
				e.close()
				return nil, fmt.Errorf("latency proxy: %w", err)
			}
			e.proxies[ms] = p
		}
		if err := e.measureRTT(ctx); err != nil {
			e.close()
			return nil, err
		}
	}
	return e, nil
}

func (e *env) measureRTT(ctx context.Context) error {
	q, err := e.declareQueue(ctx, "rtt")
	if err != nil {
		return err
	}
	defer e.deleteQueues(ctx, q)
	for _, ms := range e.cfg.latencies {
		if e.rtt[ms], err = roundTrip(ctx, e.urlFor(ms), q); err != nil {
			return fmt.Errorf("round trip +%d ms: %w", ms, err)
		}
	}
	return nil
}

func (e *env) close() {
	for _, p := range e.proxies {
		p.stop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e.admin.Close(ctx)
}

// urlFor returns the broker URL as seen through the proxy adding ms of
// latency each way (the direct URL for 0).
func (e *env) urlFor(ms int) string {
	if ms == 0 {
		return e.url
	}
	u, _ := url.Parse(e.url)
	u.Host = e.proxies[ms].addr
	return u.String()
}

// name returns a queue name unique to this process.
func (e *env) name(what string) string {
	e.seq++
	return fmt.Sprintf("bench-%s-%d-%d", what, syscall.Getpid(), e.seq)
}

// cost is what one timed section took.
type cost struct {
	elapsed      time.Duration
	cpu          time.Duration // user+sys of the whole process
	reads, write int64         // read and write system calls of the whole process
	broker       time.Duration // user+sys of the local broker (beam.smp), 0 if not found
	heap         int64         // heap the section left behind, after a GC (consumers scenario only)
	goroutines   int           // goroutines the section left behind (consumers scenario only)
}

// measure runs f as the timed section: wall time, the process's CPU
// (user+sys from getrusage) and its read/write system calls (from
// /proc/self/io) before and after. A GC first keeps garbage left by set-up
// out of the measurement.
func measure(f func() error) (cost, error) {
	runtime.GC()
	c0 := processCPU()
	b0 := brokerCPU()
	r0, w0 := processSyscalls()
	t0 := time.Now()
	err := f()
	m := cost{elapsed: time.Since(t0), cpu: processCPU() - c0, broker: brokerCPU() - b0}
	r1, w1 := processSyscalls()
	m.reads, m.write = r1-r0, w1-w0
	return m, err
}

// processSyscalls returns the process's read and write system calls so
// far (syscr, syscw), or zeros where /proc/self/io is missing.
func processSyscalls() (reads, writes int64) {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch k {
		case "syscr":
			reads = n
		case "syscw":
			writes = n
		}
	}
	return reads, writes
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// debugf logs when BENCH_DEBUG is set.
func debugf(format string, args ...any) {
	if os.Getenv("BENCH_DEBUG") != "" {
		log.Printf(format, args...)
	}
}

// job is one client's run of one scenario.
type job struct {
	group, scenario, client string
	ops                     int
	run                     func(ctx context.Context, e *env) (cost, error)
}

func (e *env) jobs() [][]job {
	cfg := e.cfg
	var groups [][]job
	for _, ms := range cfg.latencies {
		if ms != 0 && e.proxies[ms] == nil {
			continue // declares not selected: no proxy was started
		}
		s, url := declareScenario(ms), e.urlFor(ms)
		groups = append(groups, []job{
			{gDeclare, s, cAMQP, cfg.declares, func(ctx context.Context, e *env) (cost, error) {
				return amqpDeclares(ctx, e, url, 1)
			}},
			{gDeclare, s, cAMQP16, cfg.declares, func(ctx context.Context, e *env) (cost, error) {
				return amqpDeclares(ctx, e, url, 16)
			}},
			{gDeclare, s, cLeveret, cfg.declares, func(ctx context.Context, e *env) (cost, error) {
				return leveretDeclares(ctx, e, url)
			}},
			{gDeclare, s, cRaw, cfg.declares, func(ctx context.Context, e *env) (cost, error) {
				return rawDeclares(ctx, e, url, 16)
			}},
		})
	}
	n, l := cfg.messages, cfg.load()
	groups = append(groups,
		[]job{{gPublish, sPublish, cLeveret, n, leveretPublish}, {gPublish, sPublish, cAMQP, n, amqpPublish},
			{gPublish, sPublish, cRaw, n, rawPublish}},
		[]job{{gConfirm, sConfirm, cLeveret, n, leveretConfirmed}, {gConfirm, sConfirm, cAMQP, n, shaped(amqpConfirmed, l)},
			{gConfirm, sConfirm, cRaw, n, shaped(rawConfirmed, l)}},
		[]job{{gConfirm, sClientPub, cLeveret, n, shaped(leveretClientPublish, l)}, {gConfirm, sClientPub, cAMQP, n, shaped(amqpConfirmed, l)},
			{gConfirm, sClientPub, cRaw, n, shaped(rawConfirmed, l)}},
		consumeJobs(sConsumeEach, 1, n),
		consumeJobs(sConsumeMult, 100, n),
		[]job{{gMany, sConsumers, cLeveret, cfg.consumers, leveretConsumers},
			{gMany, sConsumers, cAMQP, cfg.consumers, amqpConsumers}},
	)
	return append(groups, cfg.largeJobs()...)
}

// consumeJobs is one consume scenario for every client: n deliveries,
// acked every ackEvery.
func consumeJobs(scenario string, ackEvery, n int) []job {
	return []job{
		{gConsume, scenario, cLeveret, n, func(ctx context.Context, e *env) (cost, error) {
			return leveretConsume(ctx, e, e.cfg.load(), ackEvery)
		}},
		{gConsume, scenario, cAMQP, n, func(ctx context.Context, e *env) (cost, error) {
			return amqpConsume(ctx, e, e.cfg.load(), ackEvery)
		}},
		{gConsume, scenario, cRaw, n, func(ctx context.Context, e *env) (cost, error) {
			return rawConsume(ctx, e, e.cfg.load(), ackEvery, false)
		}},
		{gConsume, scenario, cRawHand, n, func(ctx context.Context, e *env) (cost, error) {
			return rawConsume(ctx, e, e.cfg.load(), ackEvery, true)
		}},
	}
}

// runAll runs every scenario for every round. Within a scenario the
// clients take turns, and the order rotates from round to round so that
// neither always runs first on a freshly cleaned broker.
func runAll(ctx context.Context, e *env) ([]sample, error) {
	var out []sample
	for round := 1; round <= e.cfg.rounds; round++ {
		for _, group := range e.jobs() {
			for i := range group {
				j := group[(i+round-1)%len(group)]
				if !e.cfg.wants(j.group, j.client) {
					continue
				}
				jctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
				m, err := j.run(jctx, e)
				cancel()
				if err != nil {
					return out, fmt.Errorf("round %d, %s, %s: %w", round, j.scenario, j.client, err)
				}
				s := sample{scenario: j.scenario, client: j.client, round: round, ops: j.ops, cost: m}
				log.Printf("round %d  %-22s %-15s %10.0f/s  %7.2f µs CPU/op  %6.3f syscalls/op  broker %.2f cores  (%v)", round, j.scenario, j.client,
					s.rate(), s.cpuPerOp(), s.syscallsPerOp(), s.brokerBusy(), m.elapsed.Round(time.Millisecond))
				out = append(out, s)
			}
		}
	}
	return out, nil
}

// --- set-up and clean-up on the admin connection (never timed) ---

// declareQueue declares a fresh, empty, durable classic queue: RabbitMQ 4.x with
// its next defaults refuses transient non-exclusive ones. Messages stay
// transient (not persisted) unless a scenario says otherwise.
func (e *env) declareQueue(ctx context.Context, what string) (string, error) {
	q := e.name(what)
	_, err := e.admin.QueueDeclare(ops.QueueDeclare{Queue: q, Durable: true}).Wait(ctx)
	return q, err
}

// deleteQueues deletes queues, pipelined.
func (e *env) deleteQueues(ctx context.Context, names ...string) error {
	ws := make([]leveret.Waiter, len(names))
	for i, q := range names {
		ws[i] = e.admin.QueueDelete(ops.QueueDelete{Queue: q})
	}
	return leveret.WaitAll(ctx, ws...)
}

// messageCount returns the number of ready messages in q.
func (e *env) messageCount(ctx context.Context, q string) (int, error) {
	ok, err := e.admin.QueueDeclare(ops.QueueDeclare{Queue: q, Passive: true}).Wait(ctx)
	return int(ok.MessageCount), err
}

// waitCount polls q until it holds n messages. Both clients' publish
// scenarios end with it, so a publish counts once the broker has it.
func (e *env) waitCount(ctx context.Context, q string, n int) error {
	for {
		got, err := e.messageCount(ctx, q)
		if err != nil {
			return err
		}
		if got >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("queue %s holds %d of %d messages: %w", q, got, n, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// prefill fills a fresh queue with l.messages messages of l.body bytes for
// a consume scenario.
func (e *env) prefill(ctx context.Context, l load) (string, error) {
	n := l.messages
	q, err := e.declareQueue(ctx, "consume")
	if err != nil {
		return "", err
	}
	ch, err := e.admin.Channel(ctx)
	if err != nil {
		return "", err
	}
	defer ch.Close(ctx)
	body := make([]byte, l.body)
	var last *leveret.Promise[struct{}]
	for range n {
		last = ch.Publish(ctx, ops.Publish{RoutingKey: q, Message: ops.Message{Body: body}})
	}
	if _, err := last.Wait(ctx); err != nil {
		return "", err
	}
	return q, e.waitCount(ctx, q, n)
}
