// Package netfaults holds the tests that put toxiproxy (in-process)
// between leveret and the real broker to produce network faults: a black
// hole that only heartbeats can detect, and a connection cut in the middle
// of a frame. It is a module of its own so that toxiproxy's dependencies
// stay out of the library's go.mod; make test runs it.
package netfaults
