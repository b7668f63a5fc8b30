package tests

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/leveret-mq/leveret"
	"github.com/leveret-mq/leveret/ops"
)

// Acceptance tests of the connection's life: failed dials, Close, the
// connection name, and a close initiated by the broker.

// blackHole starts a TCP listener that accepts connections and never
// answers. It returns its address; the test's cleanup stops it.
func blackHole(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Add(1)
	go func() { // owner: blackHole's cleanup; exits when the listener is closed
		defer wg.Done()
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
		for _, nc := range conns {
			nc.Close()
		}
	})
	return l.Addr().String()
}

// freeAddr returns a local address where nothing listens.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// A failed Dial returns in time with a useful error and leaves no goroutine.
func TestDialFailures(t *testing.T) {
	const password = "not-the-password-a1b2c3"

	// dialFails dials url with a context of timeout, checks that Dial fails
	// before limit has passed and leaves no goroutine, and returns the error.
	dialFails := func(t *testing.T, url string, timeout, limit time.Duration, opts ...leveret.Option) error {
		t.Helper()
		ignore := goleak.IgnoreCurrent()
		base := runtime.NumGoroutine()
		dctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		start := time.Now()
		c, err := leveret.Dial(dctx, url, opts...)
		elapsed := time.Since(start)
		if c != nil {
			c.Close(context.Background())
		}
		require.Error(t, err)
		require.Nil(t, c)
		t.Logf("Dial failed after %v: %v", elapsed, err)
		assert.Less(t, elapsed, limit, "Dial must return within its deadline")
		assert.NotContains(t, err.Error(), password, "errors never contain the password")
		requireGoroutinesBack(t, base, "a failed Dial")
		goleak.VerifyNone(t, ignore)
		return err
	}

	t.Run("wrong password", func(t *testing.T) {
		err := dialFails(t, urlWithPassword(t, password), opTimeout, opTimeout)
		require.ErrorIs(t, err, leveret.ErrAccessRefused)
		var ce *leveret.ConnectionError
		require.ErrorAs(t, err, &ce)
		assert.Equal(t, leveret.ReplyCode(403), ce.Code)
	})

	t.Run("nothing listening", func(t *testing.T) {
		err := dialFails(t, "amqp://guest:"+password+"@"+freeAddr(t)+"/%2f", 2*time.Second, 3*time.Second)
		assert.ErrorIs(t, err, syscall.ECONNREFUSED)
	})

	t.Run("black hole", func(t *testing.T) {
		url := "amqp://guest:" + password + "@" + blackHole(t) + "/%2f"
		err := dialFails(t, url, time.Second, 2*time.Second)
		assert.True(t, errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded),
			"want a deadline error, got %v", err)
	})

	t.Run("black hole with connection timeout", func(t *testing.T) {
		url := "amqp://guest:" + password + "@" + blackHole(t) + "/%2f"
		err := dialFails(t, url, opTimeout, 2*time.Second, leveret.WithConnectionTimeout(time.Second), leveret.WithReconnect(nil))
		assert.True(t, errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded),
			"want a deadline error, got %v", err)
	})

	t.Run("missing vhost is not retried", func(t *testing.T) {
		u, err := url.Parse(amqpURL())
		require.NoError(t, err)
		u.Path, u.RawPath = "/leveret-no-such-vhost", ""
		err = dialFails(t, u.String(), opTimeout, 5*time.Second)
		var ce *leveret.ConnectionError
		require.ErrorAs(t, err, &ce)
		assert.Equal(t, leveret.ReplyCode(530), ce.Code, "%v", err)
	})

	t.Run("nothing listening, the policy gives up", func(t *testing.T) {
		url := "amqp://guest:" + password + "@" + freeAddr(t) + "/%2f"
		err := dialFails(t, url, opTimeout, 5*time.Second,
			leveret.WithReconnect(&leveret.Backoff{Initial: 10 * time.Millisecond, MaxAttempts: 3}))
		assert.ErrorIs(t, err, syscall.ECONNREFUSED)
		assert.Contains(t, err.Error(), "gave up")
	})

	t.Run("a URL and WithFailover together", func(t *testing.T) {
		err := dialFails(t, amqpURL(), opTimeout, time.Second, leveret.WithFailover(amqpURL()))
		assert.Contains(t, err.Error(), "both a URL and WithFailover")
	})
}

