// Package proto encodes and decodes AMQP 0-9-1 as RabbitMQ speaks it: frames,
// methods, content headers and field tables. It works in both directions, so
// it serves the client and a scripted fake server alike, and it starts no
// goroutines.
//
// Encoding is append-style: every Append function appends to a caller's
// buffer and allocates only to grow it. Decoding never trusts the peer: it
// checks every length against the bytes at hand before allocating, caps
// nesting, and never panics. Decoded strings, byte arrays and tables are
// copies: they stay valid when the frame buffer they came from is reused.
// Decoding checks encoding only; what a frame or method means on its channel
// (heartbeats on channel 0, content after a content method, ...) is the
// caller's to check.
//
// The method structs, MethodID's tables, class ids and reply codes are
// generated from the specification XML in the amqp091-go module.
package proto

//go:generate go run ./gen
