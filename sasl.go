package leveret

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/leveret-mq/leveret/internal/proto"
	"github.com/leveret-mq/leveret/ops"
)

// SASL mechanisms leveret speaks, strongest first: EXTERNAL (the TLS client
// certificate, no password on the wire), PLAIN (the standard one), AMQPLAIN
// (RabbitMQ's older table form of the same credentials), ANONYMOUS (no
// credentials at all; RabbitMQ 4.x offers it by default and logs the
// client in as its anonymous_login_user).
var saslMechanisms = []string{"EXTERNAL", "PLAIN", "AMQPLAIN", "ANONYMOUS"}

// errNoMechanism marks a handshake that found no SASL mechanism both sides
// allow; trying again cannot help.
var errNoMechanism = errors.New("amqp: no SASL mechanism both sides allow")

// WithMechanisms restricts the SASL mechanisms the client may use, from
// EXTERNAL, PLAIN, AMQPLAIN and ANONYMOUS (default PLAIN and AMQPLAIN; with
// WithExternalAuth, EXTERNAL only). Of those the broker offers, the strongest
// is chosen: EXTERNAL, then PLAIN, then AMQPLAIN, then ANONYMOUS. EXTERNAL
// needs TLS with a client certificate. ANONYMOUS sends no credentials (the
// URL's are not used): it is never chosen unless asked for, and RabbitMQ
// offers it from 4.0 on. If none is offered, Dial fails at once with an
// error naming both lists.
func WithMechanisms(names ...string) Option {
	return optionFunc(func(c *config) {
		c.mechanisms = make([]string, len(names))
		for i, n := range names {
			c.mechanisms[i] = strings.ToUpper(n)
		}
	})
}

// allowedMechanisms is the client's list after the options.
func (c *config) allowedMechanisms() []string {
	switch {
	case c.mechanisms != nil:
		return c.mechanisms
	case c.external:
		return []string{"EXTERNAL"}
	}
	return []string{"PLAIN", "AMQPLAIN"}
}

func (c *config) validateMechanisms() error {
	allowed := c.allowedMechanisms()
	if len(allowed) == 0 {
		return errors.New("amqp: WithMechanisms needs at least one mechanism")
	}
	for _, m := range allowed {
		if !slices.Contains(saslMechanisms, m) {
			return fmt.Errorf("amqp: SASL mechanism %q is not supported (want %s)", m, strings.Join(saslMechanisms, ", "))
		}
	}
	if slices.Equal(allowed, []string{"EXTERNAL"}) && c.tls == nil {
		return errors.New("amqp: EXTERNAL authentication needs TLS (use an amqps URL or WithTLS)")
	}
	return nil
}

// chooseMechanism picks the strongest mechanism both sides allow and the
// response that authenticates with it.
func chooseMechanism(cfg *config, offered string, user, password string) (string, string, error) {
	allowed := cfg.allowedMechanisms()
	broker := strings.Fields(offered)
	for _, m := range saslMechanisms {
		if !slices.Contains(allowed, m) || !slices.Contains(broker, m) || (m == "EXTERNAL" && cfg.tls == nil) {
			continue
		}
		switch m {
		case "EXTERNAL":
			return m, "", nil
		case "PLAIN":
			return m, "\x00" + user + "\x00" + password, nil
		case "ANONYMOUS":
			return m, "", nil // RFC 4505: the trace information is optional
		default: // AMQPLAIN: a field table without its length prefix
			t, err := proto.AppendTable(nil, ops.Table{"LOGIN": user, "PASSWORD": password})
			if err != nil {
				return "", "", err
			}
			return m, string(t[4:]), nil
		}
	}
	return "", "", fmt.Errorf("%w: the client allows %s, the broker offers %s", errNoMechanism,
		strings.Join(allowed, ", "), strings.Join(broker, ", "))
}
