package main

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

type key struct{ scenario, client string }

// stat is the median over rounds of one scenario and client.
type stat struct {
	rate   float64 // operations per second
	cpu    float64 // process CPU µs per operation
	sys    float64 // process read+write system calls per operation
	broker float64 // broker CPU in cores during the section
	heap   float64 // bytes left on the heap per operation (consumers scenario)
	gor    float64 // goroutines left behind per operation (consumers scenario)
	rounds int
}

type report struct {
	cfg       *config
	stats     map[key]stat
	scenarios []string // in run order, but for the large-bodies group's
	large     []string // the large-bodies group's scenarios, in run order
	machine   machine
	elapsed   time.Duration
	rtt       map[int]time.Duration // measured round trip per added latency
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func summarize(cfg *config, samples []sample) *report {
	rates, cpus, sys, broker := map[key][]float64{}, map[key][]float64{}, map[key][]float64{}, map[key][]float64{}
	heap, gor := map[key][]float64{}, map[key][]float64{}
	r := &report{cfg: cfg, stats: map[key]stat{}}
	for _, s := range samples {
		k := key{s.scenario, s.client}
		list := &r.scenarios
		if isLarge(s.scenario) {
			list = &r.large
		}
		if !slices.Contains(*list, s.scenario) {
			*list = append(*list, s.scenario)
		}
		rates[k] = append(rates[k], s.rate())
		cpus[k] = append(cpus[k], s.cpuPerOp())
		sys[k] = append(sys[k], s.syscallsPerOp())
		broker[k] = append(broker[k], s.brokerBusy())
		heap[k] = append(heap[k], float64(s.heap)/float64(s.ops))
		gor[k] = append(gor[k], float64(s.goroutines)/float64(s.ops))
	}
	for k := range rates {
		r.stats[k] = stat{rate: median(rates[k]), cpu: median(cpus[k]), sys: median(sys[k]), broker: median(broker[k]),
			heap: median(heap[k]), gor: median(gor[k]), rounds: len(rates[k])}
	}
	return r
}

func (r *report) get(scenario, client string) (stat, bool) {
	s, ok := r.stats[key{scenario, client}]
	return s, ok
}

// ratio is leveret's rate over client's, 0 when either is missing.
func (r *report) ratio(scenario, client string) float64 {
	return r.rateOver(scenario, cLeveret, client)
}

// cpuRatio is leveret's CPU per message over amqp091-go's.
func (r *report) cpuRatio(scenario string) float64 {
	return r.cpuOver(scenario, cLeveret, cAMQP)
}

// rateOver is client a's rate over client b's, 0 when either is missing.
func (r *report) rateOver(scenario, a, b string) float64 {
	x, ok1 := r.get(scenario, a)
	y, ok2 := r.get(scenario, b)
	if !ok1 || !ok2 || y.rate == 0 {
		return 0
	}
	return x.rate / y.rate
}

// cpuOver is client a's CPU per message over client b's, 0 when either is
// missing.
func (r *report) cpuOver(scenario, a, b string) float64 {
	x, ok1 := r.get(scenario, a)
	y, ok2 := r.get(scenario, b)
	if !ok1 || !ok2 || y.cpu == 0 {
		return 0
	}
	return x.cpu / y.cpu
}

var scenarioTitles = map[string]string{
	sPublish:     "publish, no confirms",
	sConfirm:     "publish, confirms, window %d",
	sClientPub:   "publish, client level (Client.Publish, confirmed), ≤%d outstanding",
	sConsumeEach: "consume, prefetch %d, ack each",
	sConsumeMult: "consume, prefetch %d, ack multiple /100",
	sConsumers:   "%d consumers on one connection (a queue and a channel each, prefetch 10): start them",
}

func (r *report) title(s string) string {
	if strings.HasPrefix(s, "declare-") {
		ms := strings.TrimSuffix(strings.TrimPrefix(s, "declare-"), "ms")
		return fmt.Sprintf("%d queue declares, +%s ms each way", r.cfg.declares, ms)
	}
	t := scenarioTitles[s]
	switch s {
	case sConfirm, sClientPub:
		t = fmt.Sprintf(t, r.cfg.window)
	case sConsumeEach, sConsumeMult:
		t = fmt.Sprintf(t, r.cfg.prefetch)
	case sConsumers:
		return fmt.Sprintf(t, r.cfg.consumers)
	}
	return fmt.Sprintf("%s (%d × %d B)", t, r.cfg.messages, bodySize)
}

func fmtRate(r *report, s, c string) string {
	st, ok := r.get(s, c)
	if !ok {
		return "—"
	}
	return strconv.FormatFloat(st.rate, 'f', 0, 64)
}

func fmtRatio(x float64) string {
	if x == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", x)
}

func (r *report) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Results\n\nMedians of %d round(s); rates in operations per second (higher is better).\n\n", r.cfg.rounds)
	b.WriteString("| Scenario | amqp091-go | amqp091-go, 16 goroutines | leveret | leveret ÷ amqp091-go | leveret ÷ amqp091-go ×16 |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|\n")
	for _, s := range r.scenarios {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", r.title(s),
			fmtRate(r, s, cAMQP), fmtRate(r, s, cAMQP16), fmtRate(r, s, cLeveret),
			fmtRatio(r.ratio(s, cAMQP)), fmtRatio(r.ratio(s, cAMQP16)))
	}
	if len(r.rtt) > 0 {
		b.WriteString("\nDeclares go through an in-process toxiproxy with a latency toxic each way (+0 ms is direct). " +
			"Measured round trip of one synchronous call (median of 21 passive declares):")
		for _, ms := range r.cfg.latencies {
			if d, ok := r.rtt[ms]; ok {
				fmt.Fprintf(&b, " +%d ms: %.2f ms;", ms, float64(d.Microseconds())/1000)
			}
		}
		b.WriteString("\n")
	}
	b.WriteString("\n### Client CPU per message\n\nProcess user+sys CPU (getrusage) during the timed section ÷ messages, in µs (lower is better). " +
		"Syscalls: the process's read+write system calls (/proc/self/io syscr+syscw) ÷ messages. " +
		"Broker: the local RabbitMQ node's CPU (beam.smp, /proc) during the section, in cores; " +
		"near the machine's core count minus the client's share, the broker bounds the rate.\n\n")
	b.WriteString("| Scenario | amqp091-go µs | leveret µs | leveret ÷ amqp091-go | amqp091-go syscalls | leveret syscalls | broker cores (amqp091-go / leveret) |\n|---|--:|--:|--:|--:|--:|--:|\n")
	for _, s := range r.scenarios {
		if strings.HasPrefix(s, "declare-") {
			continue
		}
		l, ok1 := r.get(s, cLeveret)
		o, ok2 := r.get(s, cAMQP)
		cell := func(st stat, ok bool) string {
			if !ok {
				return "—"
			}
			return fmt.Sprintf("%.2f", st.cpu)
		}
		sysCell := func(st stat, ok bool) string {
			if !ok {
				return "—"
			}
			return fmt.Sprintf("%.3f", st.sys)
		}
		brokerCell := func(st stat, ok bool) string {
			if !ok {
				return "—"
			}
			return fmt.Sprintf("%.2f", st.broker)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s / %s |\n", r.title(s), cell(o, ok2), cell(l, ok1), fmtRatio(r.cpuRatio(s)),
			sysCell(o, ok2), sysCell(l, ok1), brokerCell(o, ok2), brokerCell(l, ok1))
	}
	r.consumersSection(&b)
	r.largeSection(&b)
	r.ceilingSection(&b)
	b.WriteString("\n### Targets\n\nBest possible: the same ratio for the ceiling client (for consume CPU, its handoff " +
		"variant), i.e. the most any client could show on this broker in this run; — where the run had no ceiling client.\n\n" +
		"| Target | Measured | Best possible | Holds |\n|---|--:|--:|:-:|\n")
	for _, t := range r.targets() {
		bound := "—"
		if t.bound != 0 {
			bound = fmtRatio(t.bound)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", t.name, fmtRatio(t.value), bound, t.verdict())
	}
	fmt.Fprintf(&b, "\n### Machine\n\n%s\nRun took %.0f s.\n", r.machine.String(), r.elapsed.Seconds())
	return b.String()
}

