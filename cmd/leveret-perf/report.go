package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// progress is one interval's line: counters so far, rates over the
// interval, and the interval's latency.
type progress struct {
	Type string `json:"type"` // "progress"
	line
	SentRate      float64 `json:"sent_msg_s"`
	ConfirmedRate float64 `json:"confirmed_msg_s"`
	ReceivedRate  float64 `json:"received_msg_s"`
	SentMBs       float64 `json:"sent_mb_s"`
	ReceivedMBs   float64 `json:"received_mb_s"`
	Latency       Latency `json:"latency"`
}

// summary is the whole run.
type summary struct {
	Type string `json:"type"` // "summary"
	line
	SentRate     float64 `json:"sent_msg_s"`
	ReceivedRate float64 `json:"received_msg_s"`
	Latency      Latency `json:"latency"`
	Lost         int64   `json:"lost"`       // confirmed (or sent, without confirms) and never received
	Duplicates   int64   `json:"duplicates"` // received more than once
	Reconnects   int64   `json:"reconnects"` // connections lost and re-made, over all clients
}

type reporter struct {
	r    *runner
	out  io.Writer
	last line
	at   time.Time
}

func newReporter(r *runner, out io.Writer) *reporter {
	return &reporter{r: r, out: out, at: r.start}
}

// loop prints a progress line every interval until stop is closed.
func (rep *reporter) loop(stop <-chan struct{}) {
	t := time.NewTicker(rep.r.cfg.interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			rep.print(rep.progress(now))
		}
	}
}

func (rep *reporter) progress(now time.Time) progress {
	cur := rep.r.st.snapshot(now.Sub(rep.r.start))
	secs := now.Sub(rep.at).Seconds()
	p := progress{Type: "progress", line: cur, Latency: rep.r.st.takeInterval(),
		SentRate:      float64(cur.Sent-rep.last.Sent) / secs,
		ConfirmedRate: float64(cur.Confirmed-rep.last.Confirmed) / secs,
		ReceivedRate:  float64(cur.Received-rep.last.Received) / secs,
		SentMBs:       float64(cur.SentBytes-rep.last.SentBytes) / secs / 1e6,
		ReceivedMBs:   float64(cur.ReceivedBytes-rep.last.ReceivedBytes) / secs / 1e6}
	rep.last, rep.at = cur, now
	return p
}

func (rep *reporter) print(p progress) {
	if rep.r.cfg.json {
		json.NewEncoder(rep.out).Encode(p)
		return
	}
	fmt.Fprintf(rep.out, "%6.1fs  sent %8.0f msg/s %7.1f MB/s  confirmed %8.0f msg/s  nacked %d  returned %d  failed %d  received %8.0f msg/s %7.1f MB/s  latency p50 %s p95 %s p99 %s max %s\n",
		p.Elapsed, p.SentRate, p.SentMBs, p.ConfirmedRate, p.Nacked, p.Returned, p.Failed, p.ReceivedRate, p.ReceivedMBs,
		ms(p.Latency.P50, p.Latency.Count), ms(p.Latency.P95, p.Latency.Count), ms(p.Latency.P99, p.Latency.Count), ms(p.Latency.Max, p.Latency.Count))
}

func ms(v float64, n int64) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fms", v)
}

// final prints the summary.
func (rep *reporter) final(s summary) error {
	s.Type = "summary"
	if s.Elapsed > 0 {
		s.SentRate, s.ReceivedRate = float64(s.Sent)/s.Elapsed, float64(s.Received)/s.Elapsed
	}
	if rep.r.cfg.json {
		return json.NewEncoder(rep.out).Encode(s)
	}
	l := s.Latency
	_, err := fmt.Fprintf(rep.out, `summary: %.1fs
  sent       %d (%.0f msg/s)
  confirmed  %d   nacked %d   returned %d   failed %d
  received   %d (%.0f msg/s)
  latency    p50 %s  p95 %s  p99 %s  max %s  (%d samples)
  lost       %d   duplicates %d   reconnects %d
`, s.Elapsed, s.Sent, s.SentRate, s.Confirmed, s.Nacked, s.Returned, s.Failed, s.Received, s.ReceivedRate,
		ms(l.P50, l.Count), ms(l.P95, l.Count), ms(l.P99, l.Count), ms(l.Max, l.Count), l.Count, s.Lost, s.Duplicates, s.Reconnects)
	return err
}
