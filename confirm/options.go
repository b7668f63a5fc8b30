package confirm

import "fmt"

// Option configures New.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	window    int
	republish bool
}

// DefaultWindow is the in-flight window used without WithWindow.
const DefaultWindow = 1000

// maxWindow keeps the confirmations a window can produce well inside the
// client's callback queue (64 Ki events shared by the connection).
const maxWindow = 1 << 15

func defaultConfig() config { return config{window: DefaultWindow} }

func (c *config) validate() error {
	if c.window < 1 || c.window > maxWindow {
		return fmt.Errorf("amqp: confirm window %d out of range 1-%d", c.window, maxWindow)
	}
	return nil
}

// WithRepublish makes the publisher re-send, after a reconnect, the
// messages the lost connection left unconfirmed, in their order, on the
// re-opened channel; their promises settle with the new outcome. That is
// at-least-once delivery: a message the broker had taken before the drop
// arrives twice (at most one window per drop), so give messages an id
// (MessageID) to deduplicate on. It keeps a copy of each message until it
// settles (bounded by the window). Without it, those publishes fail with
// ErrNotConfirmed wrapping the connection's error, and the publisher
// carries on on the re-opened channel.
func WithRepublish() Option {
	return optionFunc(func(c *config) { c.republish = true })
}

// WithWindow bounds how many publishes may await their confirmation at once
// (default DefaultWindow, 1-32768). When the window is full, Publish waits
// for room. A larger window keeps more messages on the wire; a smaller one
// bounds what is lost in doubt when the connection fails.
func WithWindow(n int) Option {
	return optionFunc(func(c *config) { c.window = n })
}
