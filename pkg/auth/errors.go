package auth

import "errors"

var (
	// ErrNoCredential: the request carries no credential.
	ErrNoCredential = errors.New("auth: credential required")
	// ErrInvalidCredential: the credential is malformed, forged, expired
	// or not accepted here.
	ErrInvalidCredential = errors.New("auth: invalid credential")
	// ErrExpired: the credential's expiry has passed (it is also an
	// ErrInvalidCredential).
	ErrExpired = errors.New("auth: credential expired")
)

// credError is an invalid credential with a fixed reason: its text never
// contains the credential.
type credError struct {
	reason  string
	expired bool
}

func (e *credError) Error() string { return "auth: invalid credential: " + e.reason }

func (e *credError) Is(target error) bool {
	return target == ErrInvalidCredential || (e.expired && target == ErrExpired)
}

func invalid(reason string) error { return &credError{reason: reason} }

func expired() error { return &credError{reason: "expired", expired: true} }
