package tests

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leveret-mq/leveret/ops"
)

// TestUpdateSecretInternalBackend records what RabbitMQ 3.10's internal
// user database does with connection.update-secret: it answers
// update-secret-ok for the current password and for a wrong one alike and
// keeps the connection (it does not authenticate again; only backends with
// expiring credentials, such as OAuth 2, use the new secret). The secret
// appears in no error.
func TestUpdateSecretInternalBackend(t *testing.T) {
	ctx := testContext(t)
	for _, secret := range []string{"guest", "not-the-password"} {
		c := dial(t)
		err := c.UpdateSecret(ctx, secret, "rotation test")
		require.NoError(t, err, "update-secret")
		_, err = c.QueueDeclare(ops.QueueDeclare{Exclusive: true}).Wait(ctx)
		require.NoError(t, err, "the connection carries on after update-secret")
		assert.NoError(t, c.Err())
	}
	// After Close it is refused locally, with no secret in the error.
	c := dial(t)
	require.NoError(t, c.Close(ctx))
	err := c.UpdateSecret(ctx, "s3cret-after-close", "late")
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "s3cret-after-close")
}
