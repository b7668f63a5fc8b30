package proto

import (
	"encoding/binary"
	"errors"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/leveret-mq/leveret/ops"
	"github.com/stretchr/testify/require"
)

var testTime = time.Unix(1700000000, 0).UTC()

// canonicalTable holds every field type in the form DecodeTable returns, so
// it survives a round trip unchanged.
func canonicalTable() ops.Table {
	return ops.Table{
		"bool":    true,
		"false":   false,
		"int8":    int8(-8),
		"uint8":   uint8(200),
		"int16":   int16(-1600),
		"uint16":  uint16(60000),
		"int32":   int32(-320000),
		"uint32":  uint32(4000000000),
		"int64":   int64(-1 << 40),
		"float32": float32(3.5),
		"float64": -2.25,
		"decimal": ops.Decimal{Scale: 2, Value: -12345},
		"string":  "héllo",
		"empty":   "",
		"bytes":   []byte{0, 1, 2, 0xff},
		"nobytes": []byte{},
		"time":    testTime,
		"void":    nil,
		"table":   ops.Table{"inner": "x", "deeper": ops.Table{"n": int32(1)}, "none": ops.Table{}},
		"array":   []any{int32(1), "two", []any{}, ops.Table{"k": false}, nil, []byte("b")},
	}
}

func TestTableRoundTrip(t *testing.T) {
	in := canonicalTable()
	enc, err := AppendTable([]byte("prefix"), in)
	require.NoError(t, err)
	require.Equal(t, "prefix", string(enc[:6]))
	out, n, err := DecodeTable(append(enc[6:], "trailing"...))
	require.NoError(t, err)
	require.Equal(t, len(enc)-6, n)
	require.Equal(t, in, out)
	require.Equal(t, time.UTC, out["time"].(time.Time).Location())
}

func TestTableEncodeConversions(t *testing.T) {
	local := time.Date(2024, 5, 6, 7, 8, 9, 999, time.FixedZone("x", 3600))
	in := ops.Table{
		"int":    -7,
		"uint64": uint64(math.MaxInt64),
		"map":    map[string]any{"a": 1},
		"local":  local,
	}
	enc, err := AppendTable(nil, in)
	require.NoError(t, err)
	out, _, err := DecodeTable(enc)
	require.NoError(t, err)
	require.Equal(t, ops.Table{
		"int":    int64(-7),
		"uint64": int64(math.MaxInt64),
		"map":    ops.Table{"a": int64(1)},
		"local":  time.Unix(local.Unix(), 0).UTC(),
	}, out)
}

func TestTableEmpty(t *testing.T) {
	for _, in := range []ops.Table{nil, {}} {
		enc, err := AppendTable(nil, in)
		require.NoError(t, err)
		require.Equal(t, []byte{0, 0, 0, 0}, enc)
		out, n, err := DecodeTable(enc)
		require.NoError(t, err)
		require.Equal(t, 4, n)
		require.Nil(t, out)
	}
}

func TestTableSortedKeys(t *testing.T) {
	in := ops.Table{}
	for i := range 100 { // more keys than the stack buffer holds
		in[strings.Repeat("k", i+1)] = int8(i)
	}
	first, err := AppendTable(nil, in)
	require.NoError(t, err)
	for range 5 {
		again, err := AppendTable(nil, in)
		require.NoError(t, err)
		require.Equal(t, first, again)
	}
	small, err := AppendTable(nil, ops.Table{"b": nil, "a": nil, "c": nil})
	require.NoError(t, err)
	require.Equal(t, "\x00\x00\x00\x09\x01aV\x01bV\x01cV", string(small))
}

func TestTableEncodeErrors(t *testing.T) {
	cases := map[string]struct {
		in   ops.Table
		want string
	}{
		"type":       {ops.Table{"ch": make(chan int)}, `key "ch": unsupported type chan int`},
		"nested":     {ops.Table{"a": ops.Table{"b": []any{1, struct{}{}}}}, `key "a": key "b": element 1: unsupported type struct {}`},
		"uint64":     {ops.Table{"u": uint64(math.MaxInt64 + 1)}, "overflows"},
		"long key":   {ops.Table{strings.Repeat("k", 256): 1}, "256 bytes, limit 255"},
		"int type":   {ops.Table{"u": uint(1)}, "unsupported type uint"},
		"map typed":  {ops.Table{"m": map[string]string{}}, "unsupported type map[string]string"},
		"slice type": {ops.Table{"s": []string{}}, "unsupported type []string"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			dst := []byte("keep")
			out, err := AppendTable(dst, c.in)
			require.ErrorIs(t, err, ErrInvalidValue)
			require.ErrorContains(t, err, c.want)
			require.Equal(t, "keep", string(out))
		})
	}
}

