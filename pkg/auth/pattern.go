package auth

import (
	"fmt"
	"path"
	"strings"
)

// MaxStreamName is the longest stream name sser accepts.
const MaxStreamName = 128

// ValidStreamName reports whether name is a stream name sser accepts: 1-128
// characters of [A-Za-z0-9._~:@/-].
func ValidStreamName(name string) bool {
	if name == "" || len(name) > MaxStreamName {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !streamByte(name[i]) {
			return false
		}
	}
	return true
}

func streamByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("._~:@/-", c) >= 0
}

// ValidPattern reports whether p is a grant: a stream name, or a path.Match
// glob over stream names.
func ValidPattern(p string) bool {
	if p == "" || len(p) > 4*MaxStreamName {
		return false
	}
	if _, err := path.Match(p, ""); err != nil {
		return false
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; !streamByte(c) && strings.IndexByte("*?[]^!\\", c) < 0 {
			return false
		}
	}
	return true
}

// validSegment reports whether v may be put into a template: one non-empty
// segment of a stream name, not "." or "..", with no glob character, so a
// claim can never widen a grant or step into another user's streams.
func validSegment(v string) bool {
	return v != "." && v != ".." && !strings.Contains(v, "/") && ValidStreamName(v)
}

// Template is a grant built from a token's claims, e.g. "users/{sub}/*":
// each {name} is replaced by the token's string claim name.
type Template struct {
	raw   string
	parts []string // literal, claim, literal, claim, ..., literal
}

// ParseTemplate parses a template; the literal parts with the claims
// replaced by a segment must make a valid pattern.
func ParseTemplate(s string) (Template, error) {
	t := Template{raw: s}
	rest := s
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			if strings.IndexByte(rest, '}') >= 0 {
				return Template{}, fmt.Errorf("template %q: unmatched }", s)
			}
			t.parts = append(t.parts, rest)
			break
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return Template{}, fmt.Errorf("template %q: unmatched {", s)
		}
		name := rest[i+1 : i+j]
		if name == "" || strings.ContainsAny(name, "{/") {
			return Template{}, fmt.Errorf("template %q: bad claim name %q", s, name)
		}
		if strings.IndexByte(rest[:i], '}') >= 0 {
			return Template{}, fmt.Errorf("template %q: unmatched }", s)
		}
		t.parts = append(t.parts, rest[:i], name)
		rest = rest[i+j+1:]
	}
	if !ValidPattern(t.expandWith(func(string) string { return "x" })) {
		return Template{}, fmt.Errorf("template %q: not a valid stream pattern", s)
	}
	return t, nil
}

func (t Template) String() string { return t.raw }

func (t Template) expandWith(claim func(string) string) string {
	var b strings.Builder
	for i, p := range t.parts {
		if i%2 == 0 {
			b.WriteString(p)
		} else {
			b.WriteString(claim(p))
		}
	}
	return b.String()
}

// Expand fills the template from claims; false when a claim it names is
// missing, not a string, or not a valid segment.
func (t Template) Expand(claims map[string]any) (string, bool) {
	ok := true
	out := t.expandWith(func(name string) string {
		v, isStr := claims[name].(string)
		if !isStr || !validSegment(v) {
			ok = false
			return ""
		}
		return v
	})
	return out, ok && ValidPattern(out)
}
