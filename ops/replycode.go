package ops

import "strconv"

// ReplyCode is an AMQP reply code such as 312 NO_ROUTE or 404 NOT_FOUND,
// as carried by basic.return, channel.close and connection.close.
// leveret.ReplyCode is the same type.
type ReplyCode uint16

// replyNames are the AMQP 0-9-1 specification's names for its reply codes.
// internal/proto's generated table is checked against this one.
var replyNames = map[ReplyCode]string{
	200: "REPLY_SUCCESS", 311: "CONTENT_TOO_LARGE", 312: "NO_ROUTE", 313: "NO_CONSUMERS",
	320: "CONNECTION_FORCED", 402: "INVALID_PATH", 403: "ACCESS_REFUSED", 404: "NOT_FOUND",
	405: "RESOURCE_LOCKED", 406: "PRECONDITION_FAILED", 501: "FRAME_ERROR", 502: "SYNTAX_ERROR",
	503: "COMMAND_INVALID", 504: "CHANNEL_ERROR", 505: "UNEXPECTED_FRAME", 506: "RESOURCE_ERROR",
	530: "NOT_ALLOWED", 540: "NOT_IMPLEMENTED", 541: "INTERNAL_ERROR",
}

// String names the code as the AMQP specification does, e.g. "NOT_FOUND",
// or "reply code N" for a code it does not define.
func (c ReplyCode) String() string {
	if name, ok := replyNames[c]; ok {
		return name
	}
	return "reply code " + strconv.Itoa(int(c))
}
