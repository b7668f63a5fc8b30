package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

// defaultURL names the vhost "/" explicitly (%2f).
const defaultURL = "amqp://guest:guest@127.0.0.1:5672/%2f"

// opTimeout bounds every wait on the broker: generous, so that a slow
// machine does not fail a test, while a hang still ends.
const opTimeout = 30 * time.Second

func amqpURL() string {
	if u := os.Getenv("AMQP_URL"); u != "" {
		return u
	}
	return defaultURL
}

// redactedURL is amqpURL without its password, for messages.
func redactedURL() string {
	u, err := url.Parse(amqpURL())
	if err != nil {
		return "(unparsable AMQP_URL)"
	}
	return u.Redacted()
}

// urlWithPassword returns amqpURL with the password replaced.
func urlWithPassword(t *testing.T, password string) string {
	t.Helper()
	u, err := url.Parse(amqpURL())
	require.NoError(t, err)
	u.User = url.UserPassword(u.User.Username(), password)
	return u.String()
}

// testContext returns a context that ends after opTimeout or when the test's
// cleanups run, whichever comes first.
func testContext(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), opTimeout)
	t.Cleanup(cancel)
	return c
}

// dial connects to the broker and closes the client when the test ends.
func dial(t *testing.T, opts ...leveret.Option) *leveret.Client {
	t.Helper()
	c, err := leveret.Dial(testContext(t), amqpURL(), opts...)
	require.NoError(t, err, "dial %s", redactedURL())
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		assert.NoError(t, c.Close(cctx), "closing the test's client")
	})
	return c
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// uniqueName is a queue or exchange name unique to this test and run:
// "leveret-test.<test name>.<what>.<random>".
func uniqueName(t *testing.T, what string) string {
	return fmt.Sprintf("leveret-test.%s.%s.%08x", unsafeName.ReplaceAllString(t.Name(), "_"), what, rand.Uint32())
}

// uniqueNames returns n unique names for what.
func uniqueNames(t *testing.T, what string, n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = uniqueName(t, fmt.Sprintf("%s%d", what, i))
	}
	return names
}

// deleteAtEnd deletes queues and exchanges when the test ends, on a
// connection of its own, so that it works whatever the test did to its own.
func deleteAtEnd(t *testing.T, queues, exchanges []string) {
	t.Helper()
	t.Cleanup(func() { deleteEntities(t, queues, exchanges) })
}

func deleteEntities(t *testing.T, queues, exchanges []string) {
	t.Helper()
	cctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	c, err := leveret.Dial(cctx, amqpURL())
	if !assert.NoError(t, err, "dial for cleanup") {
		return
	}
	defer func() { assert.NoError(t, c.Close(cctx), "close after cleanup") }()
	// Queues first, then exchanges, all pipelined on one channel, which the
	// broker runs serially: RabbitMQ 3.10 crashes on concurrent deletes of
	// bound entities on different channels. A queue deleted while an exchange
	// it is bound to is being deleted can crash and be restarted (left
	// behind); two bound exchanges deleted at once crash the channel and
	// close the connection with 541 INTERNAL_ERROR.
	ch, err := c.Channel(cctx)
	if !assert.NoError(t, err, "channel for cleanup") {
		return
	}
	var ws []leveret.Waiter
	for _, q := range queues {
		ws = append(ws, ch.QueueDelete(ops.QueueDelete{Queue: q}))
	}
	for _, x := range exchanges {
		ws = append(ws, ch.ExchangeDelete(ops.ExchangeDelete{Exchange: x}))
	}
	assert.NoError(t, leveret.WaitAll(cctx, ws...), "cleanup deletes")
}

var ansiCodes = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)

// ctl runs rabbitmqctl quietly and returns its output without colour codes.
func ctl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := ctlErr(args...)
	require.NoError(t, err, "rabbitmqctl %s: %s", strings.Join(args, " "), out)
	return out
}

// ctlErr is ctl for callers that handle rabbitmqctl's failure themselves.
func ctlErr(args ...string) (string, error) {
	cctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := ctlCommand(args)
	cmd = append(cmd, "-q")
	out, err := exec.CommandContext(cctx, cmd[0], append(cmd[1:], args...)...).CombinedOutput()
	return ansiCodes.ReplaceAllString(string(out), ""), err
}

// ctlCommand is how to run rabbitmqctl with args against the test broker:
// $LEVERET_CTL, split on spaces, for a broker whose tools live elsewhere
// (`scripts/chroot-broker.sh ctl newest lnext` for a RabbitMQ 4.x node from
// its chroot; a "-n NODE" among the arguments still picks another node of
// it), or the host's rabbitmqctl. The 3.10 TLS node (ltls, made by
// scripts/broker.sh tls) is always asked with the host's tool.
func ctlCommand(args []string) []string {
	if len(args) >= 2 && args[0] == "-n" && strings.HasPrefix(args[1], "ltls@") {
		return []string{"rabbitmqctl"}
	}
	if c := strings.Fields(os.Getenv("LEVERET_CTL")); len(c) > 0 {
		return c
	}
	return []string{"rabbitmqctl"}
}