func TestTableDepth(t *testing.T) {
	nest := func(depth int) ops.Table {
		tb := ops.Table{}
		for range depth - 1 {
			tb = ops.Table{"t": tb}
		}
		return tb
	}
	enc, err := AppendTable(nil, nest(maxDepth))
	require.NoError(t, err)
	_, _, err = DecodeTable(enc)
	require.NoError(t, err)

	_, err = AppendTable(nil, nest(maxDepth+1))
	require.ErrorIs(t, err, ErrInvalidValue)

	// A hand-built table nested one level too deep, and a cyclic array.
	deep := []byte{0, 0, 0, 0}
	for range maxDepth {
		entry := append([]byte{1, 't', 'F'}, deep...)
		deep = append(binary.BigEndian.AppendUint32(nil, uint32(len(entry))), entry...)
	}
	_, _, err = DecodeTable(deep)
	require.ErrorIs(t, err, ErrMalformed)
	require.ErrorContains(t, err, "nested deeper")
	_, _, err = DecodeTable(deep[7:]) // one level less
	require.NoError(t, err)

	cyc := []any{nil}
	cyc[0] = cyc
	_, err = AppendTable(nil, ops.Table{"c": cyc})
	require.ErrorIs(t, err, ErrInvalidValue)
}

// TestTableWire decodes a table built byte by byte with one field of each
// wire type.
func TestTableWire(t *testing.T) {
	var b []byte
	field := func(key string, typ byte, payload ...byte) {
		b = append(b, byte(len(key)))
		b = append(b, key...)
		b = append(b, typ)
		b = append(b, payload...)
	}
	field("t", 't', 1)
	field("b", 'b', 0xfe)
	field("B", 'B', 0xfe)
	field("s", 's', 0xff, 0xfe)
	field("u", 'u', 0xff, 0xfe)
	field("I", 'I', 0xff, 0xff, 0xff, 0xfd)
	field("i", 'i', 0xff, 0xff, 0xff, 0xfd)
	field("l", 'l', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfc)
	field("f", 'f', 0x40, 0x20, 0, 0)                   // 2.5
	field("d", 'd', 0xc0, 0x04, 0, 0, 0, 0, 0, 0)       // -2.5
	field("D", 'D', 3, 0xff, 0xff, 0xff, 0x85)          // -123e-3
	field("S", 'S', 0, 0, 0, 3, 'a', 'b', 'c')          // long string
	field("x", 'x', 0, 0, 0, 2, 0, 0xff)                // byte array
	field("T", 'T', 0, 0, 0, 0, 0x65, 0x53, 0xf1, 0x00) // 1700000000
	field("F", 'F', 0, 0, 0, 3, 1, 'k', 'V')            // {k: nil}
	field("A", 'A', 0, 0, 0, 7, 'b', 1, 'S', 0, 0, 0, 0)
	field("V", 'V')
	src := binary.BigEndian.AppendUint32(nil, uint32(len(b)))
	src = append(src, b...)

	got, n, err := DecodeTable(src)
	require.NoError(t, err)
	require.Equal(t, len(src), n)
	require.Equal(t, ops.Table{
		"t": true, "b": int8(-2), "B": uint8(0xfe), "s": int16(-2), "u": uint16(0xfffe),
		"I": int32(-3), "i": uint32(0xfffffffd), "l": int64(-4), "f": float32(2.5), "d": -2.5,
		"D": ops.Decimal{Scale: 3, Value: -123}, "S": "abc", "x": []byte{0, 0xff}, "T": testTime,
		"F": ops.Table{"k": nil}, "A": []any{int8(1), ""}, "V": nil,
	}, got)

	// Our encoder writes the same bytes for the same values.
	again, err := AppendTable(nil, got)
	require.NoError(t, err)
	reDecoded, _, err := DecodeTable(again)
	require.NoError(t, err)
	require.Equal(t, got, reDecoded)
	require.Len(t, again, len(src))
}

