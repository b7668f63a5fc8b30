package leveret

import (
	"log/slog"
	"sync"
)

// maxDispatchQueue bounds callbacks waiting for a slow handler. Past it,
// events are dropped, counted and logged at error level: the reader never
// waits for user code.
const maxDispatchQueue = 1 << 16

// dispatcher runs user callbacks (return and confirm handlers) one at a
// time, in the order the reader posted them, on one goroutine per client.
// The goroutine starts with the first callback and is joined by close.
type dispatcher struct {
	log *slog.Logger

	mu      sync.Mutex
	queue   []func()
	running bool
	closed  bool
	dropped uint64
	wake    chan struct{}
	wg      sync.WaitGroup
}

func newDispatcher(log *slog.Logger) *dispatcher {
	return &dispatcher{log: log, wake: make(chan struct{}, 1)}
}

// post queues fn without blocking.
func (d *dispatcher) post(fn func()) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	if len(d.queue) >= maxDispatchQueue {
		d.dropped++
		n := d.dropped
		d.mu.Unlock()
		d.log.Error("amqp: callback queue full; event dropped", "dropped", n)
		return
	}
	d.queue = append(d.queue, fn)
	if !d.running {
		d.running = true
		d.wg.Add(1)
		go d.run() // owner: dispatcher; exits when close is called.
	}
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *dispatcher) run() {
	defer d.wg.Done()
	for {
		d.mu.Lock()
		batch := d.queue
		d.queue = nil
		closed := d.closed
		d.mu.Unlock()
		for _, fn := range batch {
			fn()
		}
		if closed && len(batch) == 0 {
			return
		}
		if len(batch) == 0 {
			<-d.wake
		}
	}
}

// close runs what is queued, stops the goroutine and joins it.
func (d *dispatcher) close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
	d.wg.Wait()
}
