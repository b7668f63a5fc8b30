package main

import (
	"context"
	"fmt"
	"strings"
)

// The large-bodies group: confirmed publishing and consuming of 64 KiB and
// 1 MiB messages, reported in MiB/s and client CPU per MiB rather than per
// message. Its samples go through runAll like the others (rounds, rotating
// order, medians) but get a table of their own.
const (
	gLarge = "large"

	// cLeveretClient is leveret's Client.Publish in the large group, next to
	// the confirm package (cLeveret): at these sizes the copy Client.Publish
	// keeps for re-sending is the part of its cost worth seeing.
	cLeveretClient = "leveret-client"

	largeWindow   = 100 // confirm window of the large confirmed publishes
	largePrefetch = 100 // prefetch of the large consumers
)

// largeSize is one body size of the group and how many messages a sample
// moves (about 500-800 MiB: long enough to dwarf set-up, short enough for
// three rounds of every client).
type largeSize struct {
	label          string
	body, messages int
}

func (cfg *config) largeSizes() []largeSize {
	sizes := []largeSize{{"64 KiB", 64 << 10, 8000}, {"1 MiB", 1 << 20, 800}}
	if cfg.quick {
		for i := range sizes {
			sizes[i].messages /= 10
		}
	}
	return sizes
}

// Scenario names carry the body size in bytes, which the report reads back.
func largeConfirmScenario(body int) string { return fmt.Sprintf("large-confirm-%d", body) }
func largeConsumeScenario(body int) string { return fmt.Sprintf("large-consume-%d", body) }

func isLarge(scenario string) bool { return strings.HasPrefix(scenario, "large-") }

// largeJobs is, per size, a confirmed-publish group (leveret's confirm
// package and Client.Publish, amqp091-go's deferred confirms, the raw
// ceiling) and a consume group acking each delivery.
func (cfg *config) largeJobs() [][]job {
	var groups [][]job
	for _, sz := range cfg.largeSizes() {
		l := load{messages: sz.messages, body: sz.body, window: largeWindow, prefetch: largePrefetch}
		pub, con, n := largeConfirmScenario(sz.body), largeConsumeScenario(sz.body), sz.messages
		consume := func(f func(context.Context, *env, load, int) (cost, error)) func(context.Context, *env) (cost, error) {
			return func(ctx context.Context, e *env) (cost, error) { return f(ctx, e, l, 1) }
		}
		groups = append(groups,
			[]job{
				{gLarge, pub, cLeveret, n, shaped(leveretConfirmPkg, l)},
				{gLarge, pub, cLeveretClient, n, shaped(leveretClientPublish, l)},
				{gLarge, pub, cAMQP, n, shaped(amqpConfirmed, l)},
				{gLarge, pub, cRaw, n, shaped(rawConfirmed, l)},
			},
			[]job{
				{gLarge, con, cLeveret, n, consume(leveretConsume)},
				{gLarge, con, cAMQP, n, consume(amqpConsume)},
				{gLarge, con, cRaw, n, func(ctx context.Context, e *env) (cost, error) { return rawConsume(ctx, e, l, 1, false) }},
			})
	}
	return groups
}

// largeTitle names a large scenario from the body size in its name.
func largeTitle(scenario string, sizes []largeSize) string {
	for _, sz := range sizes {
		switch scenario {
		case largeConfirmScenario(sz.body):
			return fmt.Sprintf("confirmed publish, window %d, %s × %d", largeWindow, sz.label, sz.messages)
		case largeConsumeScenario(sz.body):
			return fmt.Sprintf("consume, prefetch %d, ack each, %s × %d", largePrefetch, sz.label, sz.messages)
		}
	}
	return scenario
}

func largeBody(scenario string) int {
	var body int
	if _, err := fmt.Sscanf(scenario[strings.LastIndexByte(scenario, '-')+1:], "%d", &body); err != nil {
		return 0
	}
	return body
}

// largeSection is the group's table: per scenario and client, MiB/s and
// client CPU per MiB, each also over amqp091-go's.
func (r *report) largeSection(b *strings.Builder) {
	if len(r.large) == 0 {
		return
	}
	b.WriteString("\n### Large bodies\n\nMiB/s moved (higher is better) and the client process's CPU per MiB in ms " +
		"(user+sys, lower is better), medians. `leveret` publishes with the confirm package; `leveret-client` is " +
		"`Client.Publish`, which keeps a copy of each body until it is confirmed. The ceiling is the raw codec client.\n\n" +
		"| Scenario | client | MiB/s | ÷ amqp091-go | CPU ms per MiB | ÷ amqp091-go | broker cores |\n|---|---|--:|--:|--:|--:|--:|\n")
	sizes := r.cfg.largeSizes()
	for _, s := range r.large {
		mib := float64(largeBody(s)) / (1 << 20)
		base, hasBase := r.get(s, cAMQP)
		for _, c := range []string{cAMQP, cLeveret, cLeveretClient, cRaw} {
			st, ok := r.get(s, c)
			if !ok {
				continue
			}
			rate, cpu := st.rate*mib, st.cpu/mib/1000 // MiB/s; ms per MiB
			rateRatio, cpuRatio := "—", "—"
			if hasBase && c != cAMQP && base.rate > 0 && base.cpu > 0 {
				rateRatio, cpuRatio = fmtRatio(st.rate/base.rate), fmtRatio(st.cpu/base.cpu)
			}
			fmt.Fprintf(b, "| %s | %s | %.0f | %s | %.2f | %s | %.2f |\n", largeTitle(s, sizes), c, rate, rateRatio, cpu, cpuRatio, st.broker)
		}
	}
}
