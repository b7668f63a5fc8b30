package tests

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// exampleTimeout bounds one `go run` of an example, compilation included.
const exampleTimeout = 60 * time.Second

// repoRoot walks up from the working directory to the directory holding go.mod.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	require.NoError(t, err)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		require.NotEqual(t, dir, parent, "no go.mod above the test's directory")
		dir = parent
	}
}

// runExample runs `go run -race ./examples/name args...` from the
// repository root against the test broker, requires exit code 0 and returns
// stdout. The race detector makes a data race in the example (or in the
// library under it) fail the run.
func runExample(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), exampleTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", append([]string{"run", "-race", "./examples/" + name}, args...)...)
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "AMQP_URL="+amqpURL())
	// If ctx kills `go run`, the example's own process may still hold the
	// pipes; stop waiting for them after a while.
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	require.NoError(t, err, "go run -race ./examples/%s %s\nstdout:\n%s\nstderr:\n%s",
		name, strings.Join(args, " "), stdout.String(), stderr.String())
	t.Logf("go run ./examples/%s %s:\n%s", name, strings.Join(args, " "), stdout.String())
	return stdout.String()
}

// atoi converts a regexp capture that matched \d+.
func atoi(t *testing.T, s string) int {
	t.Helper()
	v, err := strconv.Atoi(s)
	require.NoError(t, err)
	return v
}

// requireQueueGone asserts that the broker has no queue with this name.
func requireQueueGone(t *testing.T, name string) {
	t.Helper()
	_, ok := brokerQueues(t)[name]
	require.False(t, ok, "the example left queue %q behind", name)
}

func TestExampleHello(t *testing.T) {
	t.Parallel()
	out := runExample(t, "hello", "-n", "2")
	require.Equal(t, 2, strings.Count(out, `got "Hello, World!"`), out)
	require.Contains(t, out, "acknowledged 2 message(s)")
	require.Contains(t, out, "deleted the queue and the exchange")
	m := regexp.MustCompile(`and queue "([^"]+)"`).FindStringSubmatch(out)
	require.NotNil(t, m, "hello should name its queue")
	requireQueueGone(t, m[1])
}

func TestExampleOddEven(t *testing.T) {
	t.Parallel()
	const n = 12
	out := runExample(t, "oddeven", "-n", strconv.Itoa(n))
	lines := regexp.MustCompile(`(?m)^(odd|even) consumer got (\d+)$`).FindAllStringSubmatch(out, -1)
	require.Len(t, lines, n, "one line per message:\n%s", out)
	count := map[string]int{}
	for _, l := range lines {
		want := "odd"
		if atoi(t, l[2])%2 == 0 {
			want = "even"
		}
		require.Equal(t, want, l[1], "%s went to the wrong consumer", l[0])
		count[l[1]]++
	}
	require.Contains(t, out, fmt.Sprintf("all %d messages arrived at the right consumer (odd: %d, even: %d)", n, count["odd"], count["even"]))
	require.Contains(t, out, "deleted the queues and the exchange")
}

func TestExampleWorkQueue(t *testing.T) {
	t.Parallel()
	const n = 10
	out := runExample(t, "workqueue", "-n", strconv.Itoa(n), "-slow", "100ms")
	did := map[string]int{}
	for _, m := range regexp.MustCompile(`(?m)^(slow|fast) worker did (\d+) tasks$`).FindAllStringSubmatch(out, -1) {
		did[m[1]] = atoi(t, m[2])
	}
	require.Len(t, did, 2, "both workers should report a count:\n%s", out)
	require.Equal(t, n, did["slow"]+did["fast"], "every task done exactly once")
	require.Greater(t, did["fast"], did["slow"], "fair dispatch: the fast worker should do most")
	require.Equal(t, n, len(regexp.MustCompile(`(?m)^(slow|fast) worker finished task \d+$`).FindAllString(out, -1)))
	m := regexp.MustCompile(`(?m)^deleted queue (\S+) with 0 tasks left in it$`).FindStringSubmatch(out)
	require.NotNil(t, m, "workqueue should delete its durable queue, empty:\n%s", out)
	requireQueueGone(t, m[1])
}

