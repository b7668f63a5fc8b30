package ops

// ExchangeKind names an exchange type. Plugins add more (for example
// "x-delayed-message"); convert their names with ExchangeKind("...").
type ExchangeKind string

// The four exchange kinds every RabbitMQ broker has.
const (
	Direct  ExchangeKind = "direct"
	Fanout  ExchangeKind = "fanout"
	Topic   ExchangeKind = "topic"
	Headers ExchangeKind = "headers"
)

// ExchangeDeclare creates an exchange, or checks that an existing one has
// the same settings (406 PRECONDITION_FAILED otherwise).
type ExchangeDeclare struct {
	Exchange   string
	Kind       ExchangeKind // "" means Direct
	Passive    bool         // only check that it exists (404 NOT_FOUND otherwise)
	Durable    bool         // survives a broker restart
	AutoDelete bool         // deleted when its last binding is removed
	Internal   bool         // cannot be published to directly
	Args       Table        // e.g. "alternate-exchange"
}

// ExchangeDeclareOk is the result of ExchangeDeclare.
type ExchangeDeclareOk struct{}

// ExchangeDelete deletes an exchange. Deleting one that does not exist succeeds.
type ExchangeDelete struct {
	Exchange string
	IfUnused bool // fail with 406 if it has bindings
}

// ExchangeDeleteOk is the result of ExchangeDelete.
type ExchangeDeleteOk struct{}

// ExchangeBind routes messages from Source to Destination (a RabbitMQ
// exchange-to-exchange binding).
type ExchangeBind struct {
	Destination string
	Source      string
	RoutingKey  string
	Args        Table
}

// ExchangeBindOk is the result of ExchangeBind.
type ExchangeBindOk struct{}

// ExchangeUnbind removes an exchange-to-exchange binding.
type ExchangeUnbind struct {
	Destination string
	Source      string
	RoutingKey  string
	Args        Table
}

// ExchangeUnbindOk is the result of ExchangeUnbind.
type ExchangeUnbindOk struct{}
