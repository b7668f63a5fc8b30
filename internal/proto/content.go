package proto

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/leveret-mq/leveret/ops"
)

// Property flags of the basic class, in wire order from the top bit. The
// 14th, flagReserved (cluster-id, deprecated), is read and dropped.
const (
	flagContentType uint16 = 1 << (15 - iota)
	flagContentEncoding
	flagHeaders
	flagDeliveryMode
	flagPriority
	flagCorrelationID
	flagReplyTo
	flagExpiration
	flagMessageID
	flagTimestamp
	flagType
	flagUserID
	flagAppID
	flagReserved
	flagContinued uint16 = 1 // another flags word follows
)

// AppendContentHeader appends a content header frame to dst: class id,
// body size and msg's basic properties with their property flags. Zero-valued
// properties (empty strings, empty Headers, DeliveryMode 0, Priority 0, the
// zero time.Time) are omitted. On error (a shortstr over 255 bytes, headers
// that do not encode) it returns dst unchanged. It allocates only to grow dst.
func AppendContentHeader(dst []byte, channel, classID uint16, bodySize uint64, msg *ops.Message) ([]byte, error) {
	out, start := beginFrame(dst, FrameHeader, channel)
	e := encoder{buf: out}
	e.short(classID)
	e.short(0) // weight
	e.longlong(bodySize)
	e.short(propertyFlags(msg))
	shortstrIf(&e, msg.ContentType)
	shortstrIf(&e, msg.ContentEncoding)
	if len(msg.Headers) > 0 {
		e.table(msg.Headers)
	}
	if msg.DeliveryMode != 0 {
		e.octet(uint8(msg.DeliveryMode))
	}
	if msg.Priority != 0 {
		e.octet(msg.Priority)
	}
	shortstrIf(&e, msg.CorrelationID)
	shortstrIf(&e, msg.ReplyTo)
	shortstrIf(&e, msg.Expiration)
	shortstrIf(&e, msg.MessageID)
	if !msg.Timestamp.IsZero() {
		e.timestamp(msg.Timestamp)
	}
	shortstrIf(&e, msg.Type)
	shortstrIf(&e, msg.UserID)
	shortstrIf(&e, msg.AppID)
	out, err := e.result(dst)
	if err != nil {
		return dst, err
	}
	return endFrame(dst, out, start)
}

func shortstrIf(e *encoder, s string) {
	if s != "" {
		e.shortstr(s)
	}
}

func propertyFlags(msg *ops.Message) uint16 {
	var f uint16
	set := func(present bool, flag uint16) {
		if present {
			f |= flag
		}
	}
	set(msg.ContentType != "", flagContentType)
	set(msg.ContentEncoding != "", flagContentEncoding)
	set(len(msg.Headers) > 0, flagHeaders)
	set(msg.DeliveryMode != 0, flagDeliveryMode)
	set(msg.Priority != 0, flagPriority)
	set(msg.CorrelationID != "", flagCorrelationID)
	set(msg.ReplyTo != "", flagReplyTo)
	set(msg.Expiration != "", flagExpiration)
	set(msg.MessageID != "", flagMessageID)
	set(!msg.Timestamp.IsZero(), flagTimestamp)
	set(msg.Type != "", flagType)
	set(msg.UserID != "", flagUserID)
	set(msg.AppID != "", flagAppID)
	return f
}

// DecodeContentHeader decodes a content header frame's payload. It sets all
// of msg's properties (absent ones to zero) and leaves msg.Body alone. Only
// the basic class (60) has content in AMQP 0-9-1; other class ids are
// returned with an error wrapping ErrMalformed, as is truncated or
// over-long input. It never panics.
func DecodeContentHeader(payload []byte, msg *ops.Message) (classID uint16, bodySize uint64, err error) {
	return decodeContentHeader(payload, msg, &ops.Message{})
}

func decodeContentHeader(payload []byte, msg, prev *ops.Message) (classID uint16, bodySize uint64, err error) {
	d := decoder{src: payload}
	classID = d.short()
	d.short() // weight, unused
	bodySize = d.longlong()
	flags := d.short()
	for more := flags; more&flagContinued != 0 && d.err == nil; {
		more = d.short() // no class has this many properties: ignore
	}
	if d.err != nil {
		return classID, bodySize, d.err
	}
	if classID != ClassBasic {
		return classID, bodySize, fmt.Errorf("%w: content header for class %d", ErrMalformed, classID)
	}
	*msg = ops.Message{Body: msg.Body}
	str := func(flag uint16, prev string) string {
		if flags&flag == 0 {
			return ""
		}
		return d.shortstrLike(prev)
	}
	msg.ContentType = str(flagContentType, prev.ContentType)
	msg.ContentEncoding = str(flagContentEncoding, prev.ContentEncoding)
	if flags&flagHeaders != 0 {
		msg.Headers = d.table()
	}
	if flags&flagDeliveryMode != 0 {
		msg.DeliveryMode = ops.DeliveryMode(d.octet())
	}
	if flags&flagPriority != 0 {
		msg.Priority = d.octet()
	}
	msg.CorrelationID = str(flagCorrelationID, prev.CorrelationID)
	msg.ReplyTo = str(flagReplyTo, prev.ReplyTo)
	msg.Expiration = str(flagExpiration, prev.Expiration)
	msg.MessageID = str(flagMessageID, prev.MessageID)
	if flags&flagTimestamp != 0 {
		msg.Timestamp = d.timestamp()
	}
	msg.Type = str(flagType, prev.Type)
	msg.UserID = str(flagUserID, prev.UserID)
	msg.AppID = str(flagAppID, prev.AppID)
	str(flagReserved, "")
	return classID, bodySize, d.finish()
}