// TestDialFailover: the endpoints are tried in order; with the first two
// dead (nothing listening, then a black hole bounded by the connection
// timeout), Dial reaches the third, the live broker.
func TestDialFailover(t *testing.T) {
	dead := "amqp://guest:guest@" + freeAddr(t) + "/%2f"
	hole := "amqp://guest:guest@" + blackHole(t) + "/%2f"
	start := time.Now()
	c, err := leveret.Dial(testContext(t), "", leveret.WithFailover(dead, hole, amqpURL()),
		leveret.WithConnectionTimeout(500*time.Millisecond))
	require.NoError(t, err)
	t.Logf("connected to the third endpoint after %v", time.Since(start))
	defer c.Close(testContext(t))
	_, err = c.QueueDeclare(ops.QueueDeclare{Exclusive: true}).Wait(testContext(t))
	require.NoError(t, err)
}

// TestDialRetriesUntilTheBrokerAnswers: a broker that starts listening
// while Dial retries is reached without the caller retrying.
func TestDialRetriesUntilTheBrokerAnswers(t *testing.T) {
	addr := freeAddr(t)
	proxyUp := make(chan struct{})
	go func() { // owner: this test; exits after relaying one connection.
		defer close(proxyUp)
		time.Sleep(300 * time.Millisecond) // Dial's first attempts are refused
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return
		}
		defer l.Close()
		in, err := l.Accept()
		if err != nil {
			return
		}
		u, _ := url.Parse(amqpURL())
		out, err := net.Dial("tcp", u.Host)
		if err != nil {
			in.Close()
			return
		}
		go func() { io.Copy(out, in); out.Close() }() // owner: this relay; exits when in closes.
		io.Copy(in, out)
		in.Close()
	}()
	c, err := leveret.Dial(testContext(t), "amqp://guest:guest@"+addr+"/%2f")
	require.NoError(t, err)
	_, err = c.QueueDeclare(ops.QueueDeclare{Exclusive: true}).Wait(testContext(t))
	require.NoError(t, err)
	require.NoError(t, c.Close(testContext(t)))
	<-proxyUp
}

// Close joins every goroutine, is idempotent, and everything after it
// fails with ErrClosed.
func TestCloseJoinsAndIsIdempotent(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	base := runtime.NumGoroutine()
	ctx := testContext(t)

	c, err := leveret.Dial(ctx, amqpURL())
	require.NoError(t, err)
	_, err = c.QueueDeclare(ops.QueueDeclare{Exclusive: true}).Wait(ctx)
	require.NoError(t, err)
	ch, err := c.Channel(ctx)
	require.NoError(t, err)
	_, err = ch.QueueDeclare(ops.QueueDeclare{Exclusive: true}).Wait(ctx)
	require.NoError(t, err)
	require.NoError(t, c.Err())

	require.NoError(t, c.Close(ctx))
	select {
	case <-c.Done():
	default:
		require.FailNow(t, "Done is not closed after Close returned")
	}
	require.ErrorIs(t, c.Err(), leveret.ErrClosed)
	requireGoroutinesBack(t, base, "Close")
	goleak.VerifyNone(t, ignore)

	require.NoError(t, c.Close(ctx), "second Close")

	p := c.QueueDeclare(ops.QueueDeclare{Queue: uniqueName(t, "late"), Durable: true})
	requireSettledNow(t, p, "client-level declare after Close")
	require.ErrorIs(t, p.Err(), leveret.ErrClosed)
	_, err = c.Channel(ctx)
	require.ErrorIs(t, err, leveret.ErrClosed)

	select {
	case <-ch.Done():
	default:
		require.FailNow(t, "the explicit channel did not end with the client")
	}
	require.ErrorIs(t, ch.Err(), leveret.ErrClosed)
	pc := ch.QueueDeclare(ops.QueueDeclare{Queue: uniqueName(t, "late"), Durable: true})
	requireSettledNow(t, pc, "channel declare after Close")
	require.ErrorIs(t, pc.Err(), leveret.ErrClosed)
	require.ErrorIs(t, ch.Send(ctx, ops.Publish{RoutingKey: "late"}), leveret.ErrClosed, "Send after Close")
	require.NoError(t, ch.Close(ctx), "closing a channel of a closed client")
	requireGoroutinesBack(t, base, "operations after Close")
}

