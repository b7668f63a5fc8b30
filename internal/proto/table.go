package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/leveret-mq/leveret/ops"
)

// AppendTable appends t as a field table (with its 4-byte length) to dst.
// Keys are written in sorted order, so equal tables encode to equal bytes.
// Value types are those listed on ops.Table, encoded as RabbitMQ's field
// types: nil V, bool t, int8 b, uint8 B, int16 s, uint16 u, int32 I, uint32 i,
// int, int64 and uint64 l, float32 f, float64 d, ops.Decimal D, string S,
// []byte x, time.Time T, ops.Table and map[string]any F, []any A.
//
// It fails, returning dst unchanged, on a key over 255 bytes, a value of
// another type, a uint64 above math.MaxInt64, or nesting deeper than 64. It
// allocates only to grow dst, and for key sorting when a table has more than
// 32 keys.
func AppendTable(dst []byte, t ops.Table) ([]byte, error) {
	out, err := appendTable(dst, t, 0)
	if err != nil {
		return dst, fmt.Errorf("%w: table %w", ErrInvalidValue, err)
	}
	return out, nil
}

// DecodeTable decodes a field table (with its 4-byte length) from the start
// of src and returns it with the number of bytes consumed. An empty table
// decodes to nil; nested tables and arrays are never nil. Field types are
// those of AppendTable; S decodes to string, x to []byte, T to time.Time in
// UTC, F to ops.Table, A to []any and V to nil. It never panics, checks
// every length against src before allocating, and rejects nesting deeper
// than 64.
func DecodeTable(src []byte) (ops.Table, int, error) {
	d := decoder{src: src}
	t := d.table()
	if d.err != nil {
		return nil, 0, d.err
	}
	return t, len(src) - len(d.src), nil
}

func appendTable(dst []byte, t ops.Table, depth int) ([]byte, error) {
	if depth >= maxDepth {
		return dst, errors.New("nested more than 64 deep")
	}
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	var stack [32]string
	keys := stack[:0]
	if len(t) > len(stack) {
		keys = make([]string, 0, len(t))
	}
	for k := range t {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var err error
	for _, k := range keys {
		if len(k) > math.MaxUint8 {
			return dst, fmt.Errorf("key %.20q...: %d bytes, limit 255", k, len(k))
		}
		dst = append(dst, uint8(len(k)))
		dst = append(dst, k...)
		if dst, err = appendValue(dst, t[k], depth); err != nil {
			return dst, fmt.Errorf("key %q: %w", k, err)
		}
	}
	return dst, putLength(dst, start)
}

// putLength writes the length of dst[start+4:] into dst[start:start+4].
func putLength(dst []byte, start int) error {
	n := len(dst) - start - 4
	if uint64(n) > math.MaxUint32 {
		return fmt.Errorf("%d bytes, limit 2^32-1", n)
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(n))
	return nil
}

func appendArray(dst []byte, a []any, depth int) ([]byte, error) {
	if depth >= maxDepth {
		return dst, errors.New("nested more than 64 deep")
	}
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	var err error
	for i, v := range a {
		if dst, err = appendValue(dst, v, depth); err != nil {
			return dst, fmt.Errorf("element %d: %w", i, err)
		}
	}
	return dst, putLength(dst, start)
}

func appendValue(dst []byte, v any, depth int) ([]byte, error) {
	be := binary.BigEndian
	switch v := v.(type) {
	case nil:
		return append(dst, 'V'), nil
	case bool:
		return append(dst, 't', bit(v, 0)), nil
	case int8:
		return append(dst, 'b', uint8(v)), nil
	case uint8:
		return append(dst, 'B', v), nil
	case int16:
		return be.AppendUint16(append(dst, 's'), uint16(v)), nil
	case uint16:
		return be.AppendUint16(append(dst, 'u'), v), nil
	case int32:
		return be.AppendUint32(append(dst, 'I'), uint32(v)), nil
	case uint32:
		return be.AppendUint32(append(dst, 'i'), v), nil
	case int:
		return be.AppendUint64(append(dst, 'l'), uint64(v)), nil
	case int64:
		return be.AppendUint64(append(dst, 'l'), uint64(v)), nil
	case uint64:
		if v > math.MaxInt64 {
			return dst, fmt.Errorf("uint64 %d overflows the signed 64-bit field type", v)
		}
		return be.AppendUint64(append(dst, 'l'), v), nil
	case float32:
		return be.AppendUint32(append(dst, 'f'), math.Float32bits(v)), nil
	case float64:
		return be.AppendUint64(append(dst, 'd'), math.Float64bits(v)), nil
	case ops.Decimal:
		return be.AppendUint32(append(dst, 'D', v.Scale), uint32(v.Value)), nil
	case string:
		return appendLongBytes(append(dst, 'S'), v)
	case []byte:
		return appendLongBytes(append(dst, 'x'), v)
	case time.Time:
		return be.AppendUint64(append(dst, 'T'), uint64(v.Unix())), nil
	case ops.Table:
		return appendTable(append(dst, 'F'), v, depth+1)
	case map[string]any:
		return appendTable(append(dst, 'F'), ops.Table(v), depth+1)
	case []any:
		return appendArray(append(dst, 'A'), v, depth+1)
	}
	return dst, fmt.Errorf("unsupported type %T", v)
}

func appendLongBytes[S string | []byte](dst []byte, s S) ([]byte, error) {
	if uint64(len(s)) > math.MaxUint32 {
		return dst, fmt.Errorf("long string of %d bytes, limit 2^32-1", len(s))
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(s)))
	return append(dst, s...), nil
}

