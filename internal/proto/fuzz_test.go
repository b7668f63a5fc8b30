package proto

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/leveret-mq/leveret/ops"
)

// seedMethods returns a populated encoding of every method, ids included.
func seedMethods(t testing.TB) [][]byte {
	var seeds [][]byte
	for _, id := range allMethods {
		m := NewMethod(id)
		populate(t, m, 1)
		frame, err := AppendMethodFrame(nil, 1, m)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, frame[7:len(frame)-1])
	}
	return seeds
}

// seedStream returns a valid frame stream: a publish, a heartbeat and a
// method with a table.
func seedStream(t testing.TB) []byte {
	msg := fullMessage()
	msg.Body = []byte("hello, world")
	out, err := AppendPublish(nil, 1, 4096, &BasicPublish{Exchange: "e", RoutingKey: "r"}, &msg)
	if err != nil {
		t.Fatal(err)
	}
	out = AppendHeartbeat(out)
	out, err = AppendMethodFrame(out, 0, &ConnectionStart{VersionMinor: 9, ServerProperties: ops.Table{"product": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func FuzzFrameReader(f *testing.F) {
	f.Add(seedStream(f))
	for _, payload := range seedMethods(f) {
		frame := binary.BigEndian.AppendUint32([]byte{FrameMethod, 0, 1}, uint32(len(payload)))
		frame = append(frame, payload...)
		f.Add(append(frame, FrameEnd))
	}
	f.Add(AppendHeartbeat(nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := NewFrameReader(bytes.NewReader(data))
		fr.SetMaxFrameSize(FrameMinSize)
		for {
			frame, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if uint64(len(frame.Payload))+FrameOverhead > FrameMinSize {
				t.Fatalf("frame of %d payload bytes passed a %d limit", len(frame.Payload), FrameMinSize)
			}
			switch frame.Type {
			case FrameMethod:
				checkMethod(t, frame.Payload)
			case FrameHeader:
				checkContentHeader(t, frame.Payload)
			}
		}
	})
}

func FuzzDecodeMethod(f *testing.F) {
	for _, s := range seedMethods(f) {
		f.Add(s)
	}
	f.Fuzz(checkMethod)
}

func FuzzDecodeTable(f *testing.F) {
	seed, err := AppendTable(nil, canonicalTable())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		tb, n, err := DecodeTable(data)
		if err != nil {
			return
		}
		if n < 4 || n > len(data) {
			t.Fatalf("consumed %d of %d bytes", n, len(data))
		}
		// Re-encoding is stable (bytes, not values: NaN != NaN).
		enc, err := AppendTable(nil, tb)
		if err != nil {
			t.Fatalf("decoded table does not encode: %v", err)
		}
		tb2, n2, err := DecodeTable(enc)
		if err != nil || n2 != len(enc) {
			t.Fatalf("re-decode: %v (%d of %d bytes)", err, n2, len(enc))
		}
		enc2, err := AppendTable(nil, tb2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("re-encoding differs: %v\n%q\n%q", err, enc, enc2)
		}
	})
}

// checkMethod decodes a method payload; if it decodes, it must re-encode to
// bytes that decode and re-encode identically.
func checkMethod(t *testing.T, payload []byte) {
	m, err := DecodeMethod(payload)
	if err != nil {
		return
	}
	frame, err := AppendMethodFrame(nil, 0, m)
	if err != nil {
		t.Fatalf("decoded %s does not encode: %v", m.ID(), err)
	}
	m2, err := DecodeMethod(frame[7 : len(frame)-1])
	if err != nil {
		t.Fatalf("re-decode %s: %v", m.ID(), err)
	}
	frame2, err := AppendMethodFrame(nil, 0, m2)
	if err != nil || !bytes.Equal(frame, frame2) {
		t.Fatalf("re-encoding %s differs: %v", m.ID(), err)
	}
}

func checkContentHeader(t *testing.T, payload []byte) {
	var msg ops.Message
	class, size, err := DecodeContentHeader(payload, &msg)
	if err != nil {
		return
	}
	frame, err := AppendContentHeader(nil, 0, class, size, &msg)
	if err != nil {
		t.Fatalf("decoded header does not encode: %v", err)
	}
	var msg2 ops.Message
	if _, _, err := DecodeContentHeader(frame[7:len(frame)-1], &msg2); err != nil {
		t.Fatalf("re-decode: %v", err)
	}
	frame2, err := AppendContentHeader(nil, 0, class, size, &msg2)
	if err != nil || !bytes.Equal(frame, frame2) {
		t.Fatalf("re-encoding differs: %v", err)
	}
}
