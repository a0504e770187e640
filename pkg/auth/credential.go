package auth

import (
	"net/http"
	"net/url"
	"strings"
)

// Query parameters and cookie that carry credentials.
const (
	AccessTokenParam  = "access_token"
	TicketParam       = "ticket"
	DefaultCookieName = "sser_token"
)

// Credential is where a credential was found, and its value.
type Credential struct {
	// Source is "header", "cookie", "access_token" or "ticket".
	Source string
	Value  string
}

// FromRequest returns the request's credential: the Authorization Bearer
// header, else the ticket or access_token query parameter, else the cookie
// (none when cookie is empty). A source given twice, or with an empty or
// oversized value, is an invalid credential: a request must not be able to
// show one credential to a proxy and another to sser.
func FromRequest(r *http.Request, cookie string) (Credential, error) {
	if h := r.Header.Values("Authorization"); len(h) > 0 {
		if len(h) > 1 {
			return Credential{}, invalid("more than one Authorization header")
		}
		scheme, v, ok := strings.Cut(h[0], " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return Credential{}, invalid("Authorization must be Bearer")
		}
		return checked(Credential{Source: "header", Value: strings.TrimSpace(v)})
	}
	q := r.URL.Query()
	for _, name := range []string{TicketParam, AccessTokenParam} {
		if vs, ok := q[name]; ok {
			if len(vs) > 1 {
				return Credential{}, invalid("query parameter " + name + " given more than once")
			}
			return checked(Credential{Source: name, Value: vs[0]})
		}
	}
	if cookie != "" {
		var found []*http.Cookie
		for _, c := range r.Cookies() {
			if c.Name == cookie {
				found = append(found, c)
			}
		}
		switch len(found) {
		case 0:
		case 1:
			return checked(Credential{Source: "cookie", Value: found[0].Value})
		default:
			return Credential{}, invalid("cookie " + cookie + " given more than once")
		}
	}
	return Credential{}, ErrNoCredential
}

func checked(c Credential) (Credential, error) {
	switch {
	case c.Value == "":
		return Credential{}, invalid("empty " + c.Source + " credential")
	case len(c.Value) > MaxCredentialBytes:
		return Credential{}, invalid("credential too large")
	}
	return c, nil
}

// credentialParams are the query parameters RedactQuery hides.
var credentialParams = map[string]bool{AccessTokenParam: true, TicketParam: true}

// RedactQuery returns rawQuery with the value of every credential parameter
// replaced by "REDACTED", for logs. Parameters are matched as the server
// parses them (after unescaping), so "%74icket=" is redacted too; a query
// that does not parse is redacted whole.
func RedactQuery(rawQuery string) string {
	if rawQuery == "" {
		return ""
	}
	parts := strings.Split(rawQuery, "&")
	for i, part := range parts {
		k, _, _ := strings.Cut(part, "=")
		name, err := url.QueryUnescape(k)
		if err != nil {
			return "REDACTED"
		}
		if credentialParams[name] || strings.Contains(part, ";") {
			parts[i] = k + "=REDACTED"
		}
	}
	return strings.Join(parts, "&")
}

// RedactURL returns u as a string with its credential query parameters
// redacted (and any userinfo dropped).
func RedactURL(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery = RedactQuery(u.RawQuery)
	c.ForceQuery = false
	return c.String()
}
