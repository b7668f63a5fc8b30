package proto

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/leveret-mq/leveret/ops"
	"github.com/stretchr/testify/require"
)

func fullMessage() ops.Message {
	return ops.Message{
		ContentType:     "application/json",
		ContentEncoding: "gzip",
		Headers:         canonicalTable(),
		DeliveryMode:    ops.Persistent,
		Priority:        9,
		CorrelationID:   "corr",
		ReplyTo:         "reply-queue",
		Expiration:      "60000",
		MessageID:       "msg-1",
		Timestamp:       testTime,
		Type:            "order.created",
		UserID:          "guest",
		AppID:           "leveret-test",
	}
}

func TestContentHeaderRoundTrip(t *testing.T) {
	for name, msg := range map[string]ops.Message{
		"full":  fullMessage(),
		"empty": {},
		"some":  {DeliveryMode: ops.Transient, Type: "t", Headers: ops.Table{"a": "b"}},
	} {
		t.Run(name, func(t *testing.T) {
			frame, err := AppendContentHeader(nil, 3, ClassBasic, 12345, &msg)
			require.NoError(t, err)
			f, err := NewFrameReader(bytes.NewReader(frame)).ReadFrame()
			require.NoError(t, err)
			require.Equal(t, uint8(FrameHeader), f.Type)
			require.Equal(t, uint16(3), f.Channel)

			got := ops.Message{ContentType: "stale", Body: []byte("kept")}
			class, size, err := DecodeContentHeader(f.Payload, &got)
			require.NoError(t, err)
			require.Equal(t, uint16(ClassBasic), class)
			require.Equal(t, uint64(12345), size)
			require.Equal(t, "kept", string(got.Body))
			got.Body = nil
			require.Equal(t, msg, got)
		})
	}
}

func TestContentHeaderWire(t *testing.T) {
	msg := ops.Message{ContentType: "t", DeliveryMode: ops.Persistent, AppID: "a"}
	frame, err := AppendContentHeader(nil, 1, ClassBasic, 5, &msg)
	require.NoError(t, err)
	want := "\x02\x00\x01\x00\x00\x00\x13" + // header frame, channel 1, 19 bytes
		"\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05" + // class 60, weight, body size
		"\x90\x08" + // content-type, delivery-mode, app-id
		"\x01t\x02\x01a\xce"
	require.Equal(t, []byte(want), frame)
}

func TestContentHeaderDecodeQuirks(t *testing.T) {
	// The reserved (cluster-id) property is read and dropped, and extra
	// flag words are skipped.
	payload := []byte("\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x07" +
		"\x80\x05\x00\x00" + // content-type, reserved, continued; empty second word
		"\x01t\x07cluster")
	var msg ops.Message
	class, size, err := DecodeContentHeader(payload, &msg)
	require.NoError(t, err)
	require.Equal(t, uint16(60), class)
	require.Equal(t, uint64(7), size)
	require.Equal(t, ops.Message{ContentType: "t"}, msg)

	// Another class has no basic properties to decode.
	_, _, err = DecodeContentHeader([]byte("\x00\x32\x00\x00\x00\x00\x00\x00\x00\x00\x00\x07\x00\x00"), &msg)
	require.ErrorIs(t, err, ErrMalformed)

	full := fullMessage()
	frame, err := AppendContentHeader(nil, 1, ClassBasic, 1, &full)
	require.NoError(t, err)
	payload = frame[7 : len(frame)-1]
	for i := range len(payload) {
		_, _, err := DecodeContentHeader(payload[:i], &msg)
		require.ErrorIs(t, err, ErrMalformed, "cut at %d", i)
	}
	_, _, err = DecodeContentHeader(append(payload, 0), &msg)
	require.ErrorIs(t, err, ErrMalformed)
}

func TestContentHeaderErrors(t *testing.T) {
	for _, msg := range []ops.Message{
		{ContentType: strings.Repeat("x", 256)},
		{Headers: ops.Table{"bad": func() {}}},
	} {
		out, err := AppendContentHeader([]byte("keep"), 1, ClassBasic, 0, &msg)
		require.ErrorIs(t, err, ErrInvalidValue)
		require.Equal(t, "keep", string(out))
	}
}

// readAll reads frames until EOF, copying payloads.
func readAll(t *testing.T, b []byte) []Frame {
	t.Helper()
	fr := NewFrameReader(bytes.NewReader(b))
	var frames []Frame
	for {
		f, err := fr.ReadFrame()
		if err == io.EOF {
			return frames
		}
		require.NoError(t, err)
		f.Payload = bytes.Clone(f.Payload)
		frames = append(frames, f)
	}
}

