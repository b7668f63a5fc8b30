package leveret

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseURI(t *testing.T) {
	// def is what "amqp://host" gives; each case changes what it expects.
	def := uri{Host: "host", Port: 5672, Username: "guest", Password: "guest", Vhost: "/"}
	with := func(f func(*uri)) uri {
		u := def
		f(&u)
		return u
	}
	tests := []struct {
		in   string
		want uri
	}{
		{"amqp://host", def},
		{"AMQP://host", def},
		{"amqp://host:", def}, // RFC 3986: an empty port is the default
		{"amqps://host", with(func(u *uri) { u.TLS, u.Port = true, 5671 })},
		{"amqps://host:5673", with(func(u *uri) { u.TLS, u.Port = true, 5673 })},
		{"amqp://host:1", with(func(u *uri) { u.Port = 1 })},
		{"amqp://host:65535", with(func(u *uri) { u.Port = 65535 })},
		{"amqp://user:pass@host:10000/vhost", with(func(u *uri) {
			u.Username, u.Password, u.Port, u.Vhost = "user", "pass", 10000, "vhost"
		})},

		// Vhost rules of the RabbitMQ URI spec.
		{"amqp://host/", def},
		{"amqp://host/%2f", with(func(u *uri) { u.Vhost = "/" })},
		{"amqp://host/%2F", with(func(u *uri) { u.Vhost = "/" })},
		{"amqp://host/foo", with(func(u *uri) { u.Vhost = "foo" })},
		{"amqp://host/a%2fb", with(func(u *uri) { u.Vhost = "a/b" })},
		{"amqp://host/a+b%20c", with(func(u *uri) { u.Vhost = "a+b c" })},
		{"amqp://host?heartbeat=5", with(func(u *uri) { u.Heartbeat, u.HasHeartbeat = 5*time.Second, true })},
		{"amqp://host/?heartbeat=5", with(func(u *uri) {
			u.Heartbeat, u.HasHeartbeat = 5*time.Second, true
		})},

		// Credentials: percent-decoded; absent parts default to guest.
		{"amqp://us%40er:p%3Ass@h/v%2Fh", with(func(u *uri) {
			u.Host, u.Username, u.Password, u.Vhost = "h", "us@er", "p:ss", "v/h"
		})},
		{"amqp://user@host", with(func(u *uri) { u.Username = "user" })},
		{"amqp://user:@host", with(func(u *uri) { u.Username, u.Password = "user", "" })},
		{"amqp://:@host/", with(func(u *uri) { u.Username, u.Password = "", "" })},
		{"amqp://@host", with(func(u *uri) { u.Username = "" })},
		{"amqp://u:p:w@host", with(func(u *uri) { u.Username, u.Password = "u", "p:w" })},
		{"amqp://u:p+w%25@host", with(func(u *uri) { u.Username, u.Password = "u", "p+w%" })},
		{"amqp://user%61:%61pass@ho%61st:10000/v%2fhost", with(func(u *uri) {
			u.Username, u.Password, u.Host, u.Port, u.Vhost = "usera", "apass", "hoast", 10000, "v/host"
		})},

		// IPv6 literals.
		{"amqp://[::1]:5673/", with(func(u *uri) { u.Host, u.Port = "::1", 5673 })},
		{"amqp://[::1]", with(func(u *uri) { u.Host = "::1" })},
		{"amqps://[2001:db8::7]/v", with(func(u *uri) { u.TLS, u.Host, u.Port, u.Vhost = true, "2001:db8::7", 5671, "v" })},
		{"amqp://[fe80::1%25eth0]:5672", with(func(u *uri) { u.Host = "fe80::1%eth0" })},
		{"amqp://127.0.0.1:5672", with(func(u *uri) { u.Host = "127.0.0.1" })},

		// Query parameters.
		{"amqp://host?heartbeat=0", with(func(u *uri) { u.HasHeartbeat = true })},
		{"amqp://host?heartbeat=65535", with(func(u *uri) { u.Heartbeat, u.HasHeartbeat = 65535*time.Second, true })},
		{"amqp://host?channel_max=0", def},
		{"amqp://host?channel_max=65535", with(func(u *uri) { u.ChannelMax = 65535 })},
		{"amqp://host?frame_max=0", def},
		{"amqp://host?frame_max=4096", with(func(u *uri) { u.FrameMax = 4096 })},
		{"amqp://host?frame_max=2147483647", with(func(u *uri) { u.FrameMax = 1<<31 - 1 })},
		{"amqp://host?connection_timeout=0", def},
		{"amqp://host?connection_timeout=1500", with(func(u *uri) { u.ConnectionTimeout = 1500 * time.Millisecond })},
		{"amqp://host/v?heartbeat=10&channel_max=100&frame_max=131072&connection_timeout=30000&", with(func(u *uri) {
			u.Vhost, u.Heartbeat, u.HasHeartbeat = "v", 10*time.Second, true
			u.ChannelMax, u.FrameMax, u.ConnectionTimeout = 100, 131072, 30*time.Second
		})},
		{"amqp://host?heart%62eat=7", with(func(u *uri) { u.Heartbeat, u.HasHeartbeat = 7*time.Second, true })},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseURI(tt.in)
			if err != nil {
				t.Fatalf("parseURI(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("parseURI(%q)\n got %+v\nwant %+v", tt.in, got, tt.want)
			}
			// String round-trips everything but the password.
			again, err := parseURI(got.String())
			if err != nil {
				t.Fatalf("parseURI(%q) (from String): %v", got.String(), err)
			}
			want := got
			want.Password = redactedPassword
			if again != want {
				t.Errorf("parseURI(%q)\n got %+v\nwant %+v", got.String(), again, want)
			}
		})
	}
}

