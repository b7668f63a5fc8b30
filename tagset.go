package leveret

import "slices"

// tagSet holds a channel's unacknowledged delivery tags. Tags arrive in
// increasing order, so it is a sorted queue with a "done" mark per entry:
// acks near the front (the usual case) cost O(1), others a binary search,
// and the front advances past entries once they are done.
type tagSet struct {
	tags []uint64 // sorted, never rewritten in place except by compaction
	done []bool   // done[i] marks tags[i] acknowledged
	head int
}

func (s *tagSet) add(tag uint64) {
	s.tags = append(s.tags, tag)
	s.done = append(s.done, false)
}

// remove takes tag out; it reports false if tag was not outstanding.
func (s *tagSet) remove(tag uint64) bool {
	i, found := slices.BinarySearch(s.tags[s.head:], tag)
	i += s.head
	if !found || s.done[i] {
		return false
	}
	s.done[i] = true
	s.compact()
	return true
}

// removeUpTo takes out every tag ≤ tag (every tag when tag is 0) and
// reports how many were outstanding.
func (s *tagSet) removeUpTo(tag uint64) int {
	removed := 0
	for i := s.head; i < len(s.tags); i++ {
		if tag != 0 && s.tags[i] > tag {
			break
		}
		if !s.done[i] {
			s.done[i] = true
			removed++
		}
	}
	s.compact()
	return removed
}

func (s *tagSet) clear() { *s = tagSet{} }

func (s *tagSet) compact() {
	for s.head < len(s.tags) && s.done[s.head] {
		s.head++
	}
	switch {
	case s.head == len(s.tags):
		s.tags, s.done, s.head = s.tags[:0], s.done[:0], 0
	case s.head > 1024 && s.head > len(s.tags)/2:
		s.tags = append(s.tags[:0], s.tags[s.head:]...)
		s.done = append(s.done[:0], s.done[s.head:]...)
		s.head = 0
	}
}