// consumersSection reports what many consumers cost: setup rate, and the
// heap and goroutines each one keeps.
func (r *report) consumersSection(b *strings.Builder) {
	l, ok1 := r.get(sConsumers, cLeveret)
	o, ok2 := r.get(sConsumers, cAMQP)
	if !ok1 && !ok2 {
		return
	}
	fmt.Fprintf(b, "\n### Many consumers\n\n%d queues with a consumer each (its own channel, prefetch 10, manual acks) on one "+
		"connection. Heap and goroutines are what the consumers keep, after a GC, per consumer.\n\n"+
		"| Client | started per second | heap per consumer, KB | goroutines per consumer |\n|---|--:|--:|--:|\n", r.cfg.consumers)
	row := func(name string, st stat, ok bool) {
		if ok {
			fmt.Fprintf(b, "| %s | %.0f | %.1f | %.2f |\n", name, st.rate, st.heap/1024, st.gor)
		}
	}
	row(cAMQP, o, ok2)
	row(cLeveret, l, ok1)
}

// twoDecimals formats v with two decimals and no unit, "—" for 0 (missing).
func twoDecimals(v float64) string {
	if v == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", v)
}

// ceilingSection compares both clients with the raw codec client of
// ceiling.go: the broker's rate for a client that costs it nothing. The
// last column is the most leveret could gain over amqp091-go on this broker.
func (r *report) ceilingSection(b *strings.Builder) {
	var rows []string
	for _, s := range r.scenarios {
		c, ok := r.get(s, cRaw)
		if !ok || c.rate == 0 {
			continue
		}
		base := cAMQP
		if strings.HasPrefix(s, "declare-") {
			base = cAMQP16 // the faster amqp091-go way to declare
		}
		reach := "—"
		if v := r.rateOver(s, cRaw, base); v != 0 {
			reach = fmtRatio(v)
		}
		rows = append(rows, fmt.Sprintf("| %s | %.0f | %.2f | %s | %s | %s |\n", r.title(s), c.rate, c.broker,
			twoDecimals(r.rateOver(s, cLeveret, cRaw)), twoDecimals(r.rateOver(s, base, cRaw)), reach))
	}
	if len(rows) == 0 {
		return
	}
	b.WriteString("\n### Broker ceiling\n\nThe raw codec client (ceiling.go) writes pre-encoded frames in batches as large as the " +
		"window allows and parses replies on the reading goroutine: the broker's rate for a client that costs it " +
		"(almost) nothing. A client's rate ÷ ceiling is the share of the broker's capacity it reaches; " +
		"ceiling ÷ amqp091-go is the highest leveret ÷ amqp091-go ratio this broker allows. For declares the ceiling " +
		"sends every declare with no-wait over 16 channels in one write and waits once (rawDeclares), and " +
		"amqp091-go is its 16-goroutine variant.\n\n")
	b.WriteString("| Scenario | ceiling rate | broker cores | leveret ÷ ceiling | amqp091-go ÷ ceiling | ceiling ÷ amqp091-go |\n|---|--:|--:|--:|--:|--:|\n")
	for _, row := range rows {
		b.WriteString(row)
	}
	if v := r.ownRatio(cRaw); v != 0 {
		fmt.Fprintf(b, "\nCeiling confirmed ÷ ceiling unconfirmed: %.2f.\n", v)
	}
	r.ceilingCPU(b)
}