func TestParseURIErrors(t *testing.T) {
	tests := []struct {
		in   string
		want string // a substring of the error message
	}{
		{"", "missing"},
		{"host:5672", "missing"},
		{"http://host", `unknown scheme "http"`},
		{"amqpx://host", "unknown scheme"},
		{"amq p://host", "space"},
		{"amqp://host/\x00", "control"},
		{"amqp://", "missing host"},
		{"amqp:///vhost", "missing host"},
		{"amqp://user:pass@/vhost", "missing host"},
		{"amqp://:5672", "missing host"},
		{"amqp://[]:5672", "invalid IPv6"},

		{"amqp://host:0", "invalid port"},
		{"amqp://host:65536", "invalid port"},
		{"amqp://host:-1", "invalid port"},
		{"amqp://host:+1", "invalid port"},
		{"amqp://host:abc", "invalid port"},
		{"amqp://host:5672:1", "brackets"},
		{"amqp://::1/", "brackets"},
		{"amqp://[::1/", `missing "]"`},
		{"amqp://[::1]x/", "after"},
		{"amqp://[::1]:x/", "invalid port"},
		{"amqp://[127.0.0.1]/", "invalid IPv6"},
		{"amqp://[zz::1]/", "invalid IPv6"},
		{"amqp://ho<st/", "invalid character in the host"},
		{"amqp://ho%zzst/", "percent-encoding in the host"},
		{"amqp://%3A0/", "invalid character in the host"},
		{"amqp://ho%2Fst/", "invalid character in the host"},

		{"amqp://host/a/b", "single path segment"},
		{"amqp://host//", "single path segment"},
		{"amqp://host/%zz", "percent-encoding in the vhost"},
		{"amqp://host/v#frag", "fragment"},
		{"amqp://us%zer@host", "percent-encoding in the username"},
		{"amqp://user:pa%2@host", "percent-encoding in the password"},

		{"amqp://host?foo=1", `unknown query parameter "foo"`},
		{"amqp://host?auth_mechanism=external", "unknown query parameter"},
		{"amqp://host?heartbeat", "needs a value"},
		{"amqp://host?heartbeat=", "needs a value"},
		{"amqp://host?heartbeat=1&heartbeat=2", "given twice"},
		{"amqp://host?heartbeat=-1", "not a non-negative integer"},
		{"amqp://host?heartbeat=+1", "not a non-negative integer"},
		{"amqp://host?heartbeat=1.5", "not a non-negative integer"},
		{"amqp://host?heartbeat=1s", "not a non-negative integer"},
		{"amqp://host?heartbeat=65536", "out of range"},
		{"amqp://host?heartbeat=99999999999999999999999", "not a non-negative integer"},
		{"amqp://host?channel_max=65536", "out of range"},
		{"amqp://host?frame_max=1", "out of range"},
		{"amqp://host?frame_max=4095", "out of range"},
		{"amqp://host?frame_max=2147483648", "out of range"},
		{"amqp://host?connection_timeout=-5", "not a non-negative integer"},
		{"amqp://host?connection_timeout=9223372036855", "out of range"},
		{"amqp://host?%zz=1", "percent-encoding in the query"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			u, err := parseURI(tt.in)
			if err == nil {
				t.Fatalf("parseURI(%q) = %+v, want an error", tt.in, u)
			}
			if !errors.Is(err, errBadURL) {
				t.Errorf("parseURI(%q): %v does not wrap errBadURL", tt.in, err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "amqp: ") {
				t.Errorf("parseURI(%q): error %q does not start with \"amqp: \"", tt.in, msg)
			}
			if !strings.Contains(msg, tt.want) {
				t.Errorf("parseURI(%q): error %q does not contain %q", tt.in, msg, tt.want)
			}
			if u != (uri{}) {
				t.Errorf("parseURI(%q) returned %+v with its error, want the zero uri", tt.in, u)
			}
		})
	}
}

