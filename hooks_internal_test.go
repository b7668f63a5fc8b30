package leveret

import "testing"

// The confirm counter counts each publish once, whatever order and mix of
// single and multiple confirmations the broker sends, and nothing from an
// earlier link.
func TestConfirmCounter(t *testing.T) {
	var c confirmCounter
	steps := []struct {
		cf   Confirmation
		base uint64
		want int
	}{
		{Confirmation{DeliveryTag: 2}, 0, 1},                   // 2 alone, out of order
		{Confirmation{DeliveryTag: 1}, 0, 1},                   // 1: the floor moves past 2
		{Confirmation{DeliveryTag: 10}, 0, 1},                  // 10 alone
		{Confirmation{DeliveryTag: 8, Multiple: true}, 0, 6},   // 3..8
		{Confirmation{DeliveryTag: 10, Multiple: true}, 0, 1},  // 9 (10 was settled)
		{Confirmation{DeliveryTag: 10}, 0, 0},                  // again: nothing
		{Confirmation{DeliveryTag: 14}, 0, 1},                  // 11..13 unconfirmed, then the link drops
		{Confirmation{DeliveryTag: 22, Multiple: true}, 20, 2}, // new link from 21: 21, 22
	}
	for i, s := range steps {
		if got := c.settle(s.cf, s.base); got != s.want {
			t.Fatalf("step %d (%+v, base %d): settled %d, want %d", i, s.cf, s.base, got, s.want)
		}
	}
	if len(c.above) != 0 {
		t.Fatalf("left over: %v", c.above)
	}
}
