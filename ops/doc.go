// Package ops holds the plain data that leveret's operations take and return:
// one struct per AMQP operation and one per result, with named fields whose
// zero values are the protocol defaults. Nothing here does I/O or starts
// goroutines; the leveret package turns these values into frames.
package ops
