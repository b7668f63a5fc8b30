package fakeserver_test

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/leveret-mq/leveret/internal/fakeserver"
	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// rawClient is the client side of a connection, spoken frame by frame.
type rawClient struct {
	t  *testing.T
	nc net.Conn
	fr *proto.FrameReader
}

func dialRaw(t *testing.T, s *fakeserver.Server) *rawClient {
	t.Helper()
	addr := s.URL()[len("amqp://guest:guest@"):]
	addr = addr[:len(addr)-len("/%2f")]
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	require.NoError(t, nc.SetDeadline(time.Now().Add(10*time.Second)))
	return &rawClient{t: t, nc: nc, fr: proto.NewFrameReader(nc)}
}

func (c *rawClient) send(channel uint16, m proto.Method) {
	c.t.Helper()
	_, err := c.nc.Write(fakeserver.MethodFrame(channel, m))
	require.NoError(c.t, err)
}

// read returns the next method, skipping heartbeats, and how many it skipped.
func (c *rawClient) read() (uint16, proto.Method, int) {
	c.t.Helper()
	skipped := 0
	for {
		f, err := c.fr.ReadFrame()
		require.NoError(c.t, err)
		if f.Type == proto.FrameHeartbeat {
			skipped++
			continue
		}
		require.Equal(c.t, uint8(proto.FrameMethod), f.Type)
		m, err := proto.DecodeMethod(f.Payload)
		require.NoError(c.t, err)
		return f.Channel, m, skipped
	}
}

