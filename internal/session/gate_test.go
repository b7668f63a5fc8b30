package session

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

// Operations parked while offline run in the order they parked once the
// next connection is ready; one that saw an older connection when a newer
// one is ready runs at once.
func TestGateParksInOrder(t *testing.T) {
	first := newConn(1)
	g := NewGate(first, true)
	var ran []string
	park := func(name string, seen *conn) {
		g.RetryLater(seen, errReset, func() { ran = append(ran, name) }, func(err error) { t.Errorf("%s failed: %v", name, err) })
	}
	first.kill(errReset)
	park("a", first) // the supervisor has not noticed yet: the current one is the one it saw
	g.Offline(first)
	if _, ok := g.Current(); ok {
		t.Fatal("a connection is current while offline")
	}
	park("b", first)
	if len(ran) != 0 {
		t.Fatalf("ran %v while offline", ran)
	}
	second := newConn(2)
	g.Ready(second)
	park("c", first) // saw the old one; the new one is ready
	if fmt.Sprint(ran) != "[a b c]" {
		t.Fatalf("ran %v", ran)
	}
	if c, ok := g.Current(); !ok || c != second {
		t.Fatalf("current %v", c)
	}
}

// Without reconnecting nothing parks; after End, parked operations fail
// with the end's error, and so does any later one.
func TestGateFailsWhatWillNotRun(t *testing.T) {
	first := newConn(1)
	none := NewGate(first, false)
	var got error
	none.RetryLater(first, errReset, func() { t.Error("ran without reconnecting") }, func(err error) { got = err })
	if got != errReset || none.Reconnects() {
		t.Fatalf("got %v, reconnects %v", got, none.Reconnects())
	}

	g := NewGate(first, true)
	g.Offline(first)
	var failed []error
	g.RetryLater(first, errReset, func() { t.Error("ran after the end") }, func(err error) { failed = append(failed, err) })
	g.End(errClosed)
	g.End(errFatal) // only the first counts
	g.RetryLater(first, errReset, func() { t.Error("ran after the end") }, func(err error) { failed = append(failed, err) })
	g.Ready(newConn(2)) // after End: nothing
	if len(failed) != 2 || failed[0] != errClosed || failed[1] != errClosed || g.Reconnects() {
		t.Fatalf("failed with %v; reconnects %v", failed, g.Reconnects())
	}
	if _, ok := g.Current(); ok {
		t.Fatal("Ready after End installed a connection")
	}
}

// WaitLive waits while offline, notices a dead current connection by
// itself, and returns at Ready, at ctx's end or at the session's end.
func TestGateWaitLive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		first := newConn(1)
		g := NewGate(first, true)
		if c, err := g.WaitLive(context.Background()); c != first || err != nil {
			t.Fatalf("WaitLive on a live connection: %v, %v", c, err)
		}
		first.kill(errReset) // nobody called Offline yet
		got := make(chan *conn, 1)
		go func() { // owner: this test; exits when WaitLive returns
			c, _ := g.WaitLive(context.Background())
			got <- c
		}()
		synctest.Wait()
		if len(got) != 0 {
			t.Fatal("WaitLive returned a dead connection")
		}
		second := newConn(2)
		g.Ready(second)
		if c := <-got; c != second {
			t.Fatalf("WaitLive returned %v", c)
		}

		g.Offline(second)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := g.WaitLive(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WaitLive under an ended ctx: %v", err)
		}
		go func() { // owner: this test; ends the session while WaitLive waits
			time.Sleep(time.Second)
			g.End(errClosed)
		}()
		if _, err := g.WaitLive(context.Background()); err != errClosed {
			t.Fatalf("WaitLive after End: %v", err)
		}
	})
}

// Without reconnecting, WaitLive returns the dead connection: operations
// on it report its own error.
func TestGateWaitLiveWithoutReconnecting(t *testing.T) {
	first := newConn(1)
	g := NewGate(first, false)
	first.kill(errReset)
	g.Offline(first) // nothing to do without reconnecting
	if c, err := g.WaitLive(context.Background()); c != first || err != nil {
		t.Fatalf("WaitLive: %v, %v", c, err)
	}
}
