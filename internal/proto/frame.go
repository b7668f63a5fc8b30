package proto

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
)

// Frame types and sizes.
const (
	FrameMethod    = 1
	FrameHeader    = 2
	FrameBody      = 3
	FrameHeartbeat = 8
	FrameEnd       = 0xCE

	// FrameMinSize is the largest frame every peer must accept before
	// connection.tune settles frame-max.
	FrameMinSize = 4096
	// FrameOverhead is a frame's size beyond its payload: a 7-byte header
	// (type, channel, payload size) and the frame-end octet.
	FrameOverhead = 8
)

// ProtocolHeader opens an AMQP 0-9-1 connection.
var ProtocolHeader = []byte("AMQP\x00\x00\x09\x01")

const (
	defaultMaxFrame = 128 << 10 // RabbitMQ's default frame_max
	ceilingFrame    = 1 << 27   // the limit when frame-max is 0 ("none")
	readBufferSize  = 64 << 10
	headerSize      = 7
)

// Frame is one frame as read. Payload excludes the header and frame-end
// octet and is valid only until the next ReadFrame.
type Frame struct {
	Type    uint8
	Channel uint16
	Payload []byte
}

// FrameReader reads frames from a byte stream through its own buffer,
// reusing one payload buffer. It is not safe for concurrent use.
type FrameReader struct {
	r       *bufio.Reader
	counted *octetCounter // under r: counts what the socket gave
	max     uint32        // largest frame accepted, overhead included
	hdr     [headerSize]byte
	payload []byte // reused; holds payload and frame-end octet
}

// Buffered is how many bytes have been read from the connection and not
// yet returned as frames: 0 means the next ReadFrame will read the socket.
func (r *FrameReader) Buffered() int { return r.r.Buffered() }

// NewFrameReader returns a FrameReader that accepts frames of up to 128 KiB
// (RabbitMQ's default frame_max) until SetMaxFrameSize says otherwise. A
// *bufio.Reader of at least 64 KiB is used as it is (its Buffered then
// tells the caller when a read batch is used up); Octets then counts the
// octets of whole frames only.
func NewFrameReader(r io.Reader) *FrameReader {
	if br, ok := r.(*bufio.Reader); ok && br.Size() >= readBufferSize {
		return &FrameReader{r: br, counted: &octetCounter{}, max: defaultMaxFrame}
	}
	counted := &octetCounter{r: r, perRead: true}
	return &FrameReader{r: bufio.NewReaderSize(counted, readBufferSize), counted: counted, max: defaultMaxFrame}
}

// Octets is the number of octets read from the underlying reader so far,
// whole frames or not. Safe to call from any goroutine: a heartbeat check
// counts the peer alive while any octet arrives (AMQP 0-9-1, 4.2.7), even
// in the middle of a large frame on a slow link.
func (fr *FrameReader) Octets() uint64 { return fr.counted.n.Load() }

// octetCounter counts the octets its reader returns: one atomic add per
// read of the socket, not per frame.
type octetCounter struct {
	r       io.Reader
	n       atomic.Uint64
	perRead bool // counts in Read; else ReadFrame counts whole frames
}

func (c *octetCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.n.Add(uint64(n))
	}
	return n, err
}

// SetMaxFrameSize sets the largest frame accepted, overhead included, as
// negotiated by connection.tune. 0 (no limit in AMQP terms) means 128 MiB;
// values below FrameMinSize mean FrameMinSize, which every peer may send.
func (fr *FrameReader) SetMaxFrameSize(n uint32) {
	switch {
	case n == 0:
		n = ceilingFrame
	case n < FrameMinSize:
		n = FrameMinSize
	}
	fr.max = n
}

// ReadFrame reads the next frame. It checks the size against the limit
// before reading the payload, grows its buffer only as payload bytes
// arrive, and checks the frame-end octet. Bad input yields an error wrapping
// ErrFrameTooLarge or ErrMalformed; a stream cut inside a frame yields one
// wrapping io.ErrUnexpectedEOF; io.EOF between frames and errors of the
// underlying reader are returned as they are.
func (fr *FrameReader) ReadFrame() (Frame, error) {
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return Frame{}, fmt.Errorf("amqp: truncated frame header: %w", err)
		}
		return Frame{}, err
	}
	typ := fr.hdr[0]
	if typ != FrameMethod && typ != FrameHeader && typ != FrameBody && typ != FrameHeartbeat {
		return Frame{}, fr.badType()
	}
	size := binary.BigEndian.Uint32(fr.hdr[3:])
	if uint64(size)+FrameOverhead > uint64(fr.max) {
		return Frame{}, fmt.Errorf("%w: %d bytes with overhead, limit %d", ErrFrameTooLarge, uint64(size)+FrameOverhead, fr.max)
	}
	buf, err := fr.readPayload(int(size) + 1)
	if err != nil {
		return Frame{}, err
	}
	if end := buf[size]; end != FrameEnd {
		return Frame{}, fmt.Errorf("%w: frame-end octet 0x%02x, want 0xce", ErrMalformed, end)
	}
	if !fr.counted.perRead {
		fr.counted.n.Add(uint64(size) + FrameOverhead)
	}
	return Frame{Type: typ, Channel: binary.BigEndian.Uint16(fr.hdr[1:]), Payload: buf[:size]}, nil
}

