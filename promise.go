package leveret

import (
	"context"
	"errors"
	"reflect"
	"sync/atomic"
)

// ErrPending is what Err returns for a promise that has not settled yet.
var ErrPending = errors.New("amqp: promise not settled yet")

// Promise is the eventual result of an operation. It is settled exactly
// once, by the connection's goroutines, with a value or an error. Any number
// of goroutines may wait on it.
//
// The done channel is made only when someone waits before the promise
// settles: most publishes and acks are never waited on one by one, and
// they then cost no channel.
type Promise[T any] struct {
	state atomic.Uint32                 // pending, settling or settled
	done  atomic.Pointer[chan struct{}] // made by the first early waiter
	val   T
	err   error
}

const (
	pending uint32 = iota
	settling
	settledState
)

func newPromise[T any]() *Promise[T] { return &Promise[T]{} }

// settled returns a promise that is already settled.
func settled[T any](v T, err error) *Promise[T] {
	p := &Promise[T]{val: v, err: err}
	p.state.Store(settledState)
	return p
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// resolve settles p. The first call wins; later calls are ignored so that
// a completion racing with a failure cannot panic.
func (p *Promise[T]) resolve(v T, err error) {
	if !p.state.CompareAndSwap(pending, settling) {
		return
	}
	p.val, p.err = v, err
	p.state.Store(settledState)
	// A waiter that installed its channel before the store above is woken
	// here; one that installs it later sees settledState (both sides use
	// sequentially consistent atomics), so no wake-up is lost.
	if ch := p.done.Load(); ch != nil {
		close(*ch)
	}
}

func (p *Promise[T]) isSettled() bool { return p.state.Load() == settledState }

// Wait blocks until the promise settles or ctx ends. Giving up on ctx stops
// the wait, not the operation: the broker may still carry it out, and its
// reply is still read so the channel stays in step.
func (p *Promise[T]) Wait(ctx context.Context) (T, error) {
	if p.isSettled() {
		return p.val, p.err
	}
	select {
	case <-p.Done():
		return p.val, p.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// Done is closed once the promise has settled.
func (p *Promise[T]) Done() <-chan struct{} {
	if p.isSettled() {
		return closedChan
	}
	ch := p.done.Load()
	if ch == nil {
		made := make(chan struct{})
		if p.done.CompareAndSwap(nil, &made) {
			ch = &made
		} else {
			ch = p.done.Load()
		}
	}
	if p.isSettled() { // settled while the channel was installed: it may not be closed yet
		return closedChan
	}
	return *ch
}

// Err does not block: it is ErrPending until the promise settles, then the
// operation's error (nil on success).
func (p *Promise[T]) Err() error {
	if !p.isSettled() {
		return ErrPending
	}
	return p.err
}

// Value does not block: it returns the result and true once the promise has
// settled successfully, else the zero value and false.
func (p *Promise[T]) Value() (T, bool) {
	if !p.isSettled() {
		var zero T
		return zero, false
	}
	return p.val, p.err == nil
}

// Waiter is what WaitAll and WaitAny accept: any *Promise[T].
type Waiter interface {
	Done() <-chan struct{}
	Err() error
}

// WaitAll blocks until every promise has settled or ctx ends. It returns
// nil if all succeeded, ctx.Err() if ctx ended first, else every failed
// promise's error, in argument order, joined (errors.Join: one per line;
// errors.Is and errors.As match any of them, and a topology operation's
// error names its operation and entity, see OperationError). FirstError
// picks the first of them.
func WaitAll(ctx context.Context, ws ...Waiter) error {
	for _, w := range ws {
		select {
		case <-w.Done():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	var errs []error
	for _, w := range ws {
		if err := w.Err(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 1 {
		return errs[0] // not wrapped in a join of one
	}
	return errors.Join(errs...)
}

// FirstError is the first error WaitAll (or Collect) joined, or err itself
// if it joins none.
func FirstError(err error) error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		if errs := j.Unwrap(); len(errs) > 0 {
			return errs[0]
		}
	}
	return err
}

// WaitAny blocks until one of the promises settles or ctx ends, and returns
// its index and error. With no promises it returns -1 and ctx's error once
// ctx ends.
func WaitAny(ctx context.Context, ws ...Waiter) (int, error) {
	for i, w := range ws { // fast path: one is already settled
		select {
		case <-w.Done():
			return i, w.Err()
		default:
		}
	}
	cases := make([]reflect.SelectCase, 0, len(ws)+1)
	cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())})
	for _, w := range ws {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(w.Done())})
	}
	i, _, _ := reflect.Select(cases)
	if i == 0 {
		return -1, ctx.Err()
	}
	return i - 1, ws[i-1].Err()
}

// Collect waits for a slice of same-typed promises and returns their values
// in order. Like WaitAll, it waits for all of them and returns every error,
// joined in slice order.
func Collect[T any](ctx context.Context, ps []*Promise[T]) ([]T, error) {
	if err := WaitAll(ctx, Waiters(ps)...); err != nil {
		return nil, err
	}
	out := make([]T, len(ps))
	for i, p := range ps {
		out[i] = p.val
	}
	return out, nil
}

// Waiters converts a slice of same-typed promises for WaitAll and WaitAny.
func Waiters[T any](ps []*Promise[T]) []Waiter {
	ws := make([]Waiter, len(ps))
	for i, p := range ps {
		ws[i] = p
	}
	return ws
}

// NewPromise returns an unsettled promise and the function that settles it,
// for packages that build operations on top of leveret (confirm, tx, your
// own). The first call of settle wins; later calls are ignored. settle does
// not block and may be called from any goroutine.
func NewPromise[T any]() (*Promise[T], func(T, error)) {
	p := newPromise[T]()
	return p, p.resolve
}
