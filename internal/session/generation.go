package session

import (
	"time"

	"github.com/leveret-mq/leveret/internal/mux"
	"github.com/leveret-mq/leveret/ops"
)

// Generation is one connection of a client: the mux.Conn and what its
// handshake negotiated. It is single-use: when it ends, the supervisor
// makes the next one; nothing revives it. Its fields are set before it is
// shared and never change.
type Generation struct {
	Conn     *mux.Conn
	Tuning   Tuning
	Num      uint64 // 1 for the client's first connection
	Endpoint string // the URL, without its password
}

// Tuning is what a connection's handshake negotiated.
type Tuning struct {
	ChannelMax uint16
	FrameMax   uint32
	Heartbeat  time.Duration
	Server     ops.Table // the broker's server properties
}

// Join and Err make a Generation a Conn for the Supervisor.
func (g *Generation) Join()      { g.Conn.Join() }
func (g *Generation) Err() error { return g.Conn.Err() }
