package confirm

import "github.com/leveret-mq/leveret/ops"

// pending holds a channel's unsettled publishes in sequence order. It is a
// ring buffer: the publish numbered seq sits at offset seq-first from the
// front. An entry settled out of order (a single ack in the middle) stays,
// marked, until everything in front of it has settled; the front entry is
// therefore always unsettled.
//
// Settling a range costs the entries in that range, whatever the size of
// the window; an entry marked early is popped once, so the cost over a
// publisher's life is constant per publish. Not safe for concurrent use:
// the Publisher's mu guards it.
type pending struct {
	buf   []slot // len is 0 or a power of two
	head  int    // index in buf of the front entry
	n     int    // entries from the front to the newest, settled or not
	first uint64 // sequence number of the front entry (when n > 0)
	next  uint64 // sequence number the next publish gets
}

// slot is one publish awaiting its confirmation. settle is nil once the
// publish has settled.
type slot struct {
	settle func(Outcome, error)
	ret    *ops.Return  // basic.return received for this publish
	msg    *ops.Publish // with WithRepublish: a private copy, re-sent after a reconnect
}

func newPending() pending { return pending{next: 1} } // confirms count from 1

// push adds the next publish and returns its sequence number.
func (p *pending) push(settle func(Outcome, error)) uint64 {
	return p.pushSlot(slot{settle: settle})
}

// pushSlot adds s as the next publish and returns its sequence number.
func (p *pending) pushSlot(s slot) uint64 {
	if p.n == len(p.buf) {
		p.grow()
	}
	if p.n == 0 {
		p.first = p.next
	}
	p.buf[p.index(p.n)] = s
	p.n++
	p.next++
	return p.next - 1
}

func (p *pending) grow() {
	size := max(2*len(p.buf), 64)
	buf := make([]slot, size)
	for i := range p.n {
		buf[i] = p.buf[p.index(i)]
	}
	p.buf, p.head = buf, 0
}

func (p *pending) index(offset int) int { return (p.head + offset) & (len(p.buf) - 1) }

// dropNewest takes back the newest publish, numbered seq, which was never
// sent; it reports whether it was still there.
func (p *pending) dropNewest(seq uint64) bool {
	if p.n == 0 || seq != p.next-1 || p.buf[p.index(p.n-1)].settle == nil {
		return false
	}
	p.buf[p.index(p.n-1)] = slot{}
	p.n--
	p.next--
	p.popSettled()
	return true
}

// lowestOpen is the sequence number of the oldest unsettled publish, or
// next when none is unsettled.
func (p *pending) lowestOpen() uint64 {
	if p.n == 0 {
		return p.next
	}
	return p.first
}

// attach records a basic.return for the publish numbered seq.
func (p *pending) attach(seq uint64, r *ops.Return) {
	if s := p.at(seq); s != nil && s.settle != nil {
		s.ret = r
	}
}

func (p *pending) at(seq uint64) *slot {
	if p.n == 0 || seq < p.first || seq >= p.first+uint64(p.n) {
		return nil
	}
	return &p.buf[p.index(int(seq-p.first))]
}

// settle applies one confirmation: the publish numbered tag or, with
// multiple, every unsettled publish up to and including tag. It returns how
// many publishes it settled. Tags outside the window are ignored: they were
// settled already (or failed).
func (p *pending) settle(tag uint64, multiple bool, st Status) int {
	settled := 0
	if multiple {
		for p.n > 0 && p.first <= tag {
			s := &p.buf[p.head]
			if s.settle != nil {
				finish(s, st)
				settled++
			}
			p.popFront()
		}
	} else if s := p.at(tag); s != nil && s.settle != nil {
		finish(s, st)
		settled++
	}
	p.popSettled()
	return settled
}

// finish settles s with st, or Returned if the broker returned it.
func finish(s *slot, st Status) {
	o := Outcome{Status: st, Return: s.ret}
	if s.ret != nil {
		o.Status = Returned
	}
	s.settle(o, nil)
	*s = slot{}
}

// failAll fails every unsettled publish with err, empties the window and
// returns how many it failed.
func (p *pending) failAll(err error) int {
	failed := 0
	for p.n > 0 {
		if s := &p.buf[p.head]; s.settle != nil {
			s.settle(Outcome{}, err)
			failed++
		}
		p.popFront()
	}
	return failed
}

// takeUpTo removes the unsettled publishes numbered up to tag and returns
// them in order, unsettled.
func (p *pending) takeUpTo(tag uint64) []slot {
	var out []slot
	for p.n > 0 && p.first <= tag {
		if s := p.buf[p.head]; s.settle != nil {
			out = append(out, s)
		}
		p.popFront()
	}
	p.popSettled()
	return out
}

func (p *pending) popFront() {
	p.buf[p.head] = slot{}
	p.head = (p.head + 1) & (len(p.buf) - 1)
	p.n--
	p.first++
}

// popSettled restores the invariant that the front entry is unsettled.
func (p *pending) popSettled() {
	for p.n > 0 && p.buf[p.head].settle == nil {
		p.popFront()
	}
}