// ctlJSON runs rabbitmqctl with --formatter json and decodes its output into v.
func ctlJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out := ctl(t, append(args, "--formatter", "json")...)
	require.NoError(t, json.Unmarshal([]byte(out), v), "rabbitmqctl %s output: %s", strings.Join(args, " "), out)
}

// ctlTable is how rabbitmqctl's JSON renders an AMQP table: a list of
// [key, type, value] triples.
type ctlTable [][]any

// get returns the value for key, and whether it is there.
func (tb ctlTable) get(key string) (any, bool) {
	for _, kv := range tb {
		if len(kv) == 3 && kv[0] == key {
			return kv[2], true
		}
	}
	return nil, false
}

type queueInfo struct {
	Name      string   `json:"name"`
	Durable   bool     `json:"durable"`
	Type      string   `json:"type"`
	Arguments ctlTable `json:"arguments"`
}

// brokerQueues lists the broker's queues in the test vhost by name.
func brokerQueues(t *testing.T) map[string]queueInfo {
	t.Helper()
	var list []queueInfo
	ctlJSON(t, &list, "list_queues", "-p", testVhost(t), "name", "durable", "type", "arguments")
	m := make(map[string]queueInfo, len(list))
	for _, q := range list {
		m[q.Name] = q
	}
	return m
}

type bindingInfo struct {
	Source      string   `json:"source_name"`
	Destination string   `json:"destination_name"`
	Kind        string   `json:"destination_kind"`
	RoutingKey  string   `json:"routing_key"`
	Arguments   ctlTable `json:"arguments"`
}

// brokerBindings lists the bindings whose source or destination is in names.
func brokerBindings(t *testing.T, names ...string) []bindingInfo {
	t.Helper()
	var list []bindingInfo
	ctlJSON(t, &list, "list_bindings", "-p", testVhost(t),
		"source_name", "destination_name", "destination_kind", "routing_key", "arguments")
	var out []bindingInfo
	for _, b := range list {
		for _, n := range names {
			if b.Source == n || b.Destination == n {
				out = append(out, b)
				break
			}
		}
	}
	return out
}

// testVhost is the vhost named by AMQP_URL ("/" when the path is empty or "/").
func testVhost(t *testing.T) string {
	t.Helper()
	u, err := url.Parse(amqpURL())
	require.NoError(t, err)
	v := strings.TrimPrefix(u.Path, "/")
	if v == "" {
		return "/"
	}
	return v
}

type connInfo struct {
	Name             string   `json:"name"` // "client addr -> server addr": unique per connection
	ClientProperties ctlTable `json:"client_properties"`
	User             string   `json:"user"`           // only when asked for (findConnectionOn)
	AuthMechanism    string   `json:"auth_mechanism"` // only when asked for
}

// findConnection polls rabbitmqctl for up to 10 s until a connection with
// the given client-provided name shows up.
func findConnection(t *testing.T, name string) (connInfo, bool) {
	return findConnectionOn(t, nil, name)
}

// findConnectionOn is findConnection with rabbitmqctl options (such as
// "-n", node) and extra list_connections columns.
func findConnectionOn(t *testing.T, ctlOpts []string, name string, columns ...string) (connInfo, bool) {
	t.Helper()
	args := append(append(slices.Clone(ctlOpts), "list_connections", "name", "client_properties"), columns...)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var conns []connInfo
		ctlJSON(t, &conns, args...)
		for _, c := range conns {
			if v, ok := c.ClientProperties.get("connection_name"); ok && v == name {
				return c, true
			}
		}
		if time.Now().After(deadline) {
			return connInfo{}, false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// connectionPID returns the pid of the connection with the given
// client-provided name, in the form close_connection takes
// ("<rabbit@host.N.N.N>"; the JSON formatter prints an unusable "#PID<...>").
// It is "" if there is no such connection.
func connectionPID(t *testing.T, name string) string {
	t.Helper()
	conn, ok := findConnection(t, name)
	if !ok {
		return ""
	}
	for _, line := range strings.Split(ctl(t, "list_connections", "--no-table-headers", "pid", "name"), "\n") {
		if pid, cname, ok := strings.Cut(line, "\t"); ok && cname == conn.Name {
			return pid
		}
	}
	return ""
}

// settleGoroutines polls for up to 2 s until runtime.NumGoroutine() is at
// most base, and returns the last count.
func settleGoroutines(base int) int {
	deadline := time.Now().Add(2 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= base || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// requireGoroutinesBack asserts that the goroutine count returns to base.
func requireGoroutinesBack(t *testing.T, base int, what string) {
	t.Helper()
	n := settleGoroutines(base)
	if n > base {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		require.LessOrEqualf(t, n, base, "goroutines after %s: %d, before: %d\n%s", what, n, base, buf)
	}
}

// requireSettledNow asserts that a promise has already settled, without waiting.
func requireSettledNow(t *testing.T, w leveret.Waiter, what string) {
	t.Helper()
	select {
	case <-w.Done():
	default:
		require.Failf(t, "promise not settled at once", "%s: expected an immediate failure, the promise is still pending", what)
	}
}
