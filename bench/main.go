// Command bench compares leveret with github.com/rabbitmq/amqp091-go on one
// RabbitMQ broker: queue declares under added network latency, publishing
// with and without confirms, and consuming with manual acks. Both clients
// run the same scenarios, alternating, for several rounds; the report gives
// medians, the leveret/amqp091-go ratio and the client CPU per message. For
// the messaging scenarios a raw codec client (ceiling.go) measures the
// broker's own ceiling.
//
//	cd bench && go run .            # full run (3 rounds)
//	cd bench && go run . -quick     # smoke run
//
// It starts the local broker with ../scripts/broker.sh up when -url is the
// default, writes bench/results/{results.md,raw.csv,chart.png} and copies
// the chart to ../docs/bench.png.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"time"
)

const defaultURL = "amqp://guest:guest@127.0.0.1:5672/"

type config struct {
	url        string
	rounds     int
	quick      bool
	declares   int
	messages   int
	consumers  int // consumers in the many-consumers scenario
	window     int
	prefetch   int
	latencies  []int
	only       map[string]bool // scenario groups to run; empty means all
	clients    map[string]bool // clients to run; empty means all
	cpuprofile string
	tracefile  string
	outDir     string
	docsChart  string
	noBroker   bool
	broker     string        // the series to start: 3.10, 4.0 or newest
	confirmRaw bool          // leveret's confirm scenario on the root API instead of confirm/
	topology   int           // leveret.WithTopologyChannels for the declare scenario; 0: the default
	latencyFor time.Duration // per row of the fixed-rate latency group
	// latencyRates replaces the latency group's unconfirmed rates (1k, 10k,
	// 80% of the unthrottled rate) when set.
	latencyRates []int
}

func parseFlags() *config {
	cfg := &config{}
	var only, clients, lat, latRates string
	flag.StringVar(&cfg.url, "url", defaultURL, "broker URL (direct; latency scenarios go through an in-process toxiproxy)")
	flag.IntVar(&cfg.rounds, "rounds", 3, "rounds per scenario and client; the report shows medians")
	flag.BoolVar(&cfg.quick, "quick", false, "fast smoke run: 1 round, fewer declares and messages")
	flag.IntVar(&cfg.declares, "declares", 1000, "queue declares per declare sample")
	flag.IntVar(&cfg.messages, "messages", 200_000, "messages per publish/consume sample")
	flag.IntVar(&cfg.consumers, "consumers", 1000, "consumers (a queue and a channel each) in the many-consumers scenario")
	flag.IntVar(&cfg.window, "window", 1000, "outstanding unconfirmed publishes in the confirm scenario")
	flag.IntVar(&cfg.prefetch, "prefetch", 1000, "consumer prefetch count")
	flag.StringVar(&lat, "latency", "0,1,5", "added latency each way, in ms, for the declare scenario (0 = direct)")
	flag.StringVar(&only, "only", "", "comma-separated scenario groups: declare,publish,confirm,consume,consumers,large,latency,recovery,failover")
	flag.StringVar(&clients, "clients", "", "comma-separated clients: leveret,leveret-client,amqp091-go,amqp091-go-x16,ceiling,ceiling-handoff")
	flag.StringVar(&cfg.cpuprofile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.StringVar(&cfg.tracefile, "trace", "", "write a runtime execution trace of the whole run to this file (go tool trace)")
	flag.StringVar(&cfg.outDir, "out", "results", "directory for results.md, raw.csv and chart.png")
	flag.StringVar(&cfg.docsChart, "docs-chart", "../docs/bench.png", "copy chart.png here (empty: do not)")
	flag.BoolVar(&cfg.confirmRaw, "confirm-raw", false, "leveret confirms via Channel.ConfirmSelect+OnConfirm and a window semaphore, not the confirm package")
	flag.IntVar(&cfg.topology, "leveret-topology-channels", 0, "experiment: leveret.WithTopologyChannels(n) in the declare scenario (0: library default)")
	flag.StringVar(&latRates, "latency-rates", "", "comma-separated msg/s for the latency group's unconfirmed rows (default: 1000, 10000 and 80% of the unthrottled rate)")
	flag.DurationVar(&cfg.latencyFor, "latency-duration", 20*time.Second, "how long each row of the fixed-rate latency group publishes")
	flag.BoolVar(&cfg.noBroker, "no-broker-start", false, "do not start the broker (-broker)")
	flag.StringVar(&cfg.broker, "broker", "3.10", "RabbitMQ series to start and run against: 3.10 (Debian 12, ../scripts/broker.sh), 4.0 (Debian 13) or newest (Debian unstable), both with the announced next defaults (../scripts/broker.sh up SERIES); sets -url's default")
	flag.Parse()

	if cfg.quick {
		cfg.rounds = 1
		if !flagSet("declares") {
			cfg.declares = 200
		}
		if !flagSet("messages") {
			cfg.messages = 20_000
		}
		if !flagSet("consumers") {
			cfg.consumers = 200
		}
		if !flagSet("latency-duration") {
			cfg.latencyFor = 3 * time.Second
		}
	}
	for _, s := range strings.Split(lat, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		ms, err := strconv.Atoi(s)
		if err != nil || ms < 0 {
			log.Fatalf("bad -latency %q", s)
		}
		cfg.latencies = append(cfg.latencies, ms)
	}
	for _, s := range strings.Split(latRates, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		r, err := strconv.Atoi(s)
		if err != nil || r < 1 {
			log.Fatalf("bad -latency-rates %q", s)
		}
		cfg.latencyRates = append(cfg.latencyRates, r)
	}
	cfg.only, cfg.clients = set(only), set(clients)
	if cfg.rounds < 1 || cfg.declares < 16 || cfg.messages < 100 || cfg.consumers < 1 || cfg.window < 1 || cfg.prefetch < 1 || cfg.prefetch > 65535 {
		log.Fatal("need -rounds >= 1, -declares >= 16, -messages >= 100, -consumers >= 1, -window >= 1, 1 <= -prefetch <= 65535")
	}
	return cfg
}

func flagSet(name string) bool {
	found := false
	flag.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}

func set(list string) map[string]bool {
	m := map[string]bool{}
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s != "" {
			m[s] = true
		}
	}
	return m
}