func TestTableDecodeErrors(t *testing.T) {
	valid, err := AppendTable(nil, canonicalTable())
	require.NoError(t, err)
	for i := range len(valid) {
		_, _, err := DecodeTable(valid[:i])
		require.ErrorIs(t, err, ErrMalformed, "prefix of %d bytes", i)
	}
	cases := map[string][]byte{
		"unknown type":   {0, 0, 0, 3, 1, 'k', 'Z'},
		"length too big": {0, 0, 0, 9, 1, 'k', 'V'},
		"huge length":    {0xff, 0xff, 0xff, 0xff},
		"string past":    {0, 0, 0, 7, 1, 'k', 'S', 0xff, 0xff, 0xff, 0xff},
		"array past":     {0, 0, 0, 8, 1, 'k', 'A', 0, 0, 0, 9, 'V'},
		"key past":       {0, 0, 0, 2, 5, 'k'},
	}
	for name, src := range cases {
		_, n, err := DecodeTable(src)
		require.ErrorIs(t, err, ErrMalformed, name)
		require.Zero(t, n, name)
	}
}

func TestAppendTableNoAlloc(t *testing.T) {
	in := canonicalTable()
	buf := make([]byte, 0, 4096)
	allocs := testing.AllocsPerRun(100, func() {
		var err error
		if _, err = AppendTable(buf[:0], in); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs)
}

func TestTableErrorsAreTyped(t *testing.T) {
	_, err := AppendTable(nil, ops.Table{"x": t})
	require.True(t, errors.Is(err, ErrInvalidValue))
	require.True(t, strings.HasPrefix(err.Error(), "amqp: "), err.Error())
}

// TestDecodeArrayMemory (issue 27, point 6): a 128 KiB frame's worth of
// empty tables in an array decodes to far more than its wire size.
// TableMemory counts at least what the decoded table holds, and decoding
// allocates little more than that (the array is sized once, not grown).
func TestDecodeArrayMemory(t *testing.T) {
	arr := make([]any, 0, 25_000)
	for range cap(arr) {
		arr = append(arr, ops.Table{})
	}
	enc, err := AppendTable(nil, ops.Table{"a": arr, "s": "text", "n": int64(7)})
	require.NoError(t, err)
	require.Less(t, len(enc), 128<<10)

	var before, decoded, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	got, _, err := DecodeTable(enc)
	runtime.ReadMemStats(&decoded)
	require.NoError(t, err)
	runtime.GC()
	runtime.ReadMemStats(&after)
	live := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	allocated := decoded.TotalAlloc - before.TotalAlloc
	estimate := TableMemory(got)
	t.Logf("wire %d bytes; live %d KiB; allocated %d KiB; TableMemory %d KiB", len(enc), live>>10, allocated>>10, estimate>>10)
	require.Len(t, got["a"], len(arr))
	require.GreaterOrEqual(t, int64(estimate), live, "TableMemory covers what the table holds")
	require.Less(t, allocated, uint64(estimate)*5/4, "decoding allocates about what it keeps")
	runtime.KeepAlive(got)
}

// TestCountValues: countValues sizes every field type and stops at one it
// cannot size.
func TestCountValues(t *testing.T) {
	vals := []any{nil, true, int8(1), uint8(2), int16(3), uint16(4), int32(5), uint32(6), int64(7), float32(8), float64(9),
		ops.Decimal{Scale: 1, Value: 10}, "s", []byte("x"), time.Unix(11, 0), ops.Table{"k": "v"}, []any{int64(1)}}
	enc, err := AppendTable(nil, ops.Table{"a": vals})
	require.NoError(t, err)
	body := enc[4+1+1+1+4:] // table length, key length, "a", 'A', array length
	require.Equal(t, len(vals), countValues(body))
	require.Equal(t, 2, countValues([]byte{'t', 1, 'V', 'Z', 0}), "stops at an unknown type")
	require.Equal(t, 1, countValues([]byte{'V', 'S', 0, 0, 0, 9, 'a'}), "stops at a truncated value")
}
