package token

import (
	"context"
	"errors"
	"time"
)

// SlowDownStep is how much a slow_down answer adds to the polling interval (RFC 8628 §3.5).
var SlowDownStep = 5 * time.Second

// ErrDeviceExpired reports a device code that expired before the user approved it.
var ErrDeviceExpired = errors.New("the login code expired before it was approved")

// WaitDevice polls c for da's token at the server's interval until the user approves the
// login (the token), denies it or the code expires (an error), or ctx ends. It branches on the
// error codes of RFC 8628: authorization_pending polls again, slow_down polls again more slowly,
// a transient failure is retried at the same pace, anything permanent ends the login.
// onRetry, when set, hears about each transient failure.
func WaitDevice(ctx context.Context, c Client, base string, da *DeviceAuth, onRetry func(error)) (*Token, error) {
	interval := time.Duration(max(da.Interval, 1)) * time.Second
	life := time.Duration(da.ExpiresIn) * time.Second
	if life <= 0 {
		life = 10 * time.Minute
	}
	deadline := time.Now().Add(life)
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(interval):
		}
		if time.Now().After(deadline) {
			return nil, ErrDeviceExpired
		}
		tok, err := c.DeviceToken(ctx, base, da)
		var e *Error
		switch {
		case err == nil:
			return tok, nil
		case errors.As(err, &e) && e.Code == CodeAuthorizationPending:
		case errors.As(err, &e) && e.Code == CodeSlowDown:
			interval += SlowDownStep
		case IsPermanent(err):
			return nil, err
		default:
			if onRetry != nil {
				onRetry(err)
			}
		}
	}
}