// handshake runs the client side up to open-ok and returns the tune.
func (c *rawClient) handshake() *proto.ConnectionTune {
	c.t.Helper()
	_, err := c.nc.Write(proto.ProtocolHeader)
	require.NoError(c.t, err)
	_, m, _ := c.read()
	start, ok := m.(*proto.ConnectionStart)
	require.True(c.t, ok, "got %v", m.ID())
	require.Equal(c.t, "PLAIN", start.Mechanisms)
	require.Equal(c.t, uint8(9), start.VersionMinor)
	caps, ok := start.ServerProperties["capabilities"].(ops.Table)
	require.True(c.t, ok)
	require.Equal(c.t, true, caps["authentication_failure_close"])
	c.send(0, &proto.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00guest\x00guest", Locale: "en_US"})
	_, m, _ = c.read()
	tune, ok := m.(*proto.ConnectionTune)
	require.True(c.t, ok, "got %v", m.ID())
	c.send(0, &proto.ConnectionTuneOk{ChannelMax: tune.ChannelMax, FrameMax: tune.FrameMax, Heartbeat: tune.Heartbeat})
	c.send(0, &proto.ConnectionOpen{VirtualHost: "/"})
	_, m, _ = c.read()
	require.Equal(c.t, proto.ConnectionOpenOkID, m.ID())
	return tune
}

func TestFakeHandshakeAndScript(t *testing.T) {
	got := make(chan fakeserver.Handshake, 1)
	beats := make(chan int, 1)
	s := fakeserver.StartWith(t, fakeserver.Options{Heartbeat: 7}, func(c *fakeserver.Conn) {
		ch, m := c.Expect(t, proto.QueueDeclareID)
		beats <- c.Heartbeats() // the two heartbeats came before the declare
		got <- c.Handshake()
		c.Send(ch, &proto.QueueDeclareOk{Queue: m.(*proto.QueueDeclare).Queue, MessageCount: 3})
		c.Serve()
	})
	require.Contains(t, s.URL(), "amqp://guest:guest@127.0.0.1:")
	c := dialRaw(t, s)
	tune := c.handshake()
	require.Equal(t, proto.ConnectionTune{ChannelMax: 2047, FrameMax: 131072, Heartbeat: 7}, *tune)

	_, err := c.nc.Write(append(proto.AppendHeartbeat(nil), proto.AppendHeartbeat(nil)...))
	require.NoError(t, err)
	c.send(1, &proto.QueueDeclare{Queue: "q"})
	ch, m, _ := c.read()
	require.Equal(t, uint16(1), ch)
	require.Equal(t, &proto.QueueDeclareOk{Queue: "q", MessageCount: 3}, m)
	require.Equal(t, 2, <-beats)
	hs := <-got
	require.NoError(t, hs.Err)
	require.Equal(t, "PLAIN", hs.StartOk.Mechanism)
	require.Equal(t, "\x00guest\x00guest", hs.StartOk.Response)
	require.Equal(t, uint16(7), hs.TuneOk.Heartbeat)
	require.Equal(t, "/", hs.Vhost)

	// Serve answers the close handshake and the server hangs up.
	c.send(0, &proto.ConnectionClose{ReplyCode: 200})
	_, m, _ = c.read()
	require.Equal(t, proto.ConnectionCloseOkID, m.ID())
	_, err = c.fr.ReadFrame()
	require.Error(t, err)
	require.Len(t, s.Conns(), 1)
}

func TestFakeRejectAuth(t *testing.T) {
	closeOk := make(chan proto.MethodID, 1)
	s := fakeserver.StartWith(t, fakeserver.Options{RejectAuth: true}, func(c *fakeserver.Conn) {
		_, m, err := c.ReadMethod()
		if err == nil {
			closeOk <- m.ID()
		}
	})
	c := dialRaw(t, s)
	_, err := c.nc.Write(proto.ProtocolHeader)
	require.NoError(t, err)
	c.read()
	c.send(0, &proto.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00guest\x00wrong"})
	_, m, _ := c.read()
	cl, ok := m.(*proto.ConnectionClose)
	require.True(t, ok, "got %v", m.ID())
	require.Equal(t, uint16(403), cl.ReplyCode)
	c.send(0, &proto.ConnectionCloseOk{})
	require.Equal(t, proto.ConnectionCloseOkID, <-closeOk)
}

func TestFakeHangUpAfterStartOk(t *testing.T) {
	ran := make(chan struct{}, 1)
	s := fakeserver.StartWith(t, fakeserver.Options{HangUpAfterStartOk: true}, func(*fakeserver.Conn) { ran <- struct{}{} })
	c := dialRaw(t, s)
	_, err := c.nc.Write(proto.ProtocolHeader)
	require.NoError(t, err)
	c.read()
	c.send(0, &proto.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00guest\x00guest"})
	_, err = c.fr.ReadFrame()
	require.Error(t, err)
	s.Close()
	require.Empty(t, ran, "no script runs after a hang-up")
	require.ErrorContains(t, s.Conns()[0].Handshake().Err, "hung up")
}

func TestFakePipeAutoOpenAndSendContent(t *testing.T) {
	served := make(chan error, 1)
	cli, _ := fakeserver.Pipe(t, fakeserver.Options{AutoOpen: true}, func(c *fakeserver.Conn) {
		ch, _ := c.Expect(t, proto.BasicGetID) // channel.open was answered by AutoOpen
		c.SendContent(ch, &proto.BasicGetOk{DeliveryTag: 1}, &ops.Message{ContentType: "text/plain", Body: []byte("hello")})
		served <- c.Serve()
	})
	defer cli.Close()
	fr := proto.NewFrameReader(cli)
	write := func(b []byte) {
		_, err := cli.Write(b)
		require.NoError(t, err)
	}
	readFrame := func() proto.Frame {
		f, err := fr.ReadFrame()
		require.NoError(t, err)
		return proto.Frame{Type: f.Type, Channel: f.Channel, Payload: append([]byte(nil), f.Payload...)}
	}
	write(fakeserver.MethodFrame(3, &proto.ChannelOpen{}))
	f := readFrame()
	m, err := proto.DecodeMethod(f.Payload)
	require.NoError(t, err)
	require.Equal(t, proto.ChannelOpenOkID, m.ID())
	require.Equal(t, uint16(3), f.Channel)

	write(fakeserver.MethodFrame(3, &proto.BasicGet{Queue: "q"}))
	f = readFrame()
	m, err = proto.DecodeMethod(f.Payload)
	require.NoError(t, err)
	require.Equal(t, &proto.BasicGetOk{DeliveryTag: 1}, m)
	f = readFrame()
	require.Equal(t, uint8(proto.FrameHeader), f.Type)
	var msg ops.Message
	_, size, err := proto.DecodeContentHeader(f.Payload, &msg)
	require.NoError(t, err)
	require.Equal(t, uint64(5), size)
	require.Equal(t, "text/plain", msg.ContentType)
	f = readFrame()
	require.Equal(t, proto.Frame{Type: proto.FrameBody, Channel: 3, Payload: []byte("hello")}, f)

	// Serve ignores content and answers the close.
	pub, err := proto.AppendPublish(nil, 3, 131072, &proto.BasicPublish{RoutingKey: "k"}, &ops.Message{Body: []byte("x")})
	require.NoError(t, err)
	write(pub)
	write(fakeserver.MethodFrame(0, &proto.ConnectionClose{ReplyCode: 200}))
	f = readFrame()
	m, err = proto.DecodeMethod(f.Payload)
	require.NoError(t, err)
	require.Equal(t, proto.ConnectionCloseOkID, m.ID())
	require.NoError(t, <-served)
}

func TestFakeReadTimeoutAndContentFrames(t *testing.T) {
	results := make(chan error, 2)
	cli, _ := fakeserver.Pipe(t, fakeserver.Options{ReadTimeout: 50 * time.Millisecond}, func(c *fakeserver.Conn) {
		_, _, err := c.ReadMethod()
		results <- err
		_, _, err = c.ReadMethod()
		results <- err
	})
	defer cli.Close()
	require.ErrorIs(t, <-results, fakeserver.ErrTimeout)
	_, err := cli.Write(fakeserver.RawFrame(proto.FrameBody, 1, []byte("x")))
	require.NoError(t, err)
	require.ErrorContains(t, <-results, "where a method was expected")
}

func TestFakeKeepAlive(t *testing.T) {
	s := fakeserver.StartWith(t, fakeserver.Options{Heartbeat: 1, KeepAlive: true}, nil)
	c := dialRaw(t, s)
	c.handshake()
	// The server sends heartbeats every half second; within 3 s it must
	// have sent several before it answers the close.
	time.Sleep(1200 * time.Millisecond)
	c.send(0, &proto.ConnectionClose{ReplyCode: 200})
	_, m, skipped := c.read()
	require.Equal(t, proto.ConnectionCloseOkID, m.ID())
	require.GreaterOrEqual(t, skipped, 1)
}

func TestFakeCloseJoinsBlockedScripts(t *testing.T) {
	started := make(chan struct{}, 2)
	s := fakeserver.Start(t, func(c *fakeserver.Conn) {
		started <- struct{}{}
		<-c.Done() // a script that never returns on its own
	})
	a, b := dialRaw(t, s), dialRaw(t, s)
	a.handshake()
	b.handshake()
	<-started
	<-started
	done := make(chan struct{})
	go func() { // owner: this test; exits when Close returns.
		s.Close()
		s.Close() // idempotent
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not join the scripts")
	}
	for _, c := range s.Conns() {
		require.Error(t, c.Err())
	}
	_, err := a.fr.ReadFrame()
	require.Error(t, err, "the server hung up")
}

func TestFakeRawFrame(t *testing.T) {
	b := fakeserver.RawFrame(proto.FrameMethod, 9, []byte{0, 20, 0, 41})
	require.Equal(t, []byte{1, 0, 9, 0, 0, 0, 4, 0, 20, 0, 41, 0xCE}, b)
	require.Equal(t, fakeserver.MethodFrame(9, &proto.ChannelCloseOk{}), b)
}