// ceilingCPU compares client CPU per message with the raw codec client's,
// acking on its reading goroutine and on a second one. The handoff
// variant's CPU over amqp091-go's is the lowest ratio a client can reach
// that, like leveret, never runs user code on its reader.
func (r *report) ceilingCPU(b *strings.Builder) {
	cpu := func(s, client string) string {
		st, _ := r.get(s, client)
		return twoDecimals(st.cpu) // µs; "—" where the client did not run
	}
	var rows []string
	for _, s := range r.scenarios {
		if st, _ := r.get(s, cRaw); st.cpu == 0 {
			continue
		}
		rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s | %s | %s | %s | %s |\n", r.title(s),
			cpu(s, cAMQP), cpu(s, cLeveret), cpu(s, cRaw), cpu(s, cRawHand),
			twoDecimals(r.cpuOver(s, cLeveret, cAMQP)), twoDecimals(r.cpuOver(s, cRaw, cAMQP)), twoDecimals(r.cpuOver(s, cRawHand, cAMQP))))
	}
	if len(rows) == 0 {
		return
	}
	b.WriteString("\nClient CPU µs per message (median). \"handoff\" is the ceiling client passing each delivery to a second " +
		"goroutine that acks, as any client must that keeps user code off its reader (leveret does).\n\n")
	b.WriteString("| Scenario | amqp091-go | leveret | ceiling | ceiling, handoff | leveret ÷ amqp091-go | ceiling ÷ amqp091-go | handoff ÷ amqp091-go |\n|---|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, row := range rows {
		b.WriteString(row)
	}
}

// target is one of the speed targets. bound is the same ratio
// for the ceiling client (0 if the run had none): when even it misses the
// target, no client can meet it on this broker.
type target struct {
	name         string
	value, bound float64
	limit        float64
	lower        bool // the value must be at most limit, not at least
}

func (t target) meets(v float64) bool {
	if t.lower {
		return v <= t.limit
	}
	return v >= t.limit
}

