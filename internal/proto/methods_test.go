package proto

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/leveret-mq/leveret/ops"
	"github.com/stretchr/testify/require"
)

// populate fills every field of m by reflection. pattern selects which bits
// are set (0: all, 1 and 2: alternating, 3: none) and varies the numbers, so
// bit packing and field order are both exercised.
func populate(t testing.TB, m Method, pattern int) {
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		f, name := v.Field(i), v.Type().Field(i).Name
		switch f.Kind() {
		case reflect.Bool:
			f.SetBool(pattern == 0 || (pattern < 3 && (i+pattern)%2 == 0))
		case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			n := uint64(0xF1E2D3C4B5A69788) >> (i + pattern)
			f.SetUint(n & (1<<f.Type().Bits() - 1))
		case reflect.String:
			f.SetString(strings.Repeat(name, pattern+1))
		case reflect.Map:
			f.Set(reflect.ValueOf(canonicalTable()))
		default:
			if f.Type() != reflect.TypeFor[time.Time]() {
				t.Fatalf("%T.%s: unhandled type %s", m, name, f.Type())
			}
			f.Set(reflect.ValueOf(testTime))
		}
	}
}

func TestMethodRoundTrip(t *testing.T) {
	for _, id := range allMethods {
		for pattern := range 4 {
			m := NewMethod(id)
			require.NotNil(t, m, id)
			require.Equal(t, id, m.ID())
			populate(t, m, pattern)

			args, err := m.Append(nil)
			require.NoError(t, err, id)
			got := NewMethod(id)
			require.NoError(t, got.Decode(args), id)
			require.Equal(t, m, got, "%s pattern %d", id, pattern)

			// Through a frame and DecodeMethod.
			frame, err := AppendMethodFrame([]byte("x"), 7, m)
			require.NoError(t, err)
			fr := NewFrameReader(bytes.NewReader(frame[1:]))
			f, err := fr.ReadFrame()
			require.NoError(t, err)
			require.Equal(t, Frame{Type: FrameMethod, Channel: 7, Payload: f.Payload}, f)
			decoded, err := DecodeMethod(f.Payload)
			require.NoError(t, err, id)
			require.Equal(t, m, decoded)

			// Every truncation fails, as does a trailing byte.
			for i := range len(args) {
				require.ErrorIs(t, NewMethod(id).Decode(args[:i]), ErrMalformed, "%s cut at %d", id, i)
			}
			require.ErrorIs(t, NewMethod(id).Decode(append(args, 0)), ErrMalformed, id)
		}
	}
}

func TestMethodWire(t *testing.T) {
	cases := []struct {
		m    Method
		want string
	}{
		{&QueueDeclare{Queue: "q", Durable: true, NoWait: true, Arguments: ops.Table{"x": int32(1)}},
			"\x00\x00\x01q\x12\x00\x00\x00\x07\x01xI\x00\x00\x00\x01"},
		{&BasicPublish{Exchange: "ex", RoutingKey: "rk", Mandatory: true},
			"\x00\x00\x02ex\x02rk\x01"},
		{&BasicNack{DeliveryTag: 258, Requeue: true},
			"\x00\x00\x00\x00\x00\x00\x01\x02\x02"},
		{&ConnectionClose{ReplyCode: uint16(NotFound), ReplyText: "gone", ClassID: 50, MethodID: 10},
			"\x01\x94\x04gone\x00\x32\x00\x0a"},
		{&ChannelOpenOk{Reserved1: "r"}, "\x00\x00\x00\x01r"},
		{&ConfirmSelect{NoWait: true}, "\x01"},
		{&TxSelect{}, ""},
	}
	for _, c := range cases {
		got, err := c.m.Append([]byte{})
		require.NoError(t, err)
		require.Equal(t, []byte(c.want), got, "%s", c.m.ID())
	}

	frame, err := AppendMethodFrame(nil, 0x0102, &BasicQos{PrefetchCount: 10, Global: true})
	require.NoError(t, err)
	require.Equal(t, []byte("\x01\x01\x02\x00\x00\x00\x0b\x00\x3c\x00\x0a\x00\x00\x00\x00\x00\x0a\x01\xce"), frame)
}

func TestLongString(t *testing.T) {
	m := &ConnectionStart{VersionMinor: 9, Mechanisms: strings.Repeat("PLAIN ", 1000)}
	args, err := m.Append(nil)
	require.NoError(t, err)
	var got ConnectionStart
	require.NoError(t, got.Decode(args))
	require.Equal(t, m, &got)
}