// table decodes a field table; nil when empty.
func (d *decoder) table() ops.Table {
	t := d.nestedTable()
	if len(t) == 0 {
		return nil
	}
	return t
}

// nestedTable decodes a field table; never nil on success.
func (d *decoder) nestedTable() ops.Table {
	sub, ok := d.enter("table")
	if !ok {
		return nil
	}
	t := ops.Table{}
	for len(sub.src) > 0 && sub.err == nil {
		k := sub.shortstr()
		v := sub.value()
		if sub.err == nil {
			t[k] = v
		}
	}
	return leave(d, &sub, t)
}

// array decodes a field array; never nil on success.
func (d *decoder) array() []any {
	sub, ok := d.enter("array")
	if !ok {
		return nil
	}
	// Sized once: an array of n tiny values would otherwise be grown, and
	// copied, about log2(n) times (a 128 KiB frame holds 32,000 values).
	a := make([]any, 0, countValues(sub.src))
	for len(sub.src) > 0 && sub.err == nil {
		a = append(a, sub.value())
	}
	return leave(d, &sub, a)
}

// enter consumes a length-prefixed body and returns a decoder for it, one
// level deeper.
func (d *decoder) enter(what string) (decoder, bool) {
	body := d.take(uint64(d.long()), what)
	if d.err == nil && d.depth >= maxDepth {
		d.fail("%s nested deeper than %d", what, maxDepth)
	}
	return decoder{src: body, depth: d.depth + 1}, d.err == nil
}

// leave passes sub's error up and returns v, or nil on error.
func leave[T any](d *decoder, sub *decoder, v T) T {
	if sub.err != nil {
		d.err = sub.err
		var zero T
		return zero
	}
	return v
}

// value decodes one type-tagged field value.
func (d *decoder) value() any {
	switch typ := d.octet(); typ {
	case 't':
		return d.octet() != 0
	case 'b':
		return int8(d.octet())
	case 'B':
		return d.octet()
	case 's':
		return int16(d.short())
	case 'u':
		return d.short()
	case 'I':
		return int32(d.long())
	case 'i':
		return d.long()
	case 'l':
		return int64(d.longlong())
	case 'f':
		return math.Float32frombits(d.long())
	case 'd':
		return math.Float64frombits(d.longlong())
	case 'D':
		scale := d.octet()
		return ops.Decimal{Scale: scale, Value: int32(d.long())}
	case 'S':
		return d.longstr()
	case 'x':
		return d.bytes()
	case 'T':
		return d.timestamp()
	case 'F':
		return d.nestedTable()
	case 'A':
		return d.array()
	case 'V':
		return nil
	default:
		if d.err == nil {
			d.fail("unknown field type %q", typ)
		}
		return nil
	}
}

// countValues counts the type-tagged values in an array's body without
// decoding them; it stops at the first it cannot size (the decoder then
// reports the error).
func countValues(src []byte) int {
	n := 0
	for len(src) > 0 {
		size := 0
		switch src[0] {
		case 'V':
		case 't', 'b', 'B':
			size = 1
		case 's', 'u':
			size = 2
		case 'I', 'i', 'f':
			size = 4
		case 'D':
			size = 5
		case 'l', 'd', 'T':
			size = 8
		case 'S', 'x', 'F', 'A':
			if len(src) < 5 {
				return n
			}
			size = 4 + int(binary.BigEndian.Uint32(src[1:5]))
		default:
			return n
		}
		if size > len(src)-1 {
			return n
		}
		src = src[1+size:]
		n++
	}
	return n
}

// Sizes the decoder's values take in memory, for TableMemory: a map's
// header, a map entry (its key's string header, its value's interface and
// the map's own slack), an interface in a slice, a string's box, a
// slice's box, and the largest other boxed value (time.Time).
const (
	mapMemory     = 48
	entryMemory   = 64
	elementMemory = 16
	boxedMemory   = 16
	sliceMemory   = 24
	scalarMemory  = 24
)

// TableMemory estimates the bytes a decoded table holds: what a field
// table costs a consumer that keeps a message, counted against its memory
// limit. A table's wire size can be a small fraction of it (an empty table
// is 5 octets and a map). It walks the whole table.
func TableMemory(t ops.Table) int {
	if t == nil {
		return 0
	}
	n := mapMemory
	for k, v := range t {
		n += entryMemory + len(k) + valueMemory(v)
	}
	return n
}

func valueMemory(v any) int {
	switch v := v.(type) {
	case nil, bool, int8, uint8:
		return 0 // no allocation: the runtime keeps these boxed statically
	case string:
		return boxedMemory + len(v)
	case []byte:
		return sliceMemory + len(v)
	case ops.Table:
		return TableMemory(v)
	case []any:
		n := sliceMemory + elementMemory*cap(v)
		for _, e := range v {
			n += valueMemory(e)
		}
		return n
	default:
		return scalarMemory
	}
}
