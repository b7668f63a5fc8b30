package leveret

import (
	"context"
	"sync"
	"time"
)

// Token is a secret that expires, such as an OAuth 2 access token (a JWT
// for RabbitMQ's rabbitmq_auth_backend_oauth2).
type Token struct {
	// Username is sent with the token. RabbitMQ's OAuth 2 backend takes the
	// user from the token and ignores it.
	Username string
	// Secret is the token, sent as the password. It never appears in
	// errors or logs.
	Secret string
	// Expiry is when the broker stops accepting the token; zero: never.
	Expiry time.Time
}

// refreshShare is the part of a token's remaining lifetime after which the
// client asks for the next one: early enough to survive a slow token
// endpoint, late enough not to hammer it (as the RabbitMQ Java client).
const refreshShare = 0.8

// refreshRetry bounds the wait after a failed refresh before the next try;
// it shrinks to half the current token's remaining lifetime as its expiry
// nears, and no try is made within minRetry of it.
const (
	refreshRetry = time.Second
	minRetry     = 10 * time.Millisecond
)

// WithTokenSource makes the client use expiring tokens (OAuth 2): each
// connection attempt asks fn for a token instead of taking credentials
// from the URL (as WithCredentials, which it replaces), and while the
// client runs, once 80% of the current token's lifetime has passed, it asks
// fn for a new one and hands it to the broker (connection.update-secret,
// Client.UpdateSecret), so that the connection outlives its tokens with no
// reconnect. fn runs on a goroutine of the client's (joined by Close) or
// the dialing one, with a ctx that ends at the current token's expiry or
// when the client closes; it may block (a call to the token endpoint). A
// failed refresh is logged and tried again (after a second, sooner as the
// token's expiry nears) while the token is valid; if none succeeds, the broker closes the connection when the
// token expires and the client reconnects with a fresh token from fn. A
// token without an Expiry is never refreshed.
func WithTokenSource(fn func(ctx context.Context) (Token, error)) Option {
	ts := &tokenSource{fn: fn, changed: make(chan struct{}, 1)}
	return optionFunc(func(c *config) { c.credentials, c.tokens = ts.credentials, ts })
}

// tokenSource is WithTokenSource's state, shared by every endpoint's
// configuration of one Dial: when the current connection's token is due
// for a refresh.
type tokenSource struct {
	fn      func(ctx context.Context) (Token, error)
	changed chan struct{} // 1-buffered: next or expiry changed

	mu     sync.Mutex
	next   time.Time // when to refresh; zero: never
	expiry time.Time // of the token the connection holds
}

// credentials is the dial's WithCredentials function.
func (ts *tokenSource) credentials(ctx context.Context) (username, password string, err error) {
	t, err := ts.fn(ctx)
	if err != nil {
		return "", "", err
	}
	ts.holds(t.Expiry)
	return t.Username, t.Secret, nil
}

// holds records that the connection now holds a token expiring at expiry.
func (ts *tokenSource) holds(expiry time.Time) {
	now := time.Now()
	ts.mu.Lock()
	ts.expiry, ts.next = expiry, time.Time{}
	if !expiry.IsZero() {
		ts.next = now.Add(time.Duration(refreshShare * float64(expiry.Sub(now))))
	}
	ts.mu.Unlock()
	ts.signal()
}

// failed schedules another try after a failed refresh, while the token is
// still valid.
func (ts *tokenSource) failed() {
	now := time.Now()
	ts.mu.Lock()
	ts.next = time.Time{}
	if wait := min(refreshRetry, ts.expiry.Sub(now)/2); wait >= minRetry {
		ts.next = now.Add(wait)
	}
	ts.mu.Unlock()
	ts.signal()
}

func (ts *tokenSource) signal() {
	select {
	case ts.changed <- struct{}{}:
	default:
	}
}

func (ts *tokenSource) due() (next, expiry time.Time) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.next, ts.expiry
}

// refreshTokens runs on its own goroutine from newClient until the client
// ends: it refreshes the token when due (see WithTokenSource).
func (c *Client) refreshTokens(ts *tokenSource) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next, expiry := ts.due()
		var wait <-chan time.Time
		if !next.IsZero() {
			timer.Reset(time.Until(next))
			wait = timer.C
		}
		select {
		case <-c.supCtx.Done():
			return
		case <-c.done:
			return
		case <-ts.changed:
			continue
		case <-wait:
		}
		c.refreshToken(ts, expiry)
	}
}

// refreshToken asks for a new token and hands it to the broker, giving up
// when the current one expires.
func (c *Client) refreshToken(ts *tokenSource, expiry time.Time) {
	ctx, cancel := context.WithDeadline(c.supCtx, expiry)
	defer cancel()
	t, err := ts.fn(ctx)
	if err == nil {
		err = c.UpdateSecret(ctx, t.Secret, "leveret: token refresh")
	}
	if err != nil {
		c.cfg.logger.Warn("amqp: token refresh failed", "err", err, "expiry", expiry)
		ts.failed()
		return
	}
	c.cfg.logger.Debug("amqp: token refreshed", "expiry", t.Expiry)
	ts.holds(t.Expiry)
}
