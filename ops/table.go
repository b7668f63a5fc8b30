package ops

// Table is an AMQP field table, used for arguments (x-message-ttl,
// x-queue-type, ...) and message headers.
//
// Values may be: nil, bool, int8, uint8, int16, uint16, int32, uint32, int,
// int64, uint64 (encoded as a signed 64-bit integer when it fits), float32,
// float64, Decimal, string, []byte, time.Time (second precision), Table,
// map[string]any and []any (whose elements follow the same rules). Decoding
// produces the narrowest of these that the wire type names: strings for long
// strings, []byte for byte arrays, Table for nested tables, []any for arrays.
type Table map[string]any

// Decimal is the AMQP decimal field type: Value × 10^-Scale.
type Decimal struct {
	Scale uint8
	Value int32
}
