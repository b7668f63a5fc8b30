package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// brokerURL is the default test broker (scripts/broker.sh up).
func brokerURL() string {
	if u := os.Getenv("AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/%2f"
}

// perf runs leveret-perf in-process with args, as the command line would,
// on queues of its own, and returns its output and summary.
func perf(t *testing.T, args ...string) (string, summary) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args = append([]string{"-queue", fmt.Sprintf("leveret-perf-test.%s.%08x", t.Name(), rand.Uint32())}, args...)
	cfg, err := parseFlags(args, os.Stderr)
	require.NoError(t, err)
	var out bytes.Buffer
	sum, err := run(ctx, cfg, &out)
	require.NoError(t, err, "output:\n%s", out.String())
	return out.String(), sum
}

// requireAddsUp checks the summary's books: every publish has one outcome,
// and (nothing lost) every confirmed message arrived, none twice unless a
// reconnect allows it.
func requireAddsUp(t *testing.T, s summary) {
	t.Helper()
	require.Equal(t, s.Sent, s.Confirmed+s.Nacked+s.Returned+s.Failed, "sent = confirmed + nacked + returned + failed: %+v", s)
	require.Zero(t, s.Lost, "lost: %+v", s)
	require.Equal(t, s.Confirmed+s.Duplicates, s.Received, "received = confirmed (+ duplicates): %+v", s)
}

// A short run on the test broker: the counts add up, every message
// arrives once, and -json prints progress lines and a summary that parse.
func TestRunCountsAddUpJSON(t *testing.T) {
	out, s := perf(t, "-uri", brokerURL(), "-producers", "2", "-consumers", "2", "-queues", "2",
		"-confirm", "50", "-count", "3000", "-duration", "0", "-size", "256", "-ack", "10", "-interval", "100ms", "-json")
	requireAddsUp(t, s)
	require.Equal(t, int64(6000), s.Sent)
	require.Equal(t, int64(6000), s.Confirmed)
	require.Zero(t, s.Duplicates)
	require.Equal(t, int64(6000), s.Latency.Count)
	require.Greater(t, s.Latency.Max, 0.0)
	var progress, summaries int
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var v map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &v), "line %q", sc.Text())
		switch v["type"] {
		case "progress":
			progress++
			require.Contains(t, v, "latency")
			require.Contains(t, v, "received_msg_s")
		case "summary":
			summaries++
			require.Equal(t, float64(6000), v["received"])
			require.Equal(t, float64(0), v["lost"])
		default:
			t.Fatalf("line of unknown type: %q", sc.Text())
		}
	}
	require.Equal(t, 1, summaries)
	require.Positive(t, progress)
}

// Unconfirmed publishing, auto-ack consumers, a quorum queue through a
// named exchange at a fixed rate: what was sent arrives; the text output
// has its progress and summary lines.
func TestRunNoConfirmsQuorumExchange(t *testing.T) {
	ex := fmt.Sprintf("leveret-perf-test.x.%08x", rand.Uint32())
	out, s := perf(t, "-uri", brokerURL(), "-queue-type", "quorum", "-exchange", ex, "-persistent",
		"-ack", "auto", "-rate", "2000", "-duration", "1500ms", "-size", "100", "-interval", "500ms")
	require.Zero(t, s.Confirmed, "no confirms asked for")
	require.Positive(t, s.Sent)
	require.InDelta(t, 3000, s.Sent, 600, "about -rate × -duration")
	require.Equal(t, s.Sent, s.Received)
	require.Zero(t, s.Lost)
	require.Contains(t, out, "msg/s")
	require.Contains(t, out, "summary:")
	require.Contains(t, out, "lost       0")
}

// Returns are counted: a mandatory publish through an exchange with no
// binding for its key comes back.
func TestRunCountsReturns(t *testing.T) {
	cfg, err := parseFlags([]string{"-uri", brokerURL(), "-consumers", "0", "-confirm", "10", "-mandatory", "-count", "50", "-duration", "0",
		"-queue", fmt.Sprintf("leveret-perf-test.r.%08x", rand.Uint32()), "-routing-key", "bound"}, os.Stderr)
	require.NoError(t, err)
	r := &runner{cfg: cfg, st: newStats(), seqs: newSeqTracker(1)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := r.dial(ctx, "returns")
	require.NoError(t, err)
	defer c.Close(context.Background())
	r.start = time.Now()
	// The default exchange routes by queue name; "bound" names no queue.
	r.produce(ctx, 0, c, "unused")
	s := r.summary()
	require.Equal(t, int64(50), s.Sent)
	require.Equal(t, int64(50), s.Returned)
	require.Equal(t, s.Sent, s.Confirmed+s.Nacked+s.Returned+s.Failed)
}

// The run survives its connections being closed by the broker twice
// (rabbitmqctl close_all_connections on the extra node): nothing
// confirmed is lost, and the reconnects are counted.
func TestRunSurvivesForcedCloses(t *testing.T) {
	node := "leveret2@" + shortHost(t)
	url := "amqp://guest:guest@127.0.0.1:5673/%2f"
	done := make(chan struct{})
	go func() { // owner: this test; exits after two closes or when the run ends
		defer close(done)
		for range 2 {
			time.Sleep(time.Second)
			out, err := exec.Command("rabbitmqctl", "-q", "-n", node, "close_all_connections", "leveret-perf test").CombinedOutput()
			if err != nil {
				t.Errorf("close_all_connections: %v: %s", err, out)
				return
			}
		}
	}()
	_, s := perf(t, "-uri", url, "-producers", "1", "-consumers", "1", "-confirm", "100", "-duration", "6s", "-size", "128", "-durable", "-persistent")
	<-done
	require.GreaterOrEqual(t, s.Reconnects, int64(6), "two closes, each of the admin, producer and consumer connections")
	requireAddsUp(t, s)
	t.Logf("sent %d, received %d, duplicates %d, reconnects %d", s.Sent, s.Received, s.Duplicates, s.Reconnects)
}

func shortHost(t *testing.T) string {
	h, err := os.Hostname()
	require.NoError(t, err)
	return strings.Split(h, ".")[0]
}

// A broker that cannot be reached is a clear error, soon.
func TestRunUnreachableBroker(t *testing.T) {
	cfg, err := parseFlags([]string{"-uri", "amqp://guest:guest@127.0.0.1:1/", "-connect-timeout", "500ms"}, os.Stderr)
	require.NoError(t, err)
	start := time.Now()
	_, err = run(context.Background(), cfg, &bytes.Buffer{})
	require.Error(t, err)
	require.Contains(t, err.Error(), "cannot reach the broker (amqp://guest:xxxxx@127.0.0.1:1/)")
	require.Less(t, time.Since(start), 10*time.Second)
}

// Bad flags are refused with a reason.
func TestFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-ack", "sometimes"}, {"-size", "8"}, {"-queue-type", "lazy"}, {"-queue-type", "stream", "-ack", "auto"},
		{"-producers", "0", "-consumers", "0"}, {"-duration", "0"}, {"-queues", "0"}, {"extra"},
	} {
		_, err := parseFlags(args, &bytes.Buffer{})
		require.Error(t, err, "%q", args)
	}
}
