package wsclient

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

var (
	// ErrClosed is a Client's Err after Close (or its context ended).
	ErrClosed = errors.New("sser/wsclient: client closed")
	// ErrReadTimeout: nothing arrived within the read timeout; the
	// connection is restarted.
	ErrReadTimeout = errors.New("sser/wsclient: read timeout")
	// ErrConnectionLost: the connection ended without a close frame.
	ErrConnectionLost = errors.New("sser/wsclient: connection lost")
)

// sser's close codes (see the README's WebSocket section).
const (
	CloseGoingAway     = 1001 // drain, maximum connection time, server stopping: reconnect
	CloseReplayPartial = 4206 // resume again for the rest of the replay
	CloseBadMessage    = 4400 // a message the server cannot take
	CloseUnauthorized  = 4401 // no credential, a wrong one, or it expired
	CloseForbidden     = 4403 // a stream not granted or not allowed
	CloseTimeout       = 4408 // no subscribe in time, or pings unanswered
	CloseTooMany       = 4429 // fell behind its queue, or too many messages
)

// StatusError is a handshake the server refused with an HTTP status.
type StatusError struct {
	Code int
	// Message is the server's JSON error, or the start of its body.
	Message string
	// RetryAfter is the server's Retry-After, 0 when absent.
	RetryAfter time.Duration
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("sser/wsclient: server answered %d %s", e.Code, http.StatusText(e.Code))
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// CloseError is a connection the server closed with a close frame.
type CloseError struct {
	Code   int
	Reason string
	// Message is the error message the server sent before the close, if
	// any: the whole of what Reason may have cut short.
	Message string
}

func (e *CloseError) Error() string {
	s := fmt.Sprintf("sser/wsclient: server closed the connection: %d %s", e.Code, e.Reason)
	if e.Message != "" && e.Message != e.Reason {
		s += " (" + e.Message + ")"
	}
	return s
}

// Retryable reports whether reconnecting after err can help; it is the
// default ErrorHandler. Network failures, read timeouts, closes that ask
// the client to come back (1001, 1006, 1011-1013, 4206, 4408, 4429) and
// 408, 429 and 5xx answers are; a refused request (4400, 4401, 4403, 4xx
// answers, protocol errors) and ErrClosed are not.
func Retryable(err error) bool {
	var se *StatusError
	var ce *CloseError
	switch {
	case errors.As(err, &se):
		return se.Code >= 500 || se.Code == http.StatusRequestTimeout || se.Code == http.StatusTooManyRequests
	case errors.As(err, &ce):
		switch ce.Code {
		case 1000, CloseGoingAway, 1006, 1011, 1012, 1013, CloseReplayPartial, CloseTimeout, CloseTooMany:
			return true
		}
		return false
	case errors.Is(err, ErrClosed):
		return false
	}
	return true
}