// TestParseURIErrorsHidePassword checks that no error quotes the password, including the
// misparses a password with unencoded reserved characters would otherwise cause.
func TestParseURIErrorsHidePassword(t *testing.T) {
	const pw = "s3cr3tPW"
	tests := []string{
		"http://user:" + pw + "@host",
		"amqp://user:" + pw + "@host:99999",
		"amqp://user:" + pw + "@host:abc",
		"amqp://user:" + pw + "@",
		"amqp://user:" + pw + "@/v",
		"amqp://user:" + pw + "@host/a/b",
		"amqp://user:" + pw + "@host?heartbeat=x",
		"amqp://user:" + pw + "@host?nope=1",
		"amqp://user:" + pw + "%zz@host",
		"amqp://user:" + pw + "@[::1",
		"amqp://user:" + pw + "@host#x",
		"amqp://user:" + pw + " @host",
		// Unencoded reserved characters in the password would move it into the port, the
		// path, the query or the fragment.
		"amqp://user:" + pw + "/x@host",
		"amqp://user:" + pw + "?x@host",
		"amqp://user:" + pw + "#x@host",
		"amqp://user:1/" + pw + "@host",
		"amqp://user:1?" + pw + "=1@host",
		"amqp://user:1?heartbeat=" + pw + "@host",
		"amqp://user:1/a/" + pw + "@host",
		"amqp://user:" + pw + "@ho<st",
		"amqps://user:" + pw + "@host?frame_max=1",
		"amqp://user:" + pw + ":" + pw + "@host?x=" + pw,
	}
	for _, in := range tests {
		_, err := parseURI(in)
		if err == nil {
			t.Errorf("parseURI(%q): want an error", in)
			continue
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("parseURI(%q): error %q contains the password", in, err)
		}
	}
}

func TestURIString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"amqp://host", "amqp://guest:xxxxx@host:5672"},
		{"amqps://u%40s:p%40ss@host/", "amqps://u%40s:xxxxx@host:5671"},
		{"amqp://user:secret@host:1234/v%2Fh?heartbeat=0", "amqp://user:xxxxx@host:1234/v%2Fh?heartbeat=0"},
		{"amqp://user:@host/%2f", "amqp://user:xxxxx@host:5672"},
		{"amqp://[::1]:5673/x", "amqp://guest:xxxxx@[::1]:5673/x"},
		{"amqp://[fe80::1%25eth0]", "amqp://guest:xxxxx@[fe80::1%25eth0]:5672"},
		{"amqp://[fe80::1%25a%5D%2F]", "amqp://guest:xxxxx@[fe80::1%25a%5D%2F]:5672"},
		{"amqp://h?connection_timeout=2500&frame_max=8192&channel_max=7&heartbeat=3",
			"amqp://guest:xxxxx@h:5672?heartbeat=3&channel_max=7&frame_max=8192&connection_timeout=2500"},
	}
	for _, tt := range tests {
		u, err := parseURI(tt.in)
		if err != nil {
			t.Fatalf("parseURI(%q): %v", tt.in, err)
		}
		if got := u.String(); got != tt.want {
			t.Errorf("parseURI(%q).String() = %q, want %q", tt.in, got, tt.want)
		}
		if u.Password != "" && u.Password != u.Username && strings.Contains(u.String(), u.Password) {
			t.Errorf("parseURI(%q).String() = %q contains the password", tt.in, u.String())
		}
	}
}

func TestURIAddr(t *testing.T) {
	tests := []struct{ in, want string }{
		{"amqp://host", "host:5672"},
		{"amqps://host", "host:5671"},
		{"amqp://10.0.0.1:1234", "10.0.0.1:1234"},
		{"amqp://[::1]:5673/", "[::1]:5673"},
		{"amqps://[2001:db8::1]", "[2001:db8::1]:5671"},
	}
	for _, tt := range tests {
		u, err := parseURI(tt.in)
		if err != nil {
			t.Fatalf("parseURI(%q): %v", tt.in, err)
		}
		if got := u.Addr(); got != tt.want {
			t.Errorf("parseURI(%q).Addr() = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"amqp://host", "amqps://u:p@[::1]:5673/v%2Fh?heartbeat=10&frame_max=4096",
		"amqp://us%40er:p%3Ass@h/v", "amqp://host/?connection_timeout=100&channel_max=9",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := parseURI(s)
		if err != nil {
			if !errors.Is(err, errBadURL) {
				t.Fatalf("parseURI(%q): %v does not wrap errBadURL", s, err)
			}
			return
		}
		// Whatever parses must survive String: same fields, password hidden.
		again, err := parseURI(u.String())
		if err != nil {
			t.Fatalf("parseURI(%q) (String of %q): %v", u.String(), s, err)
		}
		want := u
		want.Password = redactedPassword
		if again != want {
			t.Fatalf("round trip of %q through %q:\n got %+v\nwant %+v", s, u.String(), again, want)
		}
	})
}
