package leveret

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// errBadURL is wrapped by every error parseURI returns.
var errBadURL = errors.New("amqp: invalid URL")

// Defaults from the RabbitMQ URI specification (https://www.rabbitmq.com/uri-spec.html).
const (
	defaultPort     = 5672
	defaultTLSPort  = 5671
	defaultUser     = "guest"
	defaultPassword = "guest"
	defaultVhost    = "/"

	redactedPassword = "xxxxx"
	minFrameMax      = 4096 // the smallest frame_max AMQP 0-9-1 allows, besides 0 (no limit)
)

// uri is a parsed AMQP URL.
type uri struct {
	TLS                bool   // amqps
	Host               string // without brackets for IPv6
	Port               int    // default 5672 / 5671
	Username, Password string // default guest/guest when the URL does not give them
	Vhost              string // "/" when the URL has no path or a bare "/"

	Heartbeat    time.Duration // query heartbeat=SECONDS
	HasHeartbeat bool          // heartbeat was given; 0 disables heartbeats
	ChannelMax   uint16        // query channel_max; 0 = not set
	FrameMax     uint32        // query frame_max; 0 = not set

	ConnectionTimeout time.Duration // query connection_timeout=MILLISECONDS; 0 = not set
}

// badURL returns an error wrapping errBadURL. Callers must never put the password, or text
// that may hold part of it, into the message: net/url's errors echo their input, so this
// parser builds its own.
func badURL(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errBadURL}, args...)...)
}

// parseURI parses an AMQP URL following the RabbitMQ URI specification:
//
//	amqp[s]://[user[:password]@]host[:port][/vhost][?query]
//
// The username, password, host and vhost are percent-decoded; a vhost holding "/" must encode
// it as %2F. An absent username or password defaults to guest; an absent path gives the vhost
// "/", and so does a bare "/" path (as in amqp091-go). The query may set heartbeat (seconds),
// channel_max, frame_max and connection_timeout (milliseconds).
func parseURI(s string) (uri, error) {
	var u uri
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			return uri{}, badURL("contains a space or control character (percent-encode it)")
		}
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return uri{}, badURL(`missing "amqp://" or "amqps://"`)
	}
	switch strings.ToLower(scheme) {
	case "amqp":
		u.Port = defaultPort
	case "amqps":
		u.TLS, u.Port = true, defaultTLSPort
	default:
		if isSchemeText(scheme) {
			return uri{}, badURL("unknown scheme %q (want amqp or amqps)", scheme)
		}
		return uri{}, badURL("unknown scheme (want amqp or amqps)")
	}
	if strings.Contains(rest, "#") {
		return uri{}, badURL("fragment (#) not allowed (percent-encode # as %%23)")
	}

	end := strings.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	// An "@" after the authority almost always means a password holding an unencoded "/" or
	// "?", which would otherwise be misread as host, port, vhost or query: refuse it early,
	// before any part of the URL could be quoted in an error.
	if strings.Contains(tail, "@") {
		return uri{}, badURL(`"@" after the host: percent-encode "@", ":", "/" and "?" in the username and password`)
	}
	if err := u.parseAuthority(authority); err != nil {
		return uri{}, err
	}
	path, query, hasQuery := strings.Cut(tail, "?")
	if err := u.parseVhost(path); err != nil {
		return uri{}, err
	}
	if hasQuery {
		if err := u.parseQuery(query); err != nil {
			return uri{}, err
		}
	}
	return u, nil
}

func isSchemeText(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && c != '+' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// parseAuthority parses [user[:password]@]host[:port].
func (u *uri) parseAuthority(authority string) error {
	u.Username, u.Password = defaultUser, defaultPassword
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		user, pass, hasPass := strings.Cut(authority[:i], ":")
		var ok bool
		if u.Username, ok = unescape(user); !ok {
			return badURL("invalid percent-encoding in the username")
		}
		if hasPass {
			if u.Password, ok = unescape(pass); !ok {
				return badURL("invalid percent-encoding in the password")
			}
		}
		authority = authority[i+1:]
	}

	hostport := authority
	var port string
	var hasPort bool
	if strings.HasPrefix(hostport, "[") {
		end := strings.IndexByte(hostport, ']')
		if end < 0 {
			return badURL(`missing "]" after an IPv6 address`)
		}
		host, ok := unescape(hostport[1:end])
		if !ok {
			return badURL("invalid percent-encoding in the host")
		}
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() {
			return badURL("invalid IPv6 address %q", host)
		}
		u.Host = host
		after := hostport[end+1:]
		if after != "" {
			if after[0] != ':' {
				return badURL(`unexpected text after "]" (want ":port")`)
			}
			port, hasPort = after[1:], true
		}
	} else {
		host, p, found := strings.Cut(hostport, ":")
		if strings.Contains(p, ":") {
			return badURL("IPv6 addresses must be in brackets: amqp://[::1]:5672/")
		}
		port, hasPort = p, found
		var ok bool
		if u.Host, ok = unescape(host); !ok {
			return badURL("invalid percent-encoding in the host")
		}
		if !validRegName(u.Host) {
			return badURL("invalid character in the host")
		}
	}
	if u.Host == "" {
		return badURL("missing host")
	}
	if hasPort && port != "" { // RFC 3986 allows "host:" with an empty port: the default
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 || !isDigits(port) {
			return badURL("invalid port (want 1 to 65535)")
		}
		u.Port = int(n)
	}
	return nil
}

