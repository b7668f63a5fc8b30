// Command leveret-perf is a load test for a RabbitMQ broker or cluster,
// in the spirit of RabbitMQ's PerfTest, written with leveret. It runs
// producers and consumers, prints one progress line a second (rates,
// confirms, returns, publish-to-consume latency from a timestamp in each
// message) and a summary, and counts what was lost and duplicated from
// sequence numbers in the messages. The client reconnects and recovers by
// itself, so a run survives broker restarts and failover:
//
//	leveret-perf -uri amqp://guest:guest@localhost:5672/ -producers 2 -consumers 2 -confirm 100 -duration 30s
//	leveret-perf -uri amqp://h1:5672/,amqp://h2:5672/,amqp://h3:5672/ -queue-type quorum -confirm 500
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// config is what the flags say.
type config struct {
	uris           []string
	producers      int
	consumers      int
	size           int
	rate           float64 // per producer, msg/s; 0: as fast as possible
	confirm        int     // unconfirmed publishes per producer; 0: no confirms
	prefetch       int
	ackEvery       int // 1: ack each; N: one multiple ack per N; 0 with autoAck
	autoAck        bool
	queueType      string
	durable        bool
	persistent     bool
	mandatory      bool
	queues         int
	queuePrefix    string
	exchange       string
	routingKey     string
	duration       time.Duration
	count          int // messages per producer; 0: until duration
	interval       time.Duration
	drain          time.Duration // how long consumers may take to catch up at the end
	connectTimeout time.Duration
	json           bool
	keep           bool // leave the queues and exchange in place
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("leveret-perf", flag.ContinueOnError)
	fs.SetOutput(stderr)
	uris := fs.String("uri", "amqp://guest:guest@localhost:5672/", "broker URL, or a comma-separated list of a cluster's nodes (tried in order, failed over on loss)")
	fs.IntVar(&cfg.producers, "producers", 1, "number of producers, each on its own client")
	fs.IntVar(&cfg.consumers, "consumers", 1, "number of consumers, each on its own client")
	fs.IntVar(&cfg.size, "size", 1000, "message size in bytes (at least 24: timestamp, producer and sequence number)")
	fs.Float64Var(&cfg.rate, "rate", 0, "publish rate limit per producer in msg/s (0: as fast as possible)")
	fs.IntVar(&cfg.confirm, "confirm", 0, "publisher confirm window per producer (0: no confirms)")
	fs.IntVar(&cfg.prefetch, "prefetch", 100, "consumer prefetch (basic.qos)")
	ack := fs.String("ack", "each", `acknowledgement: "each", "auto" (no acks), or N for one multiple ack every N messages`)
	fs.StringVar(&cfg.queueType, "queue-type", "classic", "queue type: classic, quorum or stream")
	fs.BoolVar(&cfg.durable, "durable", true, "durable queues (quorum and stream queues always are); -durable=false declares transient ones, which RabbitMQ 4.x refuses with its next defaults")
	fs.BoolVar(&cfg.persistent, "persistent", false, "persistent messages (delivery mode 2)")
	fs.BoolVar(&cfg.mandatory, "mandatory", false, "publish mandatory: unroutable messages are returned and counted")
	fs.IntVar(&cfg.queues, "queues", 1, "number of queues; producers and consumers are spread over them")
	fs.StringVar(&cfg.queuePrefix, "queue", "leveret-perf", "queue name prefix (queues are <prefix>-0, <prefix>-1, ...)")
	fs.StringVar(&cfg.exchange, "exchange", "", `direct exchange to publish to (declared, queues bound); "" is the default exchange`)
	fs.StringVar(&cfg.routingKey, "routing-key", "", "routing key (default: the queue's name)")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long producers publish (0: until -count or interrupted)")
	fs.IntVar(&cfg.count, "count", 0, "messages per producer (0: until -duration)")
	fs.DurationVar(&cfg.interval, "interval", time.Second, "progress line interval")
	fs.DurationVar(&cfg.drain, "drain", 10*time.Second, "how long consumers may take to receive what was sent, at the end")
	fs.DurationVar(&cfg.connectTimeout, "connect-timeout", 10*time.Second, "how long to keep trying to reach the broker at start")
	fs.BoolVar(&cfg.json, "json", false, "machine-readable output: one JSON object per line")
	fs.BoolVar(&cfg.keep, "keep", false, "keep the queues and exchange after the run")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	for _, u := range strings.Split(*uris, ",") {
		if u = strings.TrimSpace(u); u != "" {
			cfg.uris = append(cfg.uris, u)
		}
	}
	switch *ack {
	case "each":
		cfg.ackEvery = 1
	case "auto":
		cfg.autoAck = true
	default:
		n, err := strconv.Atoi(*ack)
		if err != nil || n < 1 {
			return cfg, fmt.Errorf(`-ack: want "each", "auto" or a positive number, got %q`, *ack)
		}
		cfg.ackEvery = n
	}
	return cfg, cfg.check()
}

func (cfg *config) check() error {
	switch {
	case len(cfg.uris) == 0:
		return errors.New("-uri: no broker URL")
	case cfg.producers < 0 || cfg.consumers < 0 || cfg.producers+cfg.consumers == 0:
		return errors.New("-producers, -consumers: at least one of them, none negative")
	case cfg.size < headerSize:
		return fmt.Errorf("-size: at least %d bytes", headerSize)
	case cfg.rate < 0 || cfg.confirm < 0 || cfg.count < 0 || cfg.duration < 0:
		return errors.New("-rate, -confirm, -count, -duration: not negative")
	case cfg.prefetch < 0 || cfg.prefetch > 65535:
		return errors.New("-prefetch: 0 to 65535")
	case cfg.queues < 1:
		return errors.New("-queues: at least 1")
	case cfg.interval <= 0:
		return errors.New("-interval: positive")
	case cfg.duration == 0 && cfg.count == 0:
		return errors.New("-duration 0 needs -count")
	}
	switch cfg.queueType {
	case "classic":
	case "quorum", "stream":
		cfg.durable = true
	default:
		return fmt.Errorf("-queue-type: classic, quorum or stream, not %q", cfg.queueType)
	}
	if cfg.queueType == "stream" && (cfg.autoAck || cfg.prefetch == 0) {
		return errors.New("-queue-type stream: consumers need acks and a prefetch (RabbitMQ refuses auto-ack on streams)")
	}
	return nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "leveret-perf:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "leveret-perf:", err)
		os.Exit(1)
	}
}
