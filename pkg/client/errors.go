package client

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

var (
	// ErrClosed is a Stream's Err after Close.
	ErrClosed = errors.New("sser/client: stream closed")
	// ErrNoContent is returned when the server answers 204 No Content: per the
	// SSE spec the client must not reconnect.
	ErrNoContent = errors.New("sser/client: server answered 204 No Content, not reconnecting")
	// ErrReadTimeout is reported when nothing arrived within the read timeout;
	// the connection is restarted.
	ErrReadTimeout = errors.New("sser/client: read timeout")
	// ErrStreamEnded is reported when the server closed the response body.
	ErrStreamEnded = errors.New("sser/client: server ended the stream")
	// ErrContentType is reported when a 200 answer is not text/event-stream.
	ErrContentType = errors.New("sser/client: response is not text/event-stream")
	// ErrEventTooLarge is returned when one event exceeds the maximum size.
	ErrEventTooLarge = errors.New("sser/client: event too large")
	// ErrInvalidOption is returned by NewStream and NewMux for a bad option.
	ErrInvalidOption = errors.New("sser/client: invalid option")
	// ErrDuplicateStream is returned by Mux.Handle when the stream has a
	// listener already.
	ErrDuplicateStream = errors.New("sser/client: stream already has a listener")
	// ErrMuxStarted is returned by a second Mux.Start.
	ErrMuxStarted = errors.New("sser/client: mux already started")

	// errRestart is the cause of a connection ended by Restart.
	errRestart = errors.New("sser/client: restart requested")
)

// StatusError is reported when the server answers with a status other than
// 200 or 204. Use errors.As to inspect it.
type StatusError struct {
	// Code is the HTTP status code.
	Code int
	// Message is the start of the response body (sser answers JSON
	// {"error": "..."}; the error text is extracted when it is).
	Message string
	// RetryAfter is the server's Retry-After, 0 when absent.
	RetryAfter time.Duration
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("sser/client: server answered %d %s", e.Code, http.StatusText(e.Code))
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Retryable reports whether reconnecting after err can help. It is the
// default error policy of a Stream: network failures, dropped connections,
// read timeouts, 408, 429 and 5xx answers are retryable; other 4xx answers,
// a wrong content type, an oversized event and 204 are not.
func Retryable(err error) bool {
	var se *StatusError
	switch {
	case errors.As(err, &se):
		return se.Code >= 500 || se.Code == http.StatusRequestTimeout || se.Code == http.StatusTooManyRequests
	case errors.Is(err, ErrNoContent), errors.Is(err, ErrContentType), errors.Is(err, ErrEventTooLarge),
		errors.Is(err, ErrClosed):
		return false
	}
	return true
}
