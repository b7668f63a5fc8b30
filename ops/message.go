package ops

import "time"

// DeliveryMode says whether the broker keeps a message on disk.
type DeliveryMode uint8

const (
	// Transient messages may be lost when the broker restarts. It is the
	// default (the zero value sends no delivery-mode property).
	Transient DeliveryMode = 1
	// Persistent messages in durable queues survive a broker restart.
	Persistent DeliveryMode = 2
)

// Message is a message's body and its 14 basic properties. Zero-valued
// properties are not sent. Publishing copies Body into the connection's
// output buffer before Publish returns, so the caller may reuse it at once.
// A received message's Body belongs to the receiver.
type Message struct {
	ContentType     string       // MIME type, e.g. "application/json"
	ContentEncoding string       // e.g. "gzip"
	Headers         Table        // application headers; used by headers exchanges
	DeliveryMode    DeliveryMode // Transient or Persistent
	Priority        uint8        // 0-9 for priority queues
	CorrelationID   string       // ties a reply to its request
	ReplyTo         string       // queue name for replies
	Expiration      string       // per-message TTL in milliseconds, as a decimal string
	MessageID       string       // application message id
	Timestamp       time.Time    // second precision on the wire
	Type            string       // application message type name
	UserID          string       // must match the connection's user if set
	AppID           string       // creating application
	Body            []byte
}
