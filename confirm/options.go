package confirm

import "fmt"

// Option configures New.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	window int
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

// WithWindow bounds how many publishes may await their confirmation at once
// (default DefaultWindow, 1-32768). When the window is full, Publish waits
// for room. A larger window keeps more messages on the wire; a smaller one
// bounds what is lost in doubt when the connection fails.
func WithWindow(n int) Option {
	return optionFunc(func(c *config) { c.window = n })
}