func TestAppendPublish(t *testing.T) {
	body := make([]byte, 10000)
	for i := range body {
		body[i] = byte(i)
	}
	msg := fullMessage()
	msg.Body = body
	pub := &BasicPublish{Exchange: "ex", RoutingKey: "rk", Mandatory: true}
	out, err := AppendPublish([]byte("x"), 5, 4096, pub, &msg)
	require.NoError(t, err)
	require.Equal(t, "x", string(out[:1]))

	frames := readAll(t, out[1:])
	require.Len(t, frames, 5)
	m, err := DecodeMethod(frames[0].Payload)
	require.NoError(t, err)
	require.Equal(t, pub, m)
	var got ops.Message
	_, size, err := DecodeContentHeader(frames[1].Payload, &got)
	require.NoError(t, err)
	require.Equal(t, uint64(10000), size)
	var joined []byte
	for i, f := range frames[2:] {
		require.Equal(t, uint8(FrameBody), f.Type)
		require.Equal(t, uint16(5), f.Channel)
		require.LessOrEqual(t, len(f.Payload)+FrameOverhead, 4096, "body frame %d", i)
		joined = append(joined, f.Payload...)
	}
	require.Equal(t, []int{4088, 4088, 1824}, []int{len(frames[2].Payload), len(frames[3].Payload), len(frames[4].Payload)})
	require.Equal(t, body, joined)

	msg.Body = nil
	out, err = AppendPublish(nil, 5, 4096, pub, &msg)
	require.NoError(t, err)
	frames = readAll(t, out)
	require.Len(t, frames, 2, "an empty body sends no body frame")
	_, size, err = DecodeContentHeader(frames[1].Payload, &got)
	require.NoError(t, err)
	require.Zero(t, size)
}

func TestAppendPublishErrors(t *testing.T) {
	msg := ops.Message{Headers: ops.Table{"big": strings.Repeat("h", 5000)}}
	out, err := AppendPublish([]byte("keep"), 1, 4096, &BasicPublish{}, &msg)
	require.ErrorIs(t, err, ErrFrameTooLarge)
	require.Equal(t, "keep", string(out))

	_, err = AppendPublish(nil, 1, 0, &BasicPublish{}, &msg)
	require.NoError(t, err, "frame-max 0 means no limit")

	out, err = AppendPublish([]byte("keep"), 1, 4096, &BasicPublish{Exchange: strings.Repeat("e", 300)}, &msg)
	require.ErrorIs(t, err, ErrInvalidValue)
	require.Equal(t, "keep", string(out))

	msg = ops.Message{MessageID: strings.Repeat("m", 256)}
	out, err = AppendPublish([]byte("keep"), 1, 4096, &BasicPublish{}, &msg)
	require.ErrorIs(t, err, ErrInvalidValue)
	require.Equal(t, "keep", string(out))
}

func TestAppendBodyFrames(t *testing.T) {
	body := bytes.Repeat([]byte("b"), 100)
	require.Empty(t, AppendBodyFrames(nil, 1, 4096, nil))
	require.Len(t, readAll(t, AppendBodyFrames(nil, 1, 0, body)), 1)
	require.Len(t, readAll(t, AppendBodyFrames(nil, 1, 4, body)), 1) // raised to FrameMinSize
	frames := readAll(t, AppendBodyFrames(nil, 1, 9, body))          // one byte per frame
	require.Len(t, frames, 100)
	frames = readAll(t, AppendBodyFrames(nil, 1, 58, body))
	require.Len(t, frames, 2)
	require.Len(t, frames[0].Payload, 50)
	exact := readAll(t, AppendBodyFrames(nil, 1, 108, body))
	require.Len(t, exact, 1)
}

func TestAppendPublishNoAlloc(t *testing.T) {
	msg := fullMessage()
	msg.Body = make([]byte, 10000)
	pub := BasicPublish{Exchange: "ex", RoutingKey: "rk"}
	buf := make([]byte, 0, 64<<10)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := AppendPublish(buf[:0], 1, 4096, &pub, &msg); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs)
}

// TestAppendPublishRefs: splicing the references back into the buffer
// gives exactly AppendPublish's bytes, and only chunks of at least
// MinBodyRef are left as references, pointing into the body itself.
func TestAppendPublishRefs(t *testing.T) {
	for _, size := range []int{0, 100, MinBodyRef - 1, MinBodyRef, 3*4096 + 17, 300 << 10} {
		for _, frameMax := range []uint32{4096, 131072, 0} {
			body := make([]byte, size)
			for i := range body {
				body[i] = byte(i * 7)
			}
			msg := ops.Message{ContentType: "text/plain", Body: body}
			pub := &BasicPublish{Exchange: "e", RoutingKey: "r"}
			want, err := AppendPublish([]byte("x"), 3, frameMax, pub, &msg)
			require.NoError(t, err)
			out, refs, err := AppendPublishRefs([]byte("x"), nil, 3, frameMax, pub, &msg)
			require.NoError(t, err)
			var got []byte
			at := 0
			for _, r := range refs {
				require.GreaterOrEqual(t, len(r.Chunk), MinBodyRef)
				got = append(append(got, out[at:r.At]...), r.Chunk...)
				at = r.At
			}
			got = append(got, out[at:]...)
			require.Equal(t, want, got, "size %d, frameMax %d", size, frameMax)
			if len(refs) > 0 { // a reference into the body, not a copy
				last := refs[len(refs)-1].Chunk
				body[len(body)-1]++
				require.Equal(t, body[len(body)-1], last[len(last)-1])
			}
			if frameMax == 4096 || size < MinBodyRef {
				require.Empty(t, refs, "chunks under MinBodyRef are copied")
			}
		}
	}
	_, refs, err := AppendPublishRefs([]byte("keep"), []BodyRef{{At: 1}}, 1, 4096, &BasicPublish{Exchange: strings.Repeat("e", 300)}, &ops.Message{Body: make([]byte, 1<<20)})
	require.Error(t, err)
	require.Len(t, refs, 1, "refs unchanged on error")
}