// AppendBodyFrames appends body to dst as body frames of at most frameMax
// bytes each, overhead included. frameMax 0 means no limit (one frame unless
// the body exceeds a frame's 2^32-1 payload bytes); a frameMax too small to
// carry any payload is taken as FrameMinSize. An empty body appends nothing.
func AppendBodyFrames(dst []byte, channel uint16, frameMax uint32, body []byte) []byte {
	dst, _ = appendBodyFrames(dst, nil, math.MaxInt, channel, frameMax, body)
	return dst
}

// appendBodyFrames appends body frames as AppendBodyFrames does, except
// that a frame carrying minRef payload bytes or more gets only its header
// and end byte in dst, its payload going to refs as a BodyRef into body.
func appendBodyFrames(dst []byte, refs []BodyRef, minRef int, channel uint16, frameMax uint32, body []byte) ([]byte, []BodyRef) {
	chunk := bodyChunk(frameMax)
	for len(body) > 0 {
		n := int(min(chunk, uint64(len(body))))
		dst = append(dst, FrameBody, uint8(channel>>8), uint8(channel))
		dst = binary.BigEndian.AppendUint32(dst, uint32(n))
		if n >= minRef {
			refs = append(refs, BodyRef{At: len(dst), Chunk: body[:n:n]})
		} else {
			dst = append(dst, body[:n]...)
		}
		dst = append(dst, FrameEnd)
		body = body[n:]
	}
	return dst, refs
}

// bodyChunk is the most body bytes one body frame carries under frameMax.
func bodyChunk(frameMax uint32) uint64 {
	switch {
	case frameMax == 0:
		return math.MaxUint32
	case frameMax <= FrameOverhead:
		return FrameMinSize - FrameOverhead
	default:
		return uint64(frameMax - FrameOverhead)
	}
}

// BodyRef is a piece of a body that is not copied into the encoded
// buffer: Chunk goes on the wire right after the buffer's first At bytes.
type BodyRef struct {
	At    int
	Chunk []byte
}

// MinBodyRef is the smallest body frame payload AppendPublishRefs leaves
// as a reference; smaller ones are cheaper to copy than to write as an
// I/O vector of their own.
const MinBodyRef = 16 << 10

// AppendPublishRefs is AppendPublish for a body that stays unchanged until
// the output is written: body frames of at least MinBodyRef bytes get only
// their frame header and end byte in dst, and their payload is appended to
// refs as a BodyRef into msg.Body. On error it returns dst and refs
// unchanged.
func AppendPublishRefs(dst []byte, refs []BodyRef, channel uint16, frameMax uint32, m *BasicPublish, msg *ops.Message) ([]byte, []BodyRef, error) {
	out, err := appendPublishHead(dst, channel, frameMax, m, msg)
	if err != nil {
		return dst, refs, err
	}
	out, refs = appendBodyFrames(out, refs, MinBodyRef, channel, frameMax, msg.Body)
	return out, refs, nil
}

// AppendPublish appends a basic.publish method frame, msg's content header
// and its body frames to dst, so that they go out contiguously. frameMax is
// the negotiated frame-max (0: none); a method or header frame larger than
// it is an error wrapping ErrFrameTooLarge. On error it returns dst
// unchanged. It allocates only to grow dst.
func AppendPublish(dst []byte, channel uint16, frameMax uint32, m *BasicPublish, msg *ops.Message) ([]byte, error) {
	out, err := appendPublishHead(dst, channel, frameMax, m, msg)
	if err != nil {
		return dst, err
	}
	return AppendBodyFrames(out, channel, frameMax, msg.Body), nil
}

// appendPublishHead appends the method and content header frames of a
// publish; on error the caller keeps its dst.
func appendPublishHead(dst []byte, channel uint16, frameMax uint32, m *BasicPublish, msg *ops.Message) ([]byte, error) {
	// The method frame is built here rather than by AppendMethodFrame so the
	// call to m.Append is static and m does not escape.
	out, start := beginFrame(dst, FrameMethod, channel)
	out = binary.BigEndian.AppendUint32(out, uint32(BasicPublishID))
	out, err := m.Append(out)
	if err != nil {
		return nil, err
	}
	if out, err = endFrame(dst, out, start); err != nil {
		return nil, err
	}
	if err := checkFrameMax(len(out)-start, frameMax, "basic.publish"); err != nil {
		return nil, err
	}
	hstart := len(out)
	if out, err = AppendContentHeader(out, channel, ClassBasic, uint64(len(msg.Body)), msg); err != nil {
		return nil, err
	}
	if err := checkFrameMax(len(out)-hstart, frameMax, "content header"); err != nil {
		return nil, err
	}
	return out, nil
}

func checkFrameMax(size int, frameMax uint32, what string) error {
	if frameMax != 0 && uint64(size) > uint64(frameMax) {
		return fmt.Errorf("%w: %s frame of %d bytes, frame-max %d", ErrFrameTooLarge, what, size, frameMax)
	}
	return nil
}
