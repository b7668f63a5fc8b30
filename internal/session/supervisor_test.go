package session

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// conn is a connection the test ends at will.
type conn struct {
	n    int
	dead chan struct{}
	err  error
	once sync.Once
}

func newConn(n int) *conn { return &conn{n: n, dead: make(chan struct{})} }

func (c *conn) Join() { <-c.dead }
func (c *conn) Err() error {
	select {
	case <-c.dead:
		return c.err
	default:
		return nil
	}
}
func (c *conn) kill(err error) { c.once.Do(func() { c.err = err; close(c.dead) }) }

var (
	errForced = errors.New("320 CONNECTION_FORCED")
	errReset  = errors.New("connection reset")
	errFatal  = errors.New("403 ACCESS_REFUSED")
	errClosed = errors.New("closed by this client")
)

// owner records what the supervisor asked of it, in order.
type owner struct {
	mu      sync.Mutex
	log     []string
	rounds  []Round
	conns   []*conn
	dial    func(r Round) (retry bool, err error) // nil: every dial succeeds
	refuse  bool                                  // Up returns false
	ended   error
	endedAt int
}

func (o *owner) note(format string, args ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.log = append(o.log, fmt.Sprintf(format, args...))
}

func (o *owner) Down(c *conn, cause error) { o.note("down %d: %v", c.n, cause) }
func (o *owner) Dial(_ context.Context, r Round) (*conn, bool, error) {
	o.mu.Lock()
	o.rounds = append(o.rounds, r)
	dial := o.dial
	o.mu.Unlock()
	if dial != nil {
		if retry, err := dial(r); err != nil {
			o.note("dial failed: %v", err)
			return nil, retry, err
		}
	}
	o.mu.Lock()
	c := newConn(len(o.conns) + 2) // the first connection is 1
	o.conns = append(o.conns, c)
	o.mu.Unlock()
	o.note("dialled %d", c.n)
	return c, true, nil
}
func (o *owner) Up(c *conn) bool   { o.note("up %d", c.n); return !o.refuse }
func (o *owner) Recovered(c *conn) { o.note("recovered %d", c.n) }
func (o *owner) End(err error) {
	o.mu.Lock()
	o.ended = err
	o.mu.Unlock()
	o.note("end: %v", err)
}

// last returns the newest connection dialled.
func (o *owner) last() *conn {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.conns[len(o.conns)-1]
}

func (o *owner) snapshot() ([]string, []Round) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.log...), append([]Round(nil), o.rounds...)
}

// policy waits 100 ms before every round and gives up after limit rounds
// (0: never) since its last Reset.
type policy struct {
	limit        int
	next, resets int
	sinceReset   int
}

func (p *policy) Next() (time.Duration, bool) {
	if p.limit > 0 && p.sinceReset >= p.limit {
		return 0, false
	}
	p.next++
	p.sinceReset++
	return 100 * time.Millisecond, true
}
func (p *policy) Reset() { p.resets++; p.sinceReset = 0 }

// run starts a supervisor of first with steps inside the test's bubble and
// returns a stop function that, as the owner's Close does, ends its ctx
// and every connection, and waits for Run to return.
func run(o *owner, first *conn, cfg Config, steps ...Step[*conn]) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	s := New[*conn](ctx, o, first, cfg, steps...)
	done := make(chan struct{})
	go func() { // owner: the test; exits when Run returns
		defer close(done)
		s.Run()
	}()
	return func() {
		cancel()
		first.kill(errClosed)
		o.mu.Lock()
		conns := o.conns
		o.mu.Unlock()
		for _, c := range conns {
			c.kill(errClosed)
		}
		<-done
	}
}

func config(p *policy) Config {
	return Config{Policy: p, StableAfter: time.Second, Forced: func(err error) bool { return errors.Is(err, errForced) }}
}

func expectLog(t *testing.T, o *owner, want ...string) {
	t.Helper()
	got, _ := o.snapshot()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("log:\n got %q\nwant %q", got, want)
	}
}

// A connection the broker closes with 320 after its recovery is redialled
// at once, and the policy starts over.
func TestForcedLossRedialsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o, p := &owner{}, &policy{}
		first := newConn(1)
		stop := run(o, first, config(p))
		defer stop()
		time.Sleep(10 * time.Millisecond) // served briefly
		first.kill(errForced)
		synctest.Wait()
		expectLog(t, o, "down 1: 320 CONNECTION_FORCED", "dialled 2", "up 2", "recovered 2")
		_, rounds := o.snapshot()
		if rounds[0].Delay != 0 || rounds[0].Attempt != 1 || rounds[0].Prev != errForced {
			t.Fatalf("first round %+v: want at once, attempt 1, the loss's cause", rounds[0])
		}
		if p.resets != 1 || p.next != 0 {
			t.Fatalf("policy: %d resets, %d delays; want 1, 0", p.resets, p.next)
		}
	})
}

