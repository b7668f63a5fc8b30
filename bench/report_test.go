package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A miss is called out of reach only when the ceiling client misses the
// same target in the same run.
func TestTargetVerdicts(t *testing.T) {
	r := &report{cfg: &config{}, stats: map[key]stat{
		{sPublish, cLeveret}: {rate: 100, cpu: 1},
		{sPublish, cAMQP}:    {rate: 90, cpu: 4},
		{sPublish, cRaw}:     {rate: 100, cpu: 0.5},
		{sConfirm, cLeveret}: {rate: 70, cpu: 3},
		{sConfirm, cAMQP}:    {rate: 60, cpu: 7},
		{sConfirm, cRaw}:     {rate: 72, cpu: 2.5},
		// ack each: leveret misses 1.3× but the ceiling would allow 1.5×.
		{sConsumeEach, cLeveret}: {rate: 60, cpu: 4},
		{sConsumeEach, cAMQP}:    {rate: 50, cpu: 10},
		{sConsumeEach, cRaw}:     {rate: 75, cpu: 2},
		{sConsumeEach, cRawHand}: {rate: 70, cpu: 3},
		{sConsumeMult, cLeveret}: {rate: 66, cpu: 3.5},
		{sConsumeMult, cAMQP}:    {rate: 60, cpu: 5.5},
		{sConsumeMult, cRaw}:     {rate: 74, cpu: 2.2},
		{sConsumeMult, cRawHand}: {rate: 70, cpu: 3.1},
	}}
	got := map[string]string{}
	bounds := map[string]float64{}
	for _, tg := range r.targets() {
		got[tg.name] = tg.verdict()
		bounds[tg.name] = tg.bound
	}
	want := map[string]string{
		"confirmed publish: leveret ≥ 1.3× amqp091-go":            "no (out of reach here)",
		"confirmed publish ≥ 0.95× leveret unconfirmed":           "no (out of reach here)",
		"consume, ack each: leveret ≥ 1.3× amqp091-go":            "no",
		"consume, ack multiple: leveret ≥ 1.3× amqp091-go":        "no (out of reach here)",
		"CPU/msg " + sPublish + ": leveret ≤ 0.5× amqp091-go":     "yes",
		"CPU/msg " + sConfirm + ": leveret ≤ 0.5× amqp091-go":     "yes",
		"CPU/msg " + sConsumeEach + ": leveret ≤ 0.5× amqp091-go": "yes",
		"CPU/msg " + sConsumeMult + ": leveret ≤ 0.5× amqp091-go": "no (out of reach here)",
	}
	assert.Equal(t, want, got)
	require.Contains(t, bounds, "CPU/msg "+sConsumeMult+": leveret ≤ 0.5× amqp091-go")
	// The consume CPU floor is the handoff ceiling, not the inline one.
	assert.InDelta(t, 3.1/5.5, bounds["CPU/msg "+sConsumeMult+": leveret ≤ 0.5× amqp091-go"], 1e-9)
	assert.InDelta(t, 72.0/100, bounds["confirmed publish ≥ 0.95× leveret unconfirmed"], 1e-9)
}

// Without ceiling samples a miss is a plain miss.
func TestTargetVerdictWithoutCeiling(t *testing.T) {
	r := &report{cfg: &config{}, stats: map[key]stat{
		{sConfirm, cLeveret}: {rate: 70},
		{sConfirm, cAMQP}:    {rate: 60},
	}}
	ts := r.targets()
	require.Len(t, ts, 1)
	assert.Equal(t, "no", ts[0].verdict())
	assert.Zero(t, ts[0].bound)
}

// TestLargeSection: large-bodies samples get their own table, in MiB/s and
// CPU ms per MiB, and stay out of the per-message tables and the chart.
func TestLargeSection(t *testing.T) {
	cfg := &config{rounds: 1}
	mib := 1 << 20
	samples := []sample{
		{scenario: sPublish, client: cLeveret, ops: 1000, cost: cost{elapsed: time.Second, cpu: time.Millisecond}},
		// 800 MiB in 0.8 s with 0.4 s of CPU: 1000 MiB/s, 0.5 ms per MiB.
		{scenario: largeConfirmScenario(mib), client: cLeveret, ops: 800, cost: cost{elapsed: 800 * time.Millisecond, cpu: 400 * time.Millisecond}},
		// 500 MiB/s, 1 ms per MiB.
		{scenario: largeConfirmScenario(mib), client: cAMQP, ops: 800, cost: cost{elapsed: 1600 * time.Millisecond, cpu: 800 * time.Millisecond}},
	}
	r := summarize(cfg, samples)
	assert.Equal(t, []string{sPublish}, r.scenarios)
	assert.Equal(t, []string{largeConfirmScenario(mib)}, r.large)
	var b strings.Builder
	r.largeSection(&b)
	assert.Contains(t, b.String(), "| confirmed publish, window 100, 1 MiB × 800 | amqp091-go | 500 | — | 1.00 | — |")
	assert.Contains(t, b.String(), "| confirmed publish, window 100, 1 MiB × 800 | leveret | 1000 | 2.00× | 0.50 | 0.50× |")
	assert.NotContains(t, r.markdown(), "large-confirm") // titled, never the raw scenario name
}

// TestFindBroker: the broker's CPU comes from the beam.smp listening on
// the benchmark's port, which the test broker is. (Needs the broker, like
// the rest of the bench module's tests.)
func TestFindBroker(t *testing.T) {
	brokerPID.Store(0)
	findBroker(5672)
	pid := brokerPID.Load()
	require.NotZero(t, pid, "no beam.smp listening on 5672")
	t.Cleanup(func() { brokerPID.Store(0) })
	require.Greater(t, brokerCPU(), time.Duration(0))
	findBroker(1) // nothing listens on port 1: the PID found stays
	require.Equal(t, pid, brokerPID.Load())
}
