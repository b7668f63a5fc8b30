package main

import (
	"testing"

	"go.uber.org/goleak"
)

// The client-path benchmarks start sink servers and both clients; every
// goroutine they start must be gone when they end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
