package sser

import (
	"errors"
	"path"
	"slices"
	"strings"
	"time"
)

// A subscription names streams exactly ("prices/BTC") or by pattern
// ("prices/*", "*/1Min/OHLCV"): a name with any of the glob characters
// *, ? or [ is a pattern, matched with path.Match, so * and ? never cross
// a '/'. Stream names cannot hold those characters, so the two never mix
// up.
const patternChars = "*?["

// ErrInvalidPattern is returned for a stream pattern that is not a valid
// glob over stream names.
var ErrInvalidPattern = errors.New("sser: invalid stream pattern")

// IsStreamPattern reports whether a subscription's stream parameter is a
// pattern rather than a stream name.
func IsStreamPattern(s string) bool { return strings.ContainsAny(s, patternChars) }

// ValidateStreamPattern checks a subscription pattern: at most
// MaxStreamNameLength characters of stream names and the glob characters
// * ? [ ] ^ ! \, with valid path.Match syntax.
func ValidateStreamPattern(p string) error {
	if p == "" || len(p) > MaxStreamNameLength {
		return ErrInvalidPattern
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; !streamNameByte(c) && strings.IndexByte("*?[]^!\\", c) < 0 {
			return ErrInvalidPattern
		}
	}
	if _, err := path.Match(p, ""); err != nil {
		return ErrInvalidPattern
	}
	return nil
}

// patternPrefix is the literal part of p before its first glob character:
// every stream p matches starts with it.
func patternPrefix(p string) string {
	if i := strings.IndexAny(p, patternChars+"\\"); i >= 0 {
		return p[:i]
	}
	return p
}

// frameFormat is how a subscriber of several streams learns which stream
// each event is on.
type frameFormat uint8

const (
	// formatPlain frames carry no stream: single-stream subscribers.
	formatPlain frameFormat = iota
	// formatTagged frames add a "stream:" field. Spec-following parsers
	// ignore unknown fields; sser's clients read it.
	formatTagged
	// formatEnvelope frames carry the stream in the data, as the JSON
	// object {"stream":"...","data":"..."}, for browsers: an EventSource
	// only exposes the type, the data and the id.
	formatEnvelope
	// formatWS frames are WebSocket event messages, which name their
	// stream: WebSocket subscribers, whose sets are apart from SSE ones.
	formatWS
)

// streamSet is the subscribers of one set of streams: several names,
// patterns, or both, with one frame format. Subscribers of the same set
// share one encoding of each frame. It is served under the hub's lock,
// which keeps one apply order across all its streams.
type streamSet struct {
	key      string
	names    []string // sorted
	patterns []string
	format   frameFormat
	// allow, when set, decides which streams matching a pattern the set
	// may receive (the subscribers' credential); named streams were
	// checked when subscribing.
	allow func(stream string) bool

	subs map[*subscriber]struct{}
	// members are the streams the set receives that exist on this
	// replica now.
	members map[*streamState]struct{}
	// pos is the merge of the members' positions, kept as events apply,
	// and seen when each of its origins last published to a member.
	pos  position
	seen map[string]time.Time
}

// matches reports whether the set receives stream name.
func (s *streamSet) matches(name string) bool {
	if _, ok := slices.BinarySearch(s.names, name); ok {
		return true
	}
	for _, p := range s.patterns {
		if ok, _ := path.Match(p, name); ok {
			return s.allow == nil || s.allow(name)
		}
	}
	return false
}

// setKey names a set of streams and patterns with a frame format and the
// credential's grants (when patterns are filtered by them).
func setKey(names, patterns []string, f frameFormat, grants string) string {
	var b strings.Builder
	b.WriteByte('0' + byte(f))
	for _, n := range names {
		b.WriteByte(0)
		b.WriteString(n)
	}
	b.WriteByte(1)
	for _, p := range patterns {
		b.WriteByte(0)
		b.WriteString(p)
	}
	if grants != "" {
		b.WriteByte(2)
		b.WriteString(grants)
	}
	return b.String()
}

// setLocked is the set sub belongs to, made and filled on first use.
func (h *hub) setLocked(sub *subscriber) *streamSet {
	if s := h.sets[sub.key]; s != nil {
		return s
	}
	s := &streamSet{
		key:      sub.key,
		names:    sub.streams,
		patterns: sub.patterns,
		format:   sub.format,
		allow:    sub.allow,
		subs:     make(map[*subscriber]struct{}),
		members:  make(map[*streamState]struct{}),
	}
	h.sets[s.key] = s
	for _, name := range s.names {
		h.joinLocked(s, h.streamLocked(name))
	}
	if len(s.patterns) > 0 {
		for _, ss := range h.streams {
			if s.matches(ss.name) {
				h.joinLocked(s, ss)
			}
		}
		for _, pfx := range s.prefixes() {
			h.patterns[pfx] = append(h.patterns[pfx], s)
		}
	}
	return s
}