// The name given with WithConnectionName shows in the broker's view.
func TestConnectionName(t *testing.T) {
	name := uniqueName(t, "conn")
	c := dial(t, leveret.WithConnectionName(name))
	conn, ok := findConnection(t, name)
	require.True(t, ok, "no connection named %q in rabbitmqctl list_connections client_properties", name)
	require.NotEmpty(t, connectionPID(t, name), "pid of connection %q", name)
	product, _ := conn.ClientProperties.get("product")
	assert.Equal(t, "leveret", product)
	version, _ := conn.ClientProperties.get("version")
	assert.Equal(t, leveret.Version, version)
	require.NoError(t, c.Err())
}

// With reconnecting off, a connection the broker closes (rabbitmqctl
// close_connection) ends the client with 320 CONNECTION_FORCED; pending and later operations fail with that
// connection error, nothing pending is reported as a success, and Close
// still returns and joins.
func TestBrokerClosesConnection(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	base := runtime.NumGoroutine()
	ctx := testContext(t)
	name := uniqueName(t, "conn")

	c, err := leveret.Dial(ctx, amqpURL(), leveret.WithConnectionName(name), leveret.WithReconnect(nil))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close(context.Background()) }) // if the test stops early
	ch, err := c.Channel(ctx)
	require.NoError(t, err)
	pid := connectionPID(t, name)
	require.NotEmpty(t, pid, "connection %q not found", name)

	// A goroutine keeps a window of declares in flight until the connection
	// ends, so some are pending when the broker closes it. A small window
	// matters: with thousands queued, the broker's channel cannot stop within
	// its 3 s termination timeout and RabbitMQ resets the TCP connection
	// instead of sending connection.close. The queues are exclusive: they go
	// with the connection.
	const window = 16
	var ps []*leveret.Promise[ops.QueueDeclareOk]
	loopDone := make(chan struct{})
	go func() { // owner: this test; exits once the connection has ended
		defer close(loopDone)
		for {
			if len(ps) >= window {
				ps[len(ps)-window].Wait(ctx)
			}
			select {
			case <-c.Done():
				return
			case <-ctx.Done():
				return
			default:
			}
			ps = append(ps, c.QueueDeclare(ops.QueueDeclare{Exclusive: true}))
		}
	}()
	time.Sleep(100 * time.Millisecond) // let the window fill

	closeStart := time.Now()
	out, err := ctlErr("close_connection", pid, "test reason")
	require.NoError(t, err, "rabbitmqctl close_connection: %s", out)
	t.Logf("close_connection returned after %v", time.Since(closeStart))

	select {
	case <-c.Done():
	case <-ctx.Done():
		require.FailNow(t, "Done did not close after the broker closed the connection")
	}
	var ce *leveret.ConnectionError
	require.ErrorAs(t, c.Err(), &ce)
	assert.Equal(t, leveret.ReplyCode(320), ce.Code)
	assert.Contains(t, ce.Text, "test reason")
	require.ErrorIs(t, c.Err(), leveret.ErrConnectionForced)

	<-loopDone
	succeeded, failed := 0, 0
	for i, p := range ps {
		ok, err := p.Wait(ctx)
		if err == nil {
			require.NotEmpty(t, ok.Queue)
			succeeded++
			continue
		}
		failed++
		require.ErrorIs(t, err, leveret.ErrConnectionForced, "declare %d", i)
		require.ErrorAs(t, err, new(*leveret.ConnectionError), "declare %d", i)
		require.NotErrorIs(t, err, leveret.ErrNotExecuted, "declare %d", i)
	}
	t.Logf("%d declares issued: %d completed before the close, %d failed with the connection error", len(ps), succeeded, failed)
	require.NotZero(t, succeeded, "the loop ran")
	require.NotZero(t, failed, "declares still pending when the broker closed the connection")

	select {
	case <-ch.Done():
	case <-ctx.Done():
		require.FailNow(t, "the explicit channel did not end with the connection")
	}
	require.ErrorIs(t, ch.Err(), leveret.ErrConnectionForced)

	late := c.QueueDeclare(ops.QueueDeclare{Queue: uniqueName(t, "late"), Durable: true})
	requireSettledNow(t, late, "client-level declare after the broker closed")
	require.ErrorIs(t, late.Err(), leveret.ErrConnectionForced)
	require.ErrorAs(t, late.Err(), new(*leveret.ConnectionError))
	lateCh := ch.QueueDeclare(ops.QueueDeclare{Queue: uniqueName(t, "late"), Durable: true})
	requireSettledNow(t, lateCh, "channel declare after the broker closed")
	require.ErrorIs(t, lateCh.Err(), leveret.ErrConnectionForced)
	_, err = c.Channel(ctx)
	require.ErrorIs(t, err, leveret.ErrConnectionForced)

	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, c.Close(cctx))
	require.ErrorIs(t, c.Err(), leveret.ErrConnectionForced, "Close keeps the reason the connection ended")
	requireGoroutinesBack(t, base, "the broker's close and Close")
	goleak.VerifyNone(t, ignore)
}

