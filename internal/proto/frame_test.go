package proto

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

func TestHeartbeat(t *testing.T) {
	hb := AppendHeartbeat([]byte("x"))
	require.Equal(t, []byte("x\x08\x00\x00\x00\x00\x00\x00\xce"), hb)
	fr := NewFrameReader(bytes.NewReader(hb[1:]))
	f, err := fr.ReadFrame()
	require.NoError(t, err)
	require.Equal(t, uint8(FrameHeartbeat), f.Type)
	require.Zero(t, f.Channel)
	require.Empty(t, f.Payload)
	_, err = fr.ReadFrame()
	require.Equal(t, io.EOF, err, "EOF between frames passes through unwrapped")
}

// allocatedDuring reports the bytes allocated by fn.
func allocatedDuring(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before) // the first call allocates
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestFrameTooLarge(t *testing.T) {
	forged := []byte("\x01\x00\x01\x7f\xff\xff\xf8") // 2 GiB - 8 payload
	for _, limit := range []uint32{0, 1 << 20, 131072} {
		fr := NewFrameReader(bytes.NewReader(forged))
		fr.SetMaxFrameSize(limit)
		var err error
		n := allocatedDuring(func() { _, err = fr.ReadFrame() })
		require.ErrorIs(t, err, ErrFrameTooLarge)
		// Far below the forged 2 GiB: the error's formatting and, under
		// -race, the detector's bookkeeping account for a few KiB.
		require.Less(t, n, uint64(64<<10), "allocated %d bytes", n)
	}

	// At the limit exactly is fine; one more byte is not.
	frame := append([]byte("\x03\x00\x01\x00\x00\x0f\xf8"), make([]byte, 4088)...)
	frame = append(frame, FrameEnd)
	fr := NewFrameReader(bytes.NewReader(frame))
	fr.SetMaxFrameSize(4096)
	_, err := fr.ReadFrame()
	require.NoError(t, err)
	fr = NewFrameReader(bytes.NewReader(frame))
	fr.SetMaxFrameSize(4095) // raised to FrameMinSize
	_, err = fr.ReadFrame()
	require.NoError(t, err)

	frame[6]++
	frame = append(frame, 0)
	frame[len(frame)-2], frame[len(frame)-1] = 0, FrameEnd
	fr = NewFrameReader(bytes.NewReader(frame))
	fr.SetMaxFrameSize(4096)
	_, err = fr.ReadFrame()
	require.ErrorIs(t, err, ErrFrameTooLarge)
}

// A size under the limit but with few bytes behind it allocates in step with
// the bytes that arrive, not with the size.
func TestFrameForgedSizeUnderLimit(t *testing.T) {
	forged := append([]byte("\x03\x00\x01\x07\xff\xff\xf0"), make([]byte, 100)...)
	fr := NewFrameReader(bytes.NewReader(forged))
	fr.SetMaxFrameSize(0)
	var err error
	n := allocatedDuring(func() { _, err = fr.ReadFrame() })
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	require.Less(t, n, uint64(16<<10), "allocated %d bytes", n)
}

func TestFrameMalformed(t *testing.T) {
	cases := map[string]struct {
		in   string
		want error
	}{
		"bad end":        {"\x08\x00\x00\x00\x00\x00\x00\xcd", ErrMalformed},
		"bad type":       {"\x05\x00\x00\x00\x00\x00\x00\xce", ErrMalformed},
		"header cut":     {"\x01\x00\x01\x00", io.ErrUnexpectedEOF},
		"payload cut":    {"\x01\x00\x01\x00\x00\x00\x05\x00\x0a", io.ErrUnexpectedEOF},
		"end missing":    {"\x01\x00\x01\x00\x00\x00\x01\x00", io.ErrUnexpectedEOF},
		"protocol reply": {"AMQP\x00\x00\x09\x00", ErrMalformed},
	}
	for name, c := range cases {
		_, err := NewFrameReader(bytes.NewReader([]byte(c.in))).ReadFrame()
		require.ErrorIs(t, err, c.want, name)
	}
	_, err := NewFrameReader(bytes.NewReader([]byte("AMQP\x00\x00\x09\x00"))).ReadFrame()
	require.ErrorContains(t, err, `"AMQP\x00\x00\t\x00"`)
}

func TestFrameReaderErrorsPassThrough(t *testing.T) {
	boom := &net.OpError{Op: "read", Err: errors.New("connection reset")}
	_, err := NewFrameReader(iotest.ErrReader(boom)).ReadFrame()
	require.Equal(t, boom, err)
}

func TestFrameReaderSequence(t *testing.T) {
	var stream []byte
	stream = AppendHeartbeat(stream)
	big := bytes.Repeat([]byte("0123456789"), 30000) // 300 KB: beyond the bufio buffer
	stream = AppendBodyFrames(stream, 9, 0, big)
	stream = AppendBodyFrames(stream, 9, 0, []byte("small"))
	stream = AppendHeartbeat(stream)

	fr := NewFrameReader(iotest.HalfReader(bytes.NewReader(stream)))
	fr.SetMaxFrameSize(0)
	f, err := fr.ReadFrame()
	require.NoError(t, err)
	require.Equal(t, uint8(FrameHeartbeat), f.Type)
	f, err = fr.ReadFrame()
	require.NoError(t, err)
	require.Equal(t, big, f.Payload)
	bigPayload := f.Payload
	f, err = fr.ReadFrame()
	require.NoError(t, err)
	require.Equal(t, "small", string(f.Payload))
	require.Equal(t, "small", string(bigPayload[:5]), "the payload buffer is reused")
	f, err = fr.ReadFrame()
	require.NoError(t, err)
	require.Equal(t, uint8(FrameHeartbeat), f.Type)
	_, err = fr.ReadFrame()
	require.Equal(t, io.EOF, err)
}

func TestReadFrameNoAlloc(t *testing.T) {
	frame, err := AppendMethodFrame(nil, 1, &BasicAck{DeliveryTag: 1})
	require.NoError(t, err)
	stream := bytes.Repeat(frame, 200)
	fr := NewFrameReader(bytes.NewReader(stream))
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := fr.ReadFrame(); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs)
}

func TestReadProtocolHeader(t *testing.T) {
	require.NoError(t, ReadProtocolHeader(bytes.NewReader(ProtocolHeader)))
	err := ReadProtocolHeader(bytes.NewReader([]byte("AMQP\x01\x01\x00\x09")))
	require.ErrorIs(t, err, ErrMalformed)
	err = ReadProtocolHeader(bytes.NewReader([]byte("GET / HTTP/1.1")))
	require.ErrorIs(t, err, ErrMalformed)
	err = ReadProtocolHeader(bytes.NewReader([]byte("AMQP")))
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
}
