package auth

import "net/http"

// Authorizer authenticates a request. Implementations must be safe for
// concurrent use; Authenticator is the one this package provides, and an
// embedding application may supply its own (a session check, say).
type Authorizer interface {
	// Authenticate returns who made the request and what they may read and
	// write. The error is ErrNoCredential when the request carries none,
	// and wraps ErrInvalidCredential when it is wrong or expired; its text
	// never contains the credential.
	Authenticate(r *http.Request) (*Principal, error)
}
