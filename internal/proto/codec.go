package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/leveret-mq/leveret/ops"
)

// Sentinel errors. Returned errors wrap them with detail; match them with
// errors.Is.
var (
	// ErrFrameTooLarge: a frame exceeds the negotiated or configured size.
	ErrFrameTooLarge = errors.New("amqp: frame too large")
	// ErrMalformed: the peer sent bytes that do not decode.
	ErrMalformed = errors.New("amqp: malformed input")
	// ErrInvalidValue: a value cannot be encoded (a shortstr over 255 bytes,
	// a table value of an unsupported type, ...).
	ErrInvalidValue = errors.New("amqp: invalid value")
)

// maxDepth caps the nesting of tables and arrays, decoding and encoding.
const maxDepth = 64

// encoder appends AMQP primitives to buf. The first failure sticks in err;
// later calls still append, and result discards their output.
type encoder struct {
	buf []byte
	err error
}

func (e *encoder) octet(v uint8)     { e.buf = append(e.buf, v) }
func (e *encoder) short(v uint16)    { e.buf = binary.BigEndian.AppendUint16(e.buf, v) }
func (e *encoder) long(v uint32)     { e.buf = binary.BigEndian.AppendUint32(e.buf, v) }
func (e *encoder) longlong(v uint64) { e.buf = binary.BigEndian.AppendUint64(e.buf, v) }

func (e *encoder) timestamp(t time.Time) { e.longlong(uint64(t.Unix())) }

func (e *encoder) shortstr(s string) {
	if len(s) > math.MaxUint8 {
		e.setErr(fmt.Errorf("%w: shortstr of %d bytes, limit 255", ErrInvalidValue, len(s)))
		return
	}
	e.buf = append(e.buf, uint8(len(s)))
	e.buf = append(e.buf, s...)
}

func (e *encoder) longstr(s string) {
	if uint64(len(s)) > math.MaxUint32 {
		e.setErr(fmt.Errorf("%w: longstr of %d bytes, limit 2^32-1", ErrInvalidValue, len(s)))
		return
	}
	e.long(uint32(len(s)))
	e.buf = append(e.buf, s...)
}

func (e *encoder) table(t ops.Table) {
	var err error
	if e.buf, err = AppendTable(e.buf, t); err != nil {
		e.setErr(err)
	}
}

func (e *encoder) setErr(err error) {
	if e.err == nil {
		e.err = err
	}
}

// result returns the encoded bytes, or dst and the first error.
func (e *encoder) result(dst []byte) ([]byte, error) {
	if e.err != nil {
		return dst, e.err
	}
	return e.buf, nil
}

// bit returns 1<<n if b is set: one bit of a packed octet.
func bit(b bool, n uint) uint8 {
	if b {
		return 1 << n
	}
	return 0
}

// decoder reads AMQP primitives from src. The first failure sticks in err;
// later reads return zero values, so callers read everything and check once.
type decoder struct {
	src   []byte
	err   error
	depth int // nesting of tables and arrays
}

// take consumes n bytes, or fails naming what was being read.
func (d *decoder) take(n uint64, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.src)) {
		d.fail("truncated %s: need %d bytes, have %d", what, n, len(d.src))
		return nil
	}
	b := d.src[:n:n]
	d.src = d.src[n:]
	return b
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
}

func (d *decoder) octet() uint8 {
	if b := d.take(1, "octet"); b != nil {
		return b[0]
	}
	return 0
}

func (d *decoder) short() uint16 {
	if b := d.take(2, "short"); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (d *decoder) long() uint32 {
	if b := d.take(4, "long"); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (d *decoder) longlong() uint64 {
	if b := d.take(8, "longlong"); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

// timestamp decodes seconds since the epoch, in UTC.
func (d *decoder) timestamp() time.Time {
	if b := d.take(8, "timestamp"); b != nil {
		return time.Unix(int64(binary.BigEndian.Uint64(b)), 0).UTC()
	}
	return time.Time{}
}

func (d *decoder) shortstr() string {
	n := d.octet()
	return string(d.take(uint64(n), "shortstr"))
}

func (d *decoder) longstr() string {
	n := d.long()
	return string(d.take(uint64(n), "longstr"))
}

// bytes decodes a long string into a copy; never nil on success.
func (d *decoder) bytes() []byte {
	n := d.long()
	b := d.take(uint64(n), "byte array")
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

// finish returns the first error, or an error if bytes are left over.
func (d *decoder) finish() error {
	if d.err == nil && len(d.src) > 0 {
		d.fail("%d trailing bytes", len(d.src))
	}
	return d.err
}