func (cfg *config) wants(group, client string) bool {
	return (len(cfg.only) == 0 || cfg.only[group]) && (len(cfg.clients) == 0 || cfg.clients[client])
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("bench: ")
	cfg := parseFlags()
	if err := cfg.chooseBroker(); err != nil {
		log.Fatal(err)
	}
	if cfg.cpuprofile != "" {
		f, err := os.Create(cfg.cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	if cfg.tracefile != "" {
		f, err := os.Create(cfg.tracefile)
		if err != nil {
			log.Fatal(err)
		}
		if err := trace.Start(f); err != nil {
			log.Fatal(err)
		}
		defer f.Close()
		defer trace.Stop()
	}
	if err := run(cfg); err != nil {
		pprof.StopCPUProfile()
		trace.Stop()
		log.Fatal(err)
	}
}

// seriesPorts are the AMQP ports of the brokers -broker starts (through
// scripts/broker.sh up SERIES): the host's 3.10, or a 4.x node with the next
// defaults (the test suite's lnext for newest).
var seriesPorts = map[string]int{"3.10": 5672, "4.0": 5694, "newest": 5690}

// chooseBroker points -url at the -broker series (unless -url was given)
// and starts that broker (unless -no-broker-start or -url was given).
func (cfg *config) chooseBroker() error {
	port, ok := seriesPorts[cfg.broker]
	if !ok {
		return fmt.Errorf("-broker %q: want 3.10, 4.0 or newest", cfg.broker)
	}
	if flagSet("url") {
		return nil
	}
	cfg.url = fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", port)
	if cfg.noBroker {
		return nil
	}
	script := filepath.Join("..", "scripts", "broker.sh")
	if _, err := os.Stat(script); err != nil {
		log.Printf("no %s (run from bench/); assuming a broker is up", script)
		return nil
	}
	cmd := exec.Command(script, "up", cfg.broker)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s up %s: %w", script, cfg.broker, err)
	}
	return nil
}

func run(cfg *config) error {
	ctx := context.Background()
	u, err := url.Parse(cfg.url)
	if err != nil {
		return fmt.Errorf("bad -url: %w", err)
	}
	env, err := newEnv(ctx, cfg, u)
	if err != nil {
		return err
	}
	defer env.close()

	m := machineInfo(env.brokerVersion)
	fmt.Println(m.String())
	fmt.Printf("rounds %d, %d declares, %d messages of %d bytes, confirm window %d, prefetch %d\n\n",
		cfg.rounds, cfg.declares, cfg.messages, bodySize, cfg.window, cfg.prefetch)

	start := time.Now()
	samples, err := runAll(ctx, env)
	if err != nil {
		return err
	}
	latency, err := rateLatencyAll(ctx, env)
	if err != nil {
		return err
	}
	recovery, err := recoveryAll(ctx, env)
	if err != nil {
		return err
	}
	recovery = latency + recovery
	failover, err := failoverAll(ctx, env)
	if err != nil {
		return err
	}
	recovery += failover
	rep := summarize(cfg, samples)
	rep.machine, rep.elapsed, rep.rtt = m, time.Since(start), env.rtt
	text := rep.markdown() + recovery
	fmt.Println(text)

	if err := os.MkdirAll(cfg.outDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cfg.outDir, "results.md"), []byte(text), 0o644); err != nil {
		return err
	}
	if err := writeRaw(filepath.Join(cfg.outDir, "raw.csv"), samples); err != nil {
		return err
	}
	chart := filepath.Join(cfg.outDir, "chart.png")
	if err := drawChart(chart, rep); err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	if cfg.docsChart != "" {
		if err := copyFile(chart, cfg.docsChart); err != nil {
			log.Printf("copy chart: %v", err)
		}
	}
	log.Printf("wrote %s, raw.csv and chart.png in %s (%.0fs)", "results.md", cfg.outDir, rep.elapsed.Seconds())
	return nil
}

func copyFile(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
