package main

import (
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/leveret-mq/leveret"
)

// stats are the run's counters, shared by every producer and consumer.
type stats struct {
	sentN, sentBytes         atomic.Int64
	confirmed, nacked        atomic.Int64
	returned, failed         atomic.Int64
	receivedN, receivedBytes atomic.Int64
	duplicates, foreign      atomic.Int64
	reconnects               atomic.Int64

	mu       sync.Mutex
	interval *hdrhistogram.Histogram // latency since the last progress line, µs
	total    *hdrhistogram.Histogram // latency over the run, µs
}

// Latencies from 1 µs to 10 min, 3 significant digits.
func newHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(10*time.Minute/time.Microsecond), 3)
}

func newStats() *stats { return &stats{interval: newHistogram(), total: newHistogram()} }

func (s *stats) sent(n int) {
	s.sentN.Add(1)
	s.sentBytes.Add(int64(n))
}

// received counts a delivery and its publish-to-consume latency.
func (s *stats) received(n int, latencyNs int64) {
	s.receivedN.Add(1)
	s.receivedBytes.Add(int64(n))
	us := max(latencyNs/1000, 1) // clocks of one machine: never below 1 µs
	s.mu.Lock()
	s.interval.RecordValue(us) // a value past 10 min is refused, not clamped
	s.total.RecordValue(us)
	s.mu.Unlock()
}

// event counts reconnects of any of the run's clients.
func (s *stats) event(e leveret.Event) {
	if e.Kind == leveret.EventDisconnected {
		s.reconnects.Add(1)
	}
}

// Latency is a latency summary in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P95   float64 `json:"p95_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

func latencyOf(h *hdrhistogram.Histogram) Latency {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Latency{Count: h.TotalCount(), P50: ms(h.ValueAtQuantile(50)), P95: ms(h.ValueAtQuantile(95)),
		P99: ms(h.ValueAtQuantile(99)), Max: ms(h.Max())}
}

// takeInterval returns the interval's latency and starts a new interval.
func (s *stats) takeInterval() Latency {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := latencyOf(s.interval)
	s.interval.Reset()
	return l
}

func (s *stats) totalLatency() Latency {
	s.mu.Lock()
	defer s.mu.Unlock()
	return latencyOf(s.total)
}

// line is the counters at one moment.
type line struct {
	Elapsed       float64 `json:"elapsed_s"`
	Sent          int64   `json:"sent"`
	Confirmed     int64   `json:"confirmed"`
	Nacked        int64   `json:"nacked"`
	Returned      int64   `json:"returned"`
	Failed        int64   `json:"failed"`
	Received      int64   `json:"received"`
	SentBytes     int64   `json:"sent_bytes"`
	ReceivedBytes int64   `json:"received_bytes"`
}

func (s *stats) snapshot(elapsed time.Duration) line {
	return line{Elapsed: elapsed.Seconds(), Sent: s.sentN.Load(), Confirmed: s.confirmed.Load(), Nacked: s.nacked.Load(),
		Returned: s.returned.Load(), Failed: s.failed.Load(), Received: s.receivedN.Load(),
		SentBytes: s.sentBytes.Load(), ReceivedBytes: s.receivedBytes.Load()}
}

// seqTracker records, per producer, which sequence numbers are expected
// (confirmed, or sent without confirms) and which arrived, as bit sets.
type seqTracker struct {
	mu       sync.Mutex
	expected []bitset
	got      []bitset
	missingN int64 // expected and not (yet) received
}

type bitset []uint64

func (b *bitset) set(i uint64) (was bool) {
	w := i / 64
	for uint64(len(*b)) <= w {
		*b = append(*b, 0)
	}
	was = (*b)[w]&(1<<(i%64)) != 0
	(*b)[w] |= 1 << (i % 64)
	return was
}

func (b bitset) has(i uint64) bool { w := i / 64; return w < uint64(len(b)) && b[w]&(1<<(i%64)) != 0 }

func newSeqTracker(producers int) *seqTracker {
	return &seqTracker{expected: make([]bitset, producers), got: make([]bitset, producers)}
}

// expect marks a message the broker took (its confirm, or its send).
func (t *seqTracker) expect(id int, seq uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.expected[id].set(seq) && !t.got[id].has(seq) {
		t.missingN++
	}
}

// receive marks an arrival and reports whether it had arrived before.
func (t *seqTracker) receive(id int, seq uint64) (duplicate bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.got[id].set(seq) {
		return true
	}
	if t.expected[id].has(seq) {
		t.missingN--
	}
	return false
}

// missing is how many expected messages have not arrived.
func (t *seqTracker) missing() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.missingN
}

// redacted lists the URLs without passwords.
func redacted(uris []string) string {
	out := make([]string, len(uris))
	for i, u := range uris {
		if p, err := url.Parse(u); err == nil {
			out[i] = p.Redacted()
		} else {
			out[i] = "(unparsable URL)"
		}
	}
	return strings.Join(out, ", ")
}