func TestMethodAppendErrors(t *testing.T) {
	long := strings.Repeat("q", 256)
	for _, m := range []Method{
		&QueueDeclare{Queue: long},
		&QueueDeclare{Queue: "q", Arguments: ops.Table{"x": struct{}{}}},
		&BasicPublish{RoutingKey: long},
	} {
		dst := []byte("keep")
		out, err := m.Append(dst)
		require.ErrorIs(t, err, ErrInvalidValue)
		require.Equal(t, "keep", string(out))
		out, err = AppendMethodFrame(dst, 1, m)
		require.ErrorIs(t, err, ErrInvalidValue)
		require.Equal(t, "keep", string(out))
	}
	_, err := (&QueueBind{RoutingKey: long}).Append(nil)
	require.ErrorContains(t, err, "shortstr of 256 bytes")
}

func TestMethodIDs(t *testing.T) {
	require.Equal(t, "queue.declare", QueueDeclareID.String())
	require.Equal(t, "basic.recover-async", BasicRecoverAsyncID.String())
	require.Equal(t, "method(50,99)", MethodID(50<<16|99).String())
	require.Equal(t, uint16(60), BasicDeliverID.Class())
	require.Equal(t, uint16(60), BasicDeliverID.Method())
	require.Nil(t, NewMethod(50<<16|99))

	var content []MethodID
	for _, id := range allMethods {
		if id.HasContent() {
			content = append(content, id)
		}
		for _, r := range id.Replies() {
			require.True(t, id.Synchronous(), "%s has replies", id)
			require.Equal(t, id.Class(), r.Class())
		}
	}
	require.Equal(t, []MethodID{BasicPublishID, BasicReturnID, BasicDeliverID, BasicGetOkID}, content)

	require.Equal(t, []MethodID{BasicGetOkID, BasicGetEmptyID}, BasicGetID.Replies())
	require.Equal(t, []MethodID{BasicRecoverOkID}, BasicRecoverID.Replies())
	require.Equal(t, []MethodID{QueueDeclareOkID}, QueueDeclareID.Replies())
	require.Equal(t, []MethodID{ConfirmSelectOkID}, ConfirmSelectID.Replies())
	require.Nil(t, BasicPublishID.Replies())
	require.Nil(t, QueueDeclareOkID.Replies())
	require.True(t, QueueDeclareOkID.Synchronous())
	require.False(t, BasicAckID.Synchronous())
	require.False(t, ChannelFlowOkID.Synchronous())
	require.False(t, MethodID(1).Synchronous())

	allocs := testing.AllocsPerRun(100, func() {
		_ = BasicGetID.Replies()
		_ = QueueDeclareID.String()
	})
	require.Zero(t, allocs)
}

func TestDecodeMethodErrors(t *testing.T) {
	for _, payload := range [][]byte{
		nil,
		{0, 60},
		{0, 60, 0, 99},                  // unknown method
		{0, 60, 0, 80, 0},               // truncated basic.ack
		{0, 60, 0, 80, 1, 2},            // truncated basic.ack
		{0, 20, 0, 11, 0, 0, 0, 5, 'a'}, // long string past the end
	} {
		m, err := DecodeMethod(payload)
		require.ErrorIs(t, err, ErrMalformed, "%q", payload)
		require.Nil(t, m)
	}
	_, err := DecodeMethod(binary.BigEndian.AppendUint32(nil, uint32(BasicAckID)))
	require.ErrorContains(t, err, "basic.ack")
}

func TestReplyCodes(t *testing.T) {
	require.Equal(t, "NOT_FOUND", NotFound.String())
	require.Equal(t, "REPLY_SUCCESS", ReplySuccess.String())
	require.Equal(t, "reply code 999", ReplyCode(999).String())
	require.Equal(t, ReplyCode(406), PreconditionFailed)
	require.False(t, NotFound.Hard())
	require.False(t, AccessRefused.Hard())
	require.True(t, ConnectionForced.Hard())
	require.True(t, InternalError.Hard())
	require.False(t, ReplySuccess.Hard())
	require.False(t, ReplyCode(999).Hard())
}

// TestReplyCodeNamesMatchOps: ops.ReplyCode, the public type, names every
// code as the generated table does.
func TestReplyCodeNamesMatchOps(t *testing.T) {
	for c := ReplyCode(0); c < 600; c++ {
		require.Equal(t, c.String(), ops.ReplyCode(c).String(), "code %d", c)
	}
}