// prefixes are the distinct literal prefixes of the set's patterns.
func (s *streamSet) prefixes() []string {
	var out []string
	for _, p := range s.patterns {
		if pfx := patternPrefix(p); !slices.Contains(out, pfx) {
			out = append(out, pfx)
		}
	}
	return out
}

// joinLocked makes ss a member of s: s's position takes in the stream's.
func (h *hub) joinLocked(s *streamSet, ss *streamState) {
	if _, ok := s.members[ss]; ok {
		return
	}
	s.members[ss] = struct{}{}
	ss.sets = append(ss.sets, s)
	if len(ss.pos) > 0 {
		s.pos = s.pos.merge(ss.pos)
		if s.seen == nil {
			s.seen = make(map[string]time.Time)
		}
		for o, at := range ss.seen {
			if at.After(s.seen[o]) {
				s.seen[o] = at
			}
		}
	}
}

// dropSetLocked forgets a set whose last subscriber left.
func (h *hub) dropSetLocked(s *streamSet) {
	delete(h.sets, s.key)
	for _, pfx := range s.prefixes() {
		list := slices.DeleteFunc(h.patterns[pfx], func(x *streamSet) bool { return x == s })
		if len(list) == 0 {
			delete(h.patterns, pfx)
		} else {
			h.patterns[pfx] = list
		}
	}
	for ss := range s.members {
		ss.sets = slices.DeleteFunc(ss.sets, func(x *streamSet) bool { return x == s })
		if ss.idle() {
			h.forgetStreamLocked(ss)
		}
	}
}

// streamLocked is the state of stream name, made when new: a new stream
// joins the pattern sets that match it. Finding them costs one map lookup
// per prefix of the name, not a look at every pattern.
func (h *hub) streamLocked(name string) *streamState {
	if ss := h.streams[name]; ss != nil {
		return ss
	}
	ss := newStreamState(name)
	h.streams[name] = ss
	h.matchPatternsLocked(ss)
	return ss
}

func (h *hub) matchPatternsLocked(ss *streamState) {
	if len(h.patterns) == 0 {
		return
	}
	name := ss.name
	for i := 0; i <= len(name); i++ {
		for _, s := range h.patterns[name[:i]] {
			if s.matches(name) {
				h.joinLocked(s, ss)
			}
		}
	}
}

// patternMatchesLocked reports whether a pattern set would receive name.
func (h *hub) patternMatchesLocked(name string) bool {
	for i := 0; i <= len(name) && len(h.patterns) > 0; i++ {
		for _, s := range h.patterns[name[:i]] {
			if s.matches(name) {
				return true
			}
		}
	}
	return false
}

// forgetStreamLocked drops a stream with nothing left on this replica.
func (h *hub) forgetStreamLocked(ss *streamState) {
	if h.streams[ss.name] != ss {
		return
	}
	delete(h.streams, ss.name)
	for _, s := range ss.sets {
		delete(s.members, ss)
	}
	ss.sets = nil
}

// setNamesLocked are the streams a subscriber of s receives that exist
// here, sorted: what a resume replays from.
func (s *streamSet) memberNames() []string {
	out := make([]string, 0, len(s.members))
	for ss := range s.members {
		out = append(out, ss.name)
	}
	slices.Sort(out)
	return out
}

// advance takes an event applied on member stream ss into the set's
// position, as the stream's own position took it.
func (s *streamSet) advance(origin string, ss *streamState, at time.Time) {
	e := ss.pos.entry(origin)
	s.pos = s.pos.set(mergeEntry(s.pos.entry(origin), e))
	if s.seen == nil {
		s.seen = make(map[string]time.Time)
	}
	s.seen[origin] = at
}

// agePosition drops from pos the origins that are stale or were not seen
// within age; seen loses them too.
func agePosition(pos position, seen map[string]time.Time, stale map[string]bool, now time.Time, age time.Duration) (position, []string) {
	var drop map[string]bool
	var dropped []string
	for o, at := range seen {
		if stale[o] || now.Sub(at) > age {
			if drop == nil {
				drop = make(map[string]bool)
			}
			drop[o] = true
			dropped = append(dropped, o)
			delete(seen, o)
		}
	}
	if drop != nil {
		pos = pos.without(func(o string) bool { return drop[o] })
	}
	return pos, dropped
}

// setFrame is e's frame in format f with e's own id, encoded once: replays
// to many subscribers of sets share it, as they share e.frame.
func (e *histEntry) setFrame(f frameFormat) []byte {
	if f == formatPlain {
		return e.frame
	}
	k := 0
	switch f {
	case formatEnvelope:
		k = 1
	case formatWS:
		if e.ws != nil {
			return *e.ws
		}
		k = 2
	}
	if e.setFrames == nil {
		e.setFrames = new([3][]byte)
	}
	if e.setFrames[k] == nil {
		e.setFrames[k] = appendSetFrame(nil, e.pos.String(), &e.ev, f)
	}
	return e.setFrames[k]
}