// readPayload reads n bytes into the reused buffer. A buffer too small is
// grown by doubling as data arrives, so a forged size costs at most twice
// the bytes actually sent.
func (fr *FrameReader) readPayload(n int) ([]byte, error) {
	buf := fr.payload[:0]
	for len(buf) < n {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(n, max(2*cap(buf), FrameMinSize)))
			copy(grown, buf)
			buf = grown
			fr.payload = grown
		}
		m, err := io.ReadFull(fr.r, buf[len(buf):min(n, cap(buf))])
		buf = buf[:len(buf)+m]
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("amqp: truncated frame payload: %w", err)
		}
	}
	return buf, nil
}

// badType explains an unknown frame type, recognising a peer that answered
// with its own protocol header (a version mismatch).
func (fr *FrameReader) badType() error {
	if bytes.HasPrefix(ProtocolHeader, fr.hdr[:4]) {
		rest, _ := fr.r.Peek(1)
		got := append(fr.hdr[:], rest...)
		return fmt.Errorf("%w: peer sent protocol header %q, not AMQP 0-9-1", ErrMalformed, got)
	}
	if printable(fr.hdr[:]) {
		return fmt.Errorf("%w: peer answered %q: not an AMQP 0-9-1 server", ErrMalformed, fr.hdr[:])
	}
	return fmt.Errorf("%w: unknown frame type %d", ErrMalformed, fr.hdr[0])
}

// printable reports whether b is printable ASCII text (a text protocol's
// answer, such as "HTTP/1.1 400"), which no AMQP frame header is.
func printable(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// ReadProtocolHeader reads the 8 bytes that open a connection (server side)
// and fails unless they are ProtocolHeader.
func ReadProtocolHeader(r io.Reader) error {
	var got [8]byte
	if _, err := io.ReadFull(r, got[:]); err != nil {
		return err
	}
	if !bytes.Equal(got[:], ProtocolHeader) {
		return fmt.Errorf("%w: protocol header %q, want %q", ErrMalformed, got[:], ProtocolHeader)
	}
	return nil
}

// DecodeMethod decodes a method frame's payload: class and method ids, then
// arguments. An unknown id or bad arguments yield an error wrapping
// ErrMalformed. It never panics.
func DecodeMethod(payload []byte) (Method, error) {
	if len(payload) < 4 {
		return nil, fmt.Errorf("%w: method payload of %d bytes", ErrMalformed, len(payload))
	}
	id := MethodID(binary.BigEndian.Uint32(payload))
	m := NewMethod(id)
	if m == nil {
		return nil, fmt.Errorf("%w: unknown %s", ErrMalformed, id)
	}
	if err := m.Decode(payload[4:]); err != nil {
		return nil, fmt.Errorf("%w (decoding %s)", err, id)
	}
	return m, nil
}

// AppendMethodFrame appends a method frame carrying m on channel to dst. On
// error (see Method.Append) it returns dst unchanged.
func AppendMethodFrame(dst []byte, channel uint16, m Method) ([]byte, error) {
	out, start := beginFrame(dst, FrameMethod, channel)
	out = binary.BigEndian.AppendUint32(out, uint32(m.ID()))
	out, err := m.Append(out)
	if err != nil {
		return dst, err
	}
	return endFrame(dst, out, start)
}

// AppendAckFrame appends a basic.ack method frame. It is
// AppendMethodFrame without the Method interface, through which m would
// escape: acks are sent once per delivery and should not allocate.
func AppendAckFrame(dst []byte, channel uint16, m *BasicAck) []byte {
	out, start := beginFrame(dst, FrameMethod, channel)
	out = binary.BigEndian.AppendUint32(out, uint32(BasicAckID))
	out, _ = m.Append(out) // fixed size: cannot fail
	out, _ = endFrame(dst, out, start)
	return out
}

// AppendHeartbeat appends a heartbeat frame to dst.
func AppendHeartbeat(dst []byte) []byte {
	return append(dst, FrameHeartbeat, 0, 0, 0, 0, 0, 0, FrameEnd)
}

// beginFrame appends a frame header with a zero size to be filled in by
// endFrame, and returns where the header starts.
func beginFrame(dst []byte, typ uint8, channel uint16) ([]byte, int) {
	start := len(dst)
	dst = append(dst, typ, uint8(channel>>8), uint8(channel), 0, 0, 0, 0)
	return dst, start
}

// endFrame writes the payload size of the frame at out[start:] and appends
// the frame-end octet. A payload over 2^32-1 bytes returns orig and an error.
func endFrame(orig, out []byte, start int) ([]byte, error) {
	if err := putLength(out, start+3); err != nil {
		return orig, fmt.Errorf("%w: payload of %s", ErrFrameTooLarge, err)
	}
	return append(out, FrameEnd), nil
}
