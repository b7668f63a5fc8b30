package proto

import (
	"bufio"
	"bytes"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

// trickle returns its data a few octets per Read, as a slow link does.
type trickle struct{ data []byte }

func (t *trickle) Read(p []byte) (int, error) {
	if len(t.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), 5)], t.data)
	t.data = t.data[n:]
	return n, nil
}

// TestOctetsCountEveryRead: Octets counts octets as the socket gives them,
// not as frames complete (a large frame arriving slowly is a live peer);
// a caller's own *bufio.Reader is used as it is and counted per frame.
func TestOctetsCountEveryRead(t *testing.T) {
	frame := AppendBodyFrames(nil, 1, 131072, bytes.Repeat([]byte("b"), 1000))
	src := &trickle{data: frame[:500]} // half a frame
	fr := NewFrameReader(src)
	_, err := fr.ReadFrame()
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	require.Equal(t, uint64(500), fr.Octets(), "octets of a frame still arriving")

	br := bufio.NewReaderSize(bytes.NewReader(append(frame, frame...)), 64<<10)
	fr = NewFrameReader(br)
	require.Same(t, br, fr.r, "a large enough bufio.Reader is used as it is")
	_, err = fr.ReadFrame()
	require.NoError(t, err)
	require.Equal(t, uint64(len(frame)), fr.Octets())
}