// parseVhost sets the vhost from the path, which is empty or starts with "/".
func (u *uri) parseVhost(path string) error {
	// A bare "/" means the default vhost, as in amqp091-go and as users of
	// amqp://guest:guest@localhost:5672/ expect, rather than the spec's "".
	if path == "" || path == "/" {
		u.Vhost = defaultVhost
		return nil
	}
	seg := path[1:]
	if strings.Contains(seg, "/") {
		return badURL(`the vhost must be a single path segment (percent-encode "/" as %%2F)`)
	}
	var ok bool
	if u.Vhost, ok = unescape(seg); !ok {
		return badURL("invalid percent-encoding in the vhost")
	}
	return nil
}

// parseQuery parses the query parameters; each may appear once.
func (u *uri) parseQuery(query string) error {
	seen := make(map[string]bool)
	for _, kv := range strings.Split(query, "&") {
		if kv == "" {
			continue
		}
		rawKey, rawVal, hasVal := strings.Cut(kv, "=")
		key, ok1 := unescape(rawKey)
		val, ok2 := unescape(rawVal)
		if !ok1 || !ok2 {
			return badURL("invalid percent-encoding in the query")
		}
		if !isKnownParam(key) {
			return badURL("unknown query parameter %q (want heartbeat, channel_max, frame_max or connection_timeout)", key)
		}
		if seen[key] {
			return badURL("query parameter %s given twice", key)
		}
		seen[key] = true
		if !hasVal || val == "" {
			return badURL("query parameter %s needs a value", key)
		}
		if err := u.setParam(key, val); err != nil {
			return err
		}
	}
	return nil
}

func isKnownParam(key string) bool {
	switch key {
	case "heartbeat", "channel_max", "frame_max", "connection_timeout":
		return true
	}
	return false
}

func (u *uri) setParam(key, val string) error {
	n, err := strconv.ParseUint(val, 10, 64)
	if err != nil || !isDigits(val) {
		return badURL("query parameter %s=%q is not a non-negative integer", key, val)
	}
	switch key {
	case "heartbeat":
		if n > math.MaxUint16 {
			return badURL("heartbeat=%d out of range (0 to 65535 seconds)", n)
		}
		u.Heartbeat, u.HasHeartbeat = time.Duration(n)*time.Second, true
	case "channel_max":
		if n > math.MaxUint16 {
			return badURL("channel_max=%d out of range (0 to 65535)", n)
		}
		u.ChannelMax = uint16(n)
	case "frame_max":
		if n != 0 && (n < minFrameMax || n > math.MaxInt32) {
			return badURL("frame_max=%d out of range (0, or %d to %d)", n, minFrameMax, math.MaxInt32)
		}
		u.FrameMax = uint32(n)
	case "connection_timeout":
		if n > uint64(math.MaxInt64/int64(time.Millisecond)) {
			return badURL("connection_timeout=%d out of range", n)
		}
		u.ConnectionTimeout = time.Duration(n) * time.Millisecond
	}
	return nil
}

// Addr returns host:port for net.Dial.
func (u uri) Addr() string {
	return net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
}

// String returns the URL with the password replaced by "xxxxx", with every part explicit.
// parseURI(u.String()) gives u back except for the password.
func (u uri) String() string {
	var b strings.Builder
	if u.TLS {
		b.WriteString("amqps://")
	} else {
		b.WriteString("amqp://")
	}
	b.WriteString(escape(u.Username))
	b.WriteString(":" + redactedPassword + "@")
	if strings.Contains(u.Host, ":") {
		addr, zone, hasZone := strings.Cut(u.Host, "%")
		b.WriteString("[" + addr)
		if hasZone {
			b.WriteString("%25" + escape(zone))
		}
		b.WriteString("]")
	} else {
		b.WriteString(escape(u.Host))
	}
	b.WriteString(":" + strconv.Itoa(u.Port))
	if u.Vhost != defaultVhost {
		b.WriteString("/" + escape(u.Vhost))
	}
	var q []string
	if u.HasHeartbeat {
		q = append(q, "heartbeat="+strconv.FormatInt(int64(u.Heartbeat/time.Second), 10))
	}
	if u.ChannelMax != 0 {
		q = append(q, "channel_max="+strconv.FormatUint(uint64(u.ChannelMax), 10))
	}
	if u.FrameMax != 0 {
		q = append(q, "frame_max="+strconv.FormatUint(uint64(u.FrameMax), 10))
	}
	if u.ConnectionTimeout != 0 {
		q = append(q, "connection_timeout="+strconv.FormatInt(u.ConnectionTimeout.Milliseconds(), 10))
	}
	if len(q) > 0 {
		b.WriteString("?" + strings.Join(q, "&"))
	}
	return b.String()
}

// unescape decodes %XX sequences. Unlike url.QueryUnescape it leaves "+" alone, and unlike
// net/url it reports failure without quoting the input.
func unescape(s string) (string, bool) {
	if !strings.Contains(s, "%") {
		return s, true
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b = append(b, s[i])
			continue
		}
		if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
			return "", false
		}
		b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
		i += 2
	}
	return string(b), true
}

// escape percent-encodes everything but RFC 3986's unreserved characters.
func escape(s string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAlnum(c) || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&0xf])
	}
	return b.String()
}

// validRegName reports whether the decoded host name s holds only characters RFC 3986 allows
// in a host name: unreserved and sub-delims.
func validRegName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAlnum(c) || strings.IndexByte("-._~!$&'()*+,;=", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}