// A connection lost soon after its recovery, not forced, backs off and
// does not start the policy over; one that served StableAfter does.
func TestOnlyAServedConnectionStartsThePolicyOver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o, p := &owner{}, &policy{}
		first := newConn(1)
		stop := run(o, first, config(p))
		defer stop()
		time.Sleep(500 * time.Millisecond)
		first.kill(errReset)
		synctest.Wait()
		if p.resets != 0 || p.next != 1 {
			t.Fatalf("after half a second: %d resets, %d delays; want 0, 1", p.resets, p.next)
		}
		time.Sleep(200 * time.Millisecond) // the second connection is recovered after 100 ms
		time.Sleep(time.Second)            // and serves a second
		o.last().kill(errReset)
		synctest.Wait()
		if p.resets != 1 || p.next != 1 {
			t.Fatalf("after a second: %d resets, %d delays; want 1, 1", p.resets, p.next)
		}
		_, rounds := o.snapshot()
		if len(rounds) != 2 || rounds[0].Delay != 100*time.Millisecond || rounds[1].Delay != 0 {
			t.Fatalf("rounds %+v: want one after 100 ms, then one at once", rounds)
		}
	})
}

// The connection dies during the second step: the steps after it do not
// run, nothing is reported recovered, and the next round waits the
// policy's delay; the connection after it is recovered by every step.
func TestLossDuringAStepBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o, p := &owner{}, &policy{}
		var killed bool
		step := func(name string, kill bool) Step[*conn] {
			return StepFunc[*conn](func(c *conn) {
				o.note("%s on %d", name, c.n)
				if kill && !killed {
					killed = true
					c.kill(errReset)
				}
			})
		}
		first := newConn(1)
		stop := run(o, first, config(p), step("topology", false), step("consumers", true), step("channels", false))
		defer stop()
		time.Sleep(2 * time.Second)
		first.kill(errForced)
		time.Sleep(time.Second) // past the delay after the loss during a step
		synctest.Wait()
		expectLog(t, o,
			"down 1: 320 CONNECTION_FORCED", "dialled 2", "up 2", "topology on 2", "consumers on 2",
			"down 2: connection reset", "dialled 3", "up 3", "topology on 3", "consumers on 3", "channels on 3", "recovered 3")
		_, rounds := o.snapshot()
		if rounds[1].Delay != 100*time.Millisecond || rounds[1].Prev != errReset {
			t.Fatalf("the round after the loss during a step: %+v; want the policy's delay and the loss's cause", rounds[1])
		}
	})
}

// Failed rounds each wait the policy's delay, carry the error of the round
// before, and end the session when the policy gives up.
func TestPolicyGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o, p := &owner{}, &policy{limit: 3}
		o.dial = func(Round) (bool, error) { return true, errReset }
		first := newConn(1)
		stop := run(o, first, config(p))
		defer stop()
		first.kill(errReset) // right after the start: not served
		time.Sleep(time.Second)
		synctest.Wait()
		_, rounds := o.snapshot()
		if len(rounds) != 3 {
			t.Fatalf("%d rounds; want 3", len(rounds))
		}
		for i, r := range rounds {
			if r.Attempt != i+1 || r.Delay != 100*time.Millisecond {
				t.Fatalf("round %d: %+v", i, r)
			}
		}
		if rounds[1].Prev != errReset {
			t.Fatalf("round 2 carries %v; want the first round's error", rounds[1].Prev)
		}
		if !errors.Is(o.ended, errReset) || o.ended.Error() != "amqp: reconnect: the reconnect policy gave up: connection reset" {
			t.Fatalf("ended with %v", o.ended)
		}
	})
}

// A failure not worth retrying ends the session at once.
func TestFailureNotWorthRetryingEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o, p := &owner{}, &policy{}
		o.dial = func(Round) (bool, error) { return false, errFatal }
		first := newConn(1)
		stop := run(o, first, config(p))
		defer stop()
		first.kill(errReset)
		time.Sleep(time.Second)
		synctest.Wait()
		if _, rounds := o.snapshot(); len(rounds) != 1 || !errors.Is(o.ended, errFatal) {
			t.Fatalf("%d rounds, ended with %v; want 1 and the failure", len(rounds), o.ended)
		}
	})
}

// With no policy a lost connection ends the session with its cause.
func TestNoPolicyEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o := &owner{}
		first := newConn(1)
		stop := run(o, first, Config{})
		defer stop()
		first.kill(errReset)
		synctest.Wait()
		expectLog(t, o, "end: connection reset")
	})
}

// Close (the ctx's end) during a delay returns at once, without End; so
// does an Up that refuses the connection (Close came first).
func TestCloseStopsTheSupervisor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o, p := &owner{}, &policy{}
		first := newConn(1)
		stop := run(o, first, config(p))
		first.kill(errReset) // not served: waits 100 ms
		synctest.Wait()
		stop()
		expectLog(t, o, "down 1: connection reset")
	})
	synctest.Test(t, func(t *testing.T) {
		o, p := &owner{refuse: true}, &policy{}
		first := newConn(1)
		stop := run(o, first, config(p))
		defer stop()
		first.kill(errForced)
		synctest.Wait()
		expectLog(t, o, "down 1: 320 CONNECTION_FORCED", "dialled 2", "up 2")
	})
}
