// Package auth authenticates SSE subscribers and publishers and decides
// which streams they may read or write.
//
// Two credential kinds are verified by any replica with no shared state:
//
//   - JWTs (RFC 7519) signed with an HS256 shared secret or with RS256,
//     ES256 or EdDSA keys from a PEM file or a JWKS (a file, or a URL that
//     is cached and refreshed). Each key is bound to its algorithm, so a
//     token cannot pick how it is checked ("alg: none" and HS/RS confusion
//     are refused). "exp" is required. A claim (default "streams") lists the
//     stream names or glob patterns the token may read; templates such as
//     "users/{sub}/*" grant every token streams named after its own claims.
//     A "publish" claim lists the streams a publisher token may write.
//   - Tickets: short-lived opaque strings signed with HMAC-SHA256 by a key
//     every replica has, naming a subject, exact streams or patterns, and an
//     expiry. They are made for EventSource, which cannot send headers and
//     reconnects with the same URL: a ticket in the URL keeps working for
//     reconnects until it expires, and is useless after.
//
// A credential is taken from "Authorization: Bearer", a cookie, or the
// query parameters "access_token" and "ticket"; RedactQuery removes the
// query ones from anything that is logged.
//
// Patterns are path.Match globs: "*" matches within one "/"-separated
// segment. Stream names are compared byte for byte, as sser stores them;
// streams with "." or ".." segments or empty segments are never granted by
// a pattern, so no spelling of another stream's path reaches it.
package auth