// TestMechanismsAgainstBroker: PLAIN and AMQPLAIN each authenticate with
// RabbitMQ, which reports the mechanism the connection used. (EXTERNAL
// needs the TLS listener, which the test broker does not run yet; the
// fake-server TestMechanismChoice covers the choice and the errors.)
func TestMechanismsAgainstBroker(t *testing.T) {
	for _, mech := range []string{"PLAIN", "AMQPLAIN"} {
		t.Run(mech, func(t *testing.T) {
			name := uniqueName(t, "conn")
			c := dial(t, leveret.WithMechanisms(mech), leveret.WithConnectionName(name))
			conn, ok := findConnection(t, name)
			require.True(t, ok, "connection %s not listed", name)
			var got string
			for _, line := range strings.Split(ctl(t, "list_connections", "--no-table-headers", "name", "auth_mechanism"), "\n") {
				if cname, m, ok := strings.Cut(line, "\t"); ok && cname == conn.Name {
					got = strings.TrimSpace(m)
				}
			}
			assert.Equal(t, mech, got)
			_, err := c.QueueDeclare(ops.QueueDeclare{Exclusive: true}).Wait(testContext(t))
			require.NoError(t, err)
		})
	}
}

// ANONYMOUS, with a URL that carries no credentials, logs in where the
// broker offers it (RabbitMQ 4.x, as its anonymous_login_user). RabbitMQ
// 3.10 does not offer it: Dial says so at once, and the test skips there.
func TestMechanismAnonymousAgainstBroker(t *testing.T) {
	u, err := url.Parse(amqpURL())
	require.NoError(t, err)
	u.User = nil
	name := uniqueName(t, "conn")
	ctx := testContext(t)
	c, err := leveret.Dial(ctx, u.String(), leveret.WithMechanisms("ANONYMOUS"), leveret.WithConnectionName(name), leveret.WithReconnect(nil))
	if err != nil && strings.Contains(err.Error(), "no SASL mechanism both sides allow") {
		t.Skipf("this broker does not offer ANONYMOUS (RabbitMQ 3.10; 4.x does): %v", err)
	}
	require.NoError(t, err)
	defer c.Close(context.Background())
	conn, ok := findConnectionOn(t, nil, name, "auth_mechanism")
	require.True(t, ok, "connection %s not listed", name)
	require.Equal(t, "ANONYMOUS", conn.AuthMechanism)
	_, err = c.QueueDeclare(ops.QueueDeclare{Exclusive: true}).Wait(ctx)
	require.NoError(t, err)
}
