package auth

import (
	"path"
	"strings"
	"time"
)

// Principal is an authenticated client: who it is, what it may read and
// write, and until when.
type Principal struct {
	// Subject names the client ("sub" of a JWT, a ticket's subject); may be empty.
	Subject string
	// Grants are the stream names and patterns it may subscribe to.
	Grants []string
	// Publish are the stream names and patterns it may publish to.
	Publish []string
	// Expires is when the credential stops being valid; zero means never.
	Expires time.Time
}

// Allows reports whether p may subscribe to stream.
func (p *Principal) Allows(stream string) bool { return p != nil && matchAny(p.Grants, stream) }

// AllowsPublish reports whether p may publish to stream.
func (p *Principal) AllowsPublish(stream string) bool {
	return p != nil && matchAny(p.Publish, stream)
}

func matchAny(patterns []string, stream string) bool {
	if !grantable(stream) {
		return false
	}
	for _, pat := range patterns {
		if ok, err := path.Match(pat, stream); ok && err == nil {
			return true
		}
	}
	return false
}

// grantable reports whether stream is a valid stream name with no empty,
// "." or ".." segment: such names are refused whatever the grant, so that
// a client cannot reach "users/bob/x" through "users/alice/../bob/x" in an
// application that treats names as paths.
func grantable(stream string) bool {
	if !ValidStreamName(stream) {
		return false
	}
	for seg := range strings.SplitSeq(stream, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}
