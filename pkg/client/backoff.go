package client

import "time"

// minBackoffBase keeps repeated failures from spinning when the server asked
// for retry: 0.
const minBackoffBase = time.Millisecond

// backoffDelay is the wait before reconnection attempt number attempt (0 for
// the first after a connection ends): base doubled per attempt and capped at
// max(maxDelay, base), reduced by up to jitter of itself (r is a random
// number in [0,1)), and never less than the server's Retry-After within that
// cap. The server's retry value is the base, so attempt 0 waits what the
// server asked for, less jitter.
func backoffDelay(base, maxDelay time.Duration, jitter float64, attempt int, retryAfter time.Duration, r float64) time.Duration {
	limit := max(maxDelay, base)
	d := base
	if attempt > 0 {
		d = max(d, minBackoffBase)
	}
	for i := 0; i < attempt && d < limit; i++ {
		if d > limit/2 {
			d = limit
			break
		}
		d *= 2
	}
	d = min(d, limit)
	d -= time.Duration(float64(d) * jitter * r)
	return min(max(d, retryAfter), limit)
}
