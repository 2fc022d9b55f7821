package nbd

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrServerGone is AwaitServing's answer when the server's process ended
// before it served.
var ErrServerGone = errors.New("the NBD server ended before it served")

// AwaitServing waits until the export at uri answers a handshake, trying
// every interval: a server that listens before it opens its image (as
// qemu-nbd does) is not serving until then, so a bare connect would not
// do. It returns ErrServerGone once gone is closed (the server's process
// ended: its unaccepted connections are reset, so a handshake fails at
// once), or, when ctx ends first, ctx's error with the last handshake's.
func AwaitServing(ctx context.Context, uri string, interval time.Duration, gone <-chan struct{}) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		hctx, hcancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := Info(hctx, uri, Options{})
		hcancel()
		if err == nil {
			return nil
		}
		select {
		case <-gone:
			return ErrServerGone
		case <-ctx.Done():
			return fmt.Errorf("%w (the last handshake: %v)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}
