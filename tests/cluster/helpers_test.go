// Package cluster runs leveret against a real 3-node RabbitMQ cluster
// started by scripts/cluster.sh: RabbitMQ 3.10 (nodes lc1, lc2, lc3 on AMQP
// ports 5681, 5682, 5683) or, with LEVERET_CLUSTER set to a 4.x series of
// scripts/chroot-broker.sh (4.0, newest), that series with its next
// defaults (nodes lx1, lx2, lx3 on 5685, 5686, 5687; metadata in Khepri
// where the series keeps it there). The tests stop nodes with rabbitmqctl
// stop_app and start them again before they end.
package cluster

import (
	"cmp"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
)

// node is one member of the test cluster.
type node struct {
	name string // e.g. "lc1"
	port int
}

// series is the cluster's RabbitMQ series: 3.10, or $LEVERET_CLUSTER.
var series = cmp.Or(os.Getenv("LEVERET_CLUSTER"), "3.10")

var nodes = func() []node {
	if series == "3.10" {
		return []node{{"lc1", 5681}, {"lc2", 5682}, {"lc3", 5683}}
	}
	return []node{{"lx1", 5685}, {"lx2", 5686}, {"lx3", 5687}}
}()

// full is the Erlang node name, e.g. "lc1@vm".
func (n node) full() string {
	host, _ := os.Hostname()
	host, _, _ = strings.Cut(host, ".")
	return n.name + "@" + host
}

func (n node) url() string { return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", n.port) }

// urls lists the nodes' URLs starting with first and going round.
func urls(first int) []string {
	var out []string
	for i := range nodes {
		out = append(out, nodes[(first+i)%len(nodes)].url())
	}
	return out
}

// nodeOf names the node an Endpoint (a URL without password) points at.
func nodeOf(t *testing.T, endpoint string) node {
	t.Helper()
	u, err := url.Parse(endpoint)
	require.NoError(t, err, "endpoint %q", endpoint)
	for _, n := range nodes {
		if u.Port() == fmt.Sprint(n.port) {
			return n
		}
	}
	t.Fatalf("endpoint %q is not a cluster node", endpoint)
	return node{}
}

// repoRoot is the repository's top directory (this file is in tests/cluster).
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// clusterUp starts the cluster, or the app of a node a test stopped, and
// waits until all three nodes run in it (scripts/cluster.sh up).
func clusterUp() error {
	out, err := exec.Command(filepath.Join(repoRoot(), "scripts", "cluster.sh"), "up", series).CombinedOutput()
	if err != nil {
		return fmt.Errorf("scripts/cluster.sh up %s: %v\n%s", series, err, out)
	}
	return nil
}

// The cluster must be there: the tests fail, never skip, without it.
func TestMain(m *testing.M) {
	if err := clusterUp(); err != nil {
		fmt.Fprintln(os.Stderr, "cluster tests need the 3-node cluster:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// ctl runs rabbitmqctl against n and returns its output.
func ctl(n node, args ...string) (string, error) {
	if series != "3.10" {
		args = append([]string{filepath.Join(repoRoot(), "scripts", "chroot-broker.sh"), "ctl", series, n.name, "-q"}, args...)
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput() // it re-runs itself with sudo if need be
		return string(out), err
	}
	args = append([]string{"-n", n.full(), "-q"}, args...)
	if os.Getuid() != 0 {
		args = append([]string{"rabbitmqctl"}, args...)
		out, err := exec.Command("sudo", args...).CombinedOutput()
		return string(out), err
	}
	out, err := exec.Command("rabbitmqctl", args...).CombinedOutput()
	return string(out), err
}

// stopNode stops n's RabbitMQ application (its connections are closed with
// 320 "shutdown", its listener goes away) and, when the test ends, starts
// it again and waits for the whole cluster. It returns when stop_app has.
func stopNode(t *testing.T, n node) {
	t.Helper()
	t.Cleanup(func() {
		if err := clusterUp(); err != nil {
			t.Errorf("restarting %s: %v", n.name, err)
		}
	})
	out, err := ctl(n, "stop_app")
	require.NoError(t, err, "stop_app %s: %s", n.name, out)
}

// leaderOf names the node that leads quorum or stream queue q, asking via.
func leaderOf(t *testing.T, via node, q string) node {
	t.Helper()
	out, err := ctl(via, "list_queues", "--no-table-headers", "name", "leader")
	require.NoError(t, err, "list_queues: %s", out)
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == q {
			for _, n := range nodes {
				if f[1] == n.full() {
					return n
				}
			}
		}
	}
	t.Fatalf("no leader of %s in:\n%s", q, out)
	return node{}
}

// eventLog records a client's connection events with their arrival times.
type eventLog struct {
	mu     sync.Mutex
	events []leveret.Event
	at     []time.Time
	change chan struct{}
}

func newEventLog() *eventLog { return &eventLog{change: make(chan struct{}, 1)} }

func (l *eventLog) handle(e leveret.Event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.at = append(l.at, time.Now())
	l.mu.Unlock()
	select {
	case l.change <- struct{}{}:
	default:
	}
}

// of returns the events of kind so far, and when each arrived.
func (l *eventLog) of(kind leveret.EventKind) ([]leveret.Event, []time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []leveret.Event
	var at []time.Time
	for i, e := range l.events {
		if e.Kind == kind {
			out = append(out, e)
			at = append(at, l.at[i])
		}
	}
	return out, at
}

// wait waits up to within for the n-th event of kind.
func (l *eventLog) wait(t *testing.T, kind leveret.EventKind, n int, within time.Duration) (leveret.Event, time.Time) {
	t.Helper()
	deadline := time.After(within)
	for {
		if got, at := l.of(kind); len(got) >= n {
			return got[n-1], at[n-1]
		}
		select {
		case <-l.change:
		case <-deadline:
			l.mu.Lock()
			kinds := make([]string, 0, len(l.events))
			for _, e := range l.events {
				kinds = append(kinds, e.Kind.String())
			}
			l.mu.Unlock()
			t.Fatalf("%v event %d not reported within %v; events: %v", kind, n, within, kinds)
		}
	}
}

// connectedTo is the node of the latest EventConnected (events arrive on
// the client's dispatcher goroutine: the first may still be on its way
// when Dial returns).
func (l *eventLog) connectedTo(t *testing.T) node {
	t.Helper()
	l.wait(t, leveret.EventConnected, 1, 5*time.Second)
	got, _ := l.of(leveret.EventConnected)
	return nodeOf(t, got[len(got)-1].Endpoint)
}

// dialCluster dials the cluster's URLs, first node first, with an event
// log, and closes the client when the test ends.
func dialCluster(t *testing.T, ctx context.Context, first int, opts ...leveret.Option) (*leveret.Client, *eventLog) {
	t.Helper()
	log := newEventLog()
	opts = append([]leveret.Option{leveret.WithFailover(urls(first)...), leveret.WithEventHandler(log.handle)}, opts...)
	c, err := leveret.Dial(ctx, "", opts...)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Close(ctx)
	})
	return c, log
}

// uniqueName is a queue or exchange name for this test run.
func uniqueName(t *testing.T, what string) string {
	return fmt.Sprintf("leveret-cluster-%s-%s-%d", strings.ToLower(t.Name()), what, time.Now().UnixNano())
}
