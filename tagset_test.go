package leveret

import "testing"

// TestTagSetNoneUpTo: an ack may be sent as "everything up to its tag"
// only when no lower tag is left outstanding.
func TestTagSetNoneUpTo(t *testing.T) {
	var s tagSet
	for tag := uint64(1); tag <= 4; tag++ {
		s.add(tag)
	}
	s.remove(2, nil)
	if s.noneUpTo(2) {
		t.Fatal("noneUpTo(2) with tag 1 outstanding")
	}
	s.remove(1, nil)
	if !s.noneUpTo(2) {
		t.Fatal("noneUpTo(2) false after 1 and 2 were acked")
	}
	if s.noneUpTo(3) {
		t.Fatal("noneUpTo(3) with tag 3 outstanding")
	}
	s.removeUpTo(4, nil)
	if !s.noneUpTo(100) {
		t.Fatal("noneUpTo on an empty set")
	}
}
