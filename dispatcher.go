package leveret

import (
	"log/slog"
	"sync"
)

// dispatchBacklogWarn is the queue length at which a slow handler is
// reported. The queue itself is not bounded: dropping a confirmation or a
// close would leave promises unsettled, and blocking would stall the
// reader on user code. Confirm windows and prefetch bound it in practice.
const dispatchBacklogWarn = 1 << 16

// dispatcher runs user callbacks (return and confirm handlers) one at a
// time, in the order the reader posted them, on one goroutine per client.
// The goroutine starts with the first callback and is joined by close.
type dispatcher struct {
	log *slog.Logger

	mu      sync.Mutex
	queue   []func()
	running bool
	closed  bool
	warned  bool // backlog reported; reset when the queue drains
	wake    chan struct{}
	wg      sync.WaitGroup
}

func newDispatcher(log *slog.Logger) *dispatcher {
	return &dispatcher{log: log, wake: make(chan struct{}, 1)}
}

// post queues fn without blocking and wakes the dispatcher.
func (d *dispatcher) post(fn func()) {
	d.enqueue(fn)
	d.kick()
}

// postBatched queues fn without waking the dispatcher: the reader posts
// the events of one read this way and kicks once when it has handled them
// all (mux.Config.OnReadIdle), so a read full of confirmations costs one
// wake-up, not one each. Only the reader goroutine may use it.
func (d *dispatcher) postBatched(fn func()) { d.enqueue(fn) }

// kick wakes the dispatcher if anything is queued. It does not block.
func (d *dispatcher) kick() {
	d.mu.Lock()
	queued := len(d.queue) > 0
	d.mu.Unlock()
	if queued {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

func (d *dispatcher) enqueue(fn func()) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.queue = append(d.queue, fn)
	if len(d.queue) >= dispatchBacklogWarn && !d.warned {
		d.warned = true
		d.log.Warn("amqp: return/confirm/close handlers are falling behind", "queued", len(d.queue))
	}
	if !d.running {
		d.running = true
		d.wg.Add(1)
		go d.run() // owner: dispatcher; exits when close is called.
	}
	d.mu.Unlock()
}

func (d *dispatcher) run() {
	defer d.wg.Done()
	for {
		d.mu.Lock()
		batch := d.queue
		d.queue = nil
		d.warned = d.warned && len(batch) > 0
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