func (t target) verdict() string {
	switch {
	case t.meets(t.value):
		return "yes"
	case t.bound != 0 && !t.meets(t.bound):
		return "no (out of reach here)"
	default:
		return "no"
	}
}

// ownRatio is a client's confirmed rate over its own unconfirmed rate, 0
// when either is missing.
func (r *report) ownRatio(client string) float64 {
	c, ok1 := r.get(sConfirm, client)
	p, ok2 := r.get(sPublish, client)
	if !ok1 || !ok2 || p.rate == 0 {
		return 0
	}
	return c.rate / p.rate
}

func (r *report) targets() []target {
	var ts []target
	add := func(name string, v, bound, limit float64, lower bool) {
		if v != 0 {
			ts = append(ts, target{name: name, value: v, bound: bound, limit: limit, lower: lower})
		}
	}
	for _, ms := range r.cfg.latencies {
		s := declareScenario(ms)
		add(fmt.Sprintf("declares +%d ms: leveret ≥ amqp091-go ×16", ms), r.ratio(s, cAMQP16), r.rateOver(s, cRaw, cAMQP16), 1, false)
		if ms == 5 {
			add("declares +5 ms: leveret ≥ 15× amqp091-go sequential", r.ratio(s, cAMQP), 0, 15, false)
		}
	}
	add("confirmed publish: leveret ≥ 1.3× amqp091-go", r.ratio(sConfirm, cAMQP), r.rateOver(sConfirm, cRaw, cAMQP), 1.3, false)
	add("confirmed publish ≥ 0.95× leveret unconfirmed", r.ownRatio(cLeveret), r.ownRatio(cRaw), 0.95, false)
	add("consume, ack each: leveret ≥ 1.3× amqp091-go", r.ratio(sConsumeEach, cAMQP), r.rateOver(sConsumeEach, cRaw, cAMQP), 1.3, false)
	add("consume, ack multiple: leveret ≥ 1.3× amqp091-go", r.ratio(sConsumeMult, cAMQP), r.rateOver(sConsumeMult, cRaw, cAMQP), 1.3, false)
	for _, s := range []string{sPublish, sConfirm, sConsumeEach, sConsumeMult} {
		floor := cRaw // publishing runs no user code on the reader: the plain ceiling is the floor
		if s == sConsumeEach || s == sConsumeMult {
			floor = cRawHand
		}
		add(fmt.Sprintf("CPU/msg %s: leveret ≤ 0.5× amqp091-go", s), r.cpuRatio(s), r.cpuOver(s, floor, cAMQP), 0.5, true)
	}
	return ts
}

func writeRaw(path string, samples []sample) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write([]string{"round", "scenario", "client", "ops", "seconds", "rate_per_s", "cpu_seconds", "cpu_us_per_op", "read_syscalls", "write_syscalls", "broker_cpu_seconds"})
	for _, s := range samples {
		w.Write([]string{strconv.Itoa(s.round), s.scenario, s.client, strconv.Itoa(s.ops),
			fmt.Sprintf("%.4f", s.elapsed.Seconds()), fmt.Sprintf("%.1f", s.rate()),
			fmt.Sprintf("%.4f", s.cpu.Seconds()), fmt.Sprintf("%.3f", s.cpuPerOp()),
			strconv.FormatInt(s.reads, 10), strconv.FormatInt(s.write, 10), fmt.Sprintf("%.3f", s.broker.Seconds())})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

type machine struct {
	cpus                    int
	cpuModel, ram           string
	rabbitmq, goVer, kernel string
	date                    string
}

func machineInfo(rabbitmq string) machine {
	m := machine{cpus: runtime.NumCPU(), rabbitmq: rabbitmq, goVer: runtime.Version(),
		date: time.Now().UTC().Format("2006-01-02")}
	m.cpuModel = procField("/proc/cpuinfo", "model name")
	if kb, err := strconv.ParseFloat(strings.Fields(procField("/proc/meminfo", "MemTotal") + " 0")[0], 64); err == nil && kb > 0 {
		m.ram = fmt.Sprintf("%.1f GiB", kb/(1<<20))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	return m
}

// procField returns the value of the first "name : value" line of a /proc file.
func procField(path, name string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func (m machine) String() string {
	return fmt.Sprintf("- CPUs: %d (nproc), %s\n- RAM: %s\n- RabbitMQ %s (same machine, loopback)\n- %s, Linux %s, %s %s\n- date: %s\n",
		m.cpus, m.cpuModel, m.ram, m.rabbitmq, m.goVer, m.kernel, runtime.GOOS, runtime.GOARCH, m.date)
}
