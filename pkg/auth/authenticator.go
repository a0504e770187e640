package auth

import (
	"context"
	"net/http"
	"strings"
)

// Authenticator authenticates requests with JWTs, tickets or both. Either
// may be nil; a credential of a kind that is not configured is invalid.
type Authenticator struct {
	// JWT verifies JWTs.
	JWT *JWTVerifier
	// Tickets verifies tickets.
	Tickets *Ticketer
	// Cookie is the cookie name a credential is taken from; empty means
	// no cookie (DefaultCookieName is "sser_token").
	Cookie string
}

var _ Authorizer = (*Authenticator)(nil)

// Authenticate implements Authorizer.
func (a *Authenticator) Authenticate(r *http.Request) (*Principal, error) {
	c, err := FromRequest(r, a.Cookie)
	if err != nil {
		return nil, err
	}
	return a.Verify(r.Context(), c)
}

// Verify checks one credential: a ticket by its prefix, anything else as a
// JWT. A ticket is accepted from the ticket parameter, the header and the
// cookie; the access_token parameter takes JWTs only.
func (a *Authenticator) Verify(ctx context.Context, c Credential) (*Principal, error) {
	if strings.HasPrefix(c.Value, TicketPrefix) && c.Source != AccessTokenParam {
		if a.Tickets == nil {
			return nil, invalid("tickets are not accepted here")
		}
		return a.Tickets.Verify(c.Value)
	}
	if c.Source == TicketParam {
		return nil, invalid("malformed ticket")
	}
	if a.JWT == nil {
		return nil, invalid("JWTs are not accepted here")
	}
	return a.JWT.Verify(ctx, c.Value)
}
