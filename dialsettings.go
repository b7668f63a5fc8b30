package leveret

import (
	"errors"
	"io"
	"strconv"
	"strings"
	"syscall"

	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// frameMaxRabbitMQ41 is the smallest frame_max RabbitMQ accepts from 4.1
// on; below it the broker closes the socket after connection.tune-ok, and
// only its log says why.
const frameMaxRabbitMQ41 = 8192

// frameMaxFloor is the smallest frame_max the broker that sent server
// accepts, and who it is, for the message: 8192 for RabbitMQ 4.1 and
// later, else the protocol's minimum.
func frameMaxFloor(server ops.Table) (uint32, string) {
	product, _ := server["product"].(string)
	version, _ := server["version"].(string)
	if product == "RabbitMQ" && versionAtLeast(version, 4, 1) {
		return frameMaxRabbitMQ41, "RabbitMQ " + version
	}
	return proto.FrameMinSize, "the protocol"
}

// versionAtLeast reports whether a version such as "4.3.6" is at least
// major.minor; an unparsable version is not.
func versionAtLeast(version string, major, minor int) bool {
	parts := strings.SplitN(version, ".", 3)
	if len(parts) < 2 {
		return false
	}
	minorDigits := parts[1]
	if i := strings.IndexFunc(minorDigits, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minorDigits = minorDigits[:i] // "1-rc.2"
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(minorDigits)
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}

// hungUp reports whether a read failed because the peer closed or reset
// the connection.
func hungUp(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// settingError is a connection setting the broker refuses: redialling
// with it meets the same refusal, so Dial and reconnects end at once
// (worthRetrying).
type settingError struct{ err error }

func (e *settingError) Error() string { return e.err.Error() }
func (e *settingError) Unwrap() error { return e.err }
