package portcullis

import (
	"context"
	"errors"
	"io"
	"iter"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	portcullisv1 "github.com/portcullis/portcullis/sdk/go/gen/portcullis/v1"
)

// WatchSession yields the session as it is now and after every change, and stops after a
// terminal state (FAILED, EXPIRED or CANCELLED) has been yielded. When the stream breaks
// (UNAVAILABLE, or an early end) it waits for the connection, retries with backoff and carries
// on; the server resends the current state, and states not newer than the last one yielded are
// skipped. Any other error, or the context's, is yielded once, as the last element. Breaking out
// of the loop ends the watch.
func (c *Client) WatchSession(ctx context.Context, id string) iter.Seq2[*portcullisv1.Session, error] {
	return func(yield func(*portcullisv1.Session, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		var lastRevision uint64
		delay := c.watchBackoff.Initial
		for {
			err := c.watchOnce(ctx, id, &lastRevision, func(s *portcullisv1.Session) bool {
				delay = c.watchBackoff.Initial // the stream works again: the next break starts afresh
				return yield(s, nil)
			})
			switch {
			case errors.Is(err, errWatchDone):
				return
			case ctx.Err() != nil:
				yield(nil, ctx.Err())
				return
			case err != nil && Code(err) != codes.Unavailable:
				yield(nil, err)
				return
			}
			select {
			case <-time.After(jitter(delay)):
			case <-ctx.Done():
				yield(nil, ctx.Err())
				return
			}
			delay = min(delay*2, c.watchBackoff.Max)
		}
	}
}

// errWatchDone ends the watch: a terminal state was yielded or the caller stopped iterating.
var errWatchDone = errors.New("watch done")

// watchOnce follows one stream. It returns errWatchDone when the watch is over, nil when the
// stream ended before a terminal state (a server shutting down), or the stream's error.
func (c *Client) watchOnce(ctx context.Context, id string, lastRevision *uint64, yield func(*portcullisv1.Session) bool) error {
	// Waiting for the connection (rather than failing fast while it is re-established) lets the
	// channel's own reconnection pace a server outage.
	stream, err := c.Sessions.WatchSession(ctx, &portcullisv1.WatchSessionRequest{Id: id}, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		session := resp.GetSession()
		if session.GetRevision() <= *lastRevision && *lastRevision != 0 {
			continue
		}
		*lastRevision = session.GetRevision()
		if !yield(session) || IsTerminal(session.GetStatus()) {
			return errWatchDone
		}
	}
}

// IsTerminal reports whether a session in this status can no longer change.
func IsTerminal(status portcullisv1.SessionStatus) bool {
	switch status {
	case portcullisv1.SessionStatus_SESSION_STATUS_FAILED,
		portcullisv1.SessionStatus_SESSION_STATUS_EXPIRED,
		portcullisv1.SessionStatus_SESSION_STATUS_CANCELLED:
		return true
	}
	return false
}

// jitter spreads reconnections of many watchers over [d/2, d).
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}
