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

// remove takes tag out; it reports false if tag was not outstanding. If
// record is not nil, the tag removed is appended to it.
func (s *tagSet) remove(tag uint64, record *[]uint64) bool {
	i, found := slices.BinarySearch(s.tags[s.head:], tag)
	i += s.head
	if !found || s.done[i] {
		return false
	}
	s.done[i] = true
	if record != nil {
		*record = append(*record, tag)
	}
	s.compact()
	return true
}

// removeUpTo takes out every tag ≤ tag (every tag when tag is 0) and
// reports how many were outstanding. If record is not nil, the tags
// removed are appended to it.
func (s *tagSet) removeUpTo(tag uint64, record *[]uint64) int {
	removed := 0
	for i := s.head; i < len(s.tags); i++ {
		if tag != 0 && s.tags[i] > tag {
			break
		}
		if !s.done[i] {
			s.done[i] = true
			removed++
			if record != nil {
				*record = append(*record, s.tags[i])
			}
		}
	}
	s.compact()
	return removed
}

// noneUpTo reports that no tag ≤ tag is outstanding.
func (s *tagSet) noneUpTo(tag uint64) bool {
	return s.head == len(s.tags) || s.tags[s.head] > tag
}

// restore makes tags outstanding again (after a transaction that acked
// them was rolled back). It rebuilds the set: rollbacks are rare.
func (s *tagSet) restore(tags []uint64) {
	if len(tags) == 0 {
		return
	}
	all := make([]uint64, 0, len(s.tags)-s.head+len(tags))
	for i := s.head; i < len(s.tags); i++ {
		if !s.done[i] {
			all = append(all, s.tags[i])
		}
	}
	all = append(all, tags...)
	slices.Sort(all)
	all = slices.Compact(all)
	s.tags, s.done, s.head = all, make([]bool, len(all)), 0
}

func (s *tagSet) clear() { *s = tagSet{} }

// empty reports that no tag is outstanding.
func (s *tagSet) empty() bool { return s.head == len(s.tags) }

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