// TestExampleWorkQueueSIGTERM: at SIGTERM the workers drain gracefully:
// every task a worker had received is finished and acknowledged (none
// fails to ack), the rest stay in the queue, and nothing is done twice.
func TestExampleWorkQueueSIGTERM(t *testing.T) {
	t.Parallel()
	const n = 20
	out := runExample(t, "workqueue", "-n", strconv.Itoa(n), "-slow", "100ms", "-sigterm-after", "4")
	require.Contains(t, out, "SIGTERM: draining the workers")
	require.NotContains(t, out, "could not acknowledge")
	did := 0
	for _, m := range regexp.MustCompile(`(?m)^(slow|fast) worker did (\d+) tasks$`).FindAllStringSubmatch(out, -1) {
		did += atoi(t, m[2])
	}
	finished := regexp.MustCompile(`(?m)^(?:slow|fast) worker finished (task \d+)$`).FindAllStringSubmatch(out, -1)
	seen := map[string]bool{}
	for _, f := range finished {
		require.False(t, seen[f[1]], "%s done twice:\n%s", f[1], out)
		seen[f[1]] = true
	}
	require.Equal(t, len(finished), did, "every finished task was acknowledged")
	m := regexp.MustCompile(`(?m)^deleted queue (\S+) with (\d+) tasks left in it$`).FindStringSubmatch(out)
	require.NotNil(t, m, "workqueue should delete its durable queue:\n%s", out)
	require.GreaterOrEqual(t, did, 4)
	require.Equal(t, n, did+atoi(t, m[2]), "every task was either done or left in the queue:\n%s", out)
	requireQueueGone(t, m[1])
}

func TestExampleTopics(t *testing.T) {
	t.Parallel()
	out := runExample(t, "topics", "-n", "1")
	for _, want := range []string{
		`queue bound with "kern.*"     got kern.info, kern.critical` + "\n",
		`queue bound with "*.critical" got kern.critical, app.critical` + "\n",
		`queue bound with "#"          got kern.info, kern.critical, app.critical, app.info, kern.disk.full, critical` + "\n",
		"every queue got exactly the keys its pattern matches",
		"deleted the queues and the exchange",
	} {
		require.Contains(t, out, want)
	}
}

func TestExamplePipeline(t *testing.T) {
	t.Parallel()
	out := runExample(t, "pipeline", "-n", "50")
	require.Regexp(t, `(?m)^declared 50 queues: issued in \S+, all done after \S+ \(\d+ per second\)$`, out)
	require.Regexp(t, `(?m)^deleted 50 queues: issued in \S+, all done after \S+ \(\d+ per second\)$`, out)
}

func TestExampleErrors(t *testing.T) {
	t.Parallel()
	out := runExample(t, "errors", "-n", "2")
	for _, want := range []string{
		"406 PRECONDITION_FAILED",
		"errors.Is(err, leveret.ErrPreconditionFailed) = true",
		"code 406 (PRECONDITION_FAILED)",
		"inequivalent arg 'x-message-ttl'",
		"the first declare and the passive declare issued behind the failure both succeeded",
		"operation 2 behind it: queue.declare ", // the error names its operation and queue
		"amqp: operation not executed: amqp: channel closed: 404 NOT_FOUND",
		"errors.Is(err, leveret.ErrNotFound) = true",
		"code 404 (NOT_FOUND)",
		`client-level publish and get: "still here"`,
		"a new channel works",
		"client error: <nil>",
	} {
		require.Contains(t, out, want)
	}
	require.NotContains(t, out, "operation 3 behind it", "-n 2 issues two operations behind the publish")
}
