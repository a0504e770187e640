package client

import (
	"bytes"
	"io"
	"math"
	"time"
	"unicode/utf8"
)

// DefaultMaxEventSize bounds one event (its data plus the line being read)
// when ParserConfig.MaxEventSize is not set.
const DefaultMaxEventSize = 16 << 20

// readBufferSize is how much the parser asks the reader for at a time.
const readBufferSize = 32 << 10

// keepBufferCap is the largest line or data buffer kept for reuse between
// events; a larger one (after a big event) is dropped so that a stream that
// once carried 10 MB does not hold 10 MB forever.
const keepBufferCap = 64 << 10

var bom = []byte{0xEF, 0xBB, 0xBF}

// ParserConfig configures a Parser. The zero value is usable.
type ParserConfig struct {
	// LastEventID is the last event ID the stream starts with: the id that a
	// reconnecting client sent. Per the spec the id persists until the server
	// changes it, so an event with no id field carries this one.
	LastEventID string
	// MaxEventSize bounds the bytes of one event; Next returns
	// ErrEventTooLarge beyond it. 0 means DefaultMaxEventSize.
	MaxEventSize int
	// OnComment, when set, is called with the text of every comment line
	// (the part after the colon, with one leading space removed). sser sends
	// heartbeats as comments.
	OnComment func(text string)
	// OnRetry, when set, is called for every valid retry field.
	OnRetry func(d time.Duration)
	// OnLastEventID, when set, is called when a blank line changes the last
	// event ID but dispatches no event because the data buffer is empty (an
	// id-only frame such as the one sser sends on connect). Dispatched events
	// carry their id in Event.ID instead.
	OnLastEventID func(id string)
}

// Parser reads server-sent events from a byte stream, following the WHATWG
// HTML "Server-sent events" parsing rules exactly. It is not safe for
// concurrent use; its callbacks run on the goroutine calling Next.
type Parser struct {
	r   io.Reader
	cfg ParserConfig
	max int

	buf      []byte
	pos, end int

	line   []byte // the current line when it spans reads
	data   []byte // data buffer, each value followed by LF
	typ    []byte // event type buffer
	stream []byte // stream field buffer (an sser extension)

	idBuf  string // last event ID buffer (set by id fields)
	lastID string // last event ID string (set at dispatch)

	retry    time.Duration
	retrySet bool

	bomDone bool
	skipLF  bool // the previous line ended with CR; a following LF belongs to it
	err     error
}

// NewParser returns a Parser that reads from r.
func NewParser(r io.Reader, cfg ParserConfig) *Parser {
	p := &Parser{r: r, cfg: cfg, max: cfg.MaxEventSize, idBuf: cfg.LastEventID, lastID: cfg.LastEventID}
	if p.max <= 0 {
		p.max = DefaultMaxEventSize
	}
	return p
}

// LastEventID is the stream's last event ID: what a client reconnecting now
// should send as Last-Event-ID.
func (p *Parser) LastEventID() string { return p.lastID }

// Retry is the reconnection time from the last valid retry field, and
// whether there was one.
func (p *Parser) Retry() (time.Duration, bool) { return p.retry, p.retrySet }

// Next returns the next dispatched event. At the end of the input it returns
// io.EOF, discarding an event that was not terminated by a blank line. Other
// read errors are returned as they are; after any error Next keeps
// returning it.
func (p *Parser) Next() (Event, error) {
	if p.err != nil {
		return Event{}, p.err
	}
	if !p.bomDone {
		if err := p.stripBOM(); err != nil {
			p.err = err
			return Event{}, err
		}
	}
	for {
		if p.pos == p.end {
			if err := p.fill(); err != nil {
				p.err = err
				return Event{}, err
			}
			continue
		}
		if p.skipLF {
			p.skipLF = false
			if p.buf[p.pos] == '\n' {
				p.pos++
				continue
			}
		}
		chunk := p.buf[p.pos:p.end]
		i := bytes.IndexAny(chunk, "\r\n")
		if i < 0 {
			if err := p.grow(len(chunk)); err != nil {
				p.err = err
				return Event{}, err
			}
			p.line = append(p.line, chunk...)
			p.pos = p.end
			continue
		}
		line := chunk[:i]
		if len(p.line) > 0 {
			if err := p.grow(i); err != nil {
				p.err = err
				return Event{}, err
			}
			p.line = append(p.line, line...)
			line = p.line
		} else if err := p.grow(i); err != nil {
			p.err = err
			return Event{}, err
		}
		p.skipLF = chunk[i] == '\r'
		p.pos += i + 1
		ev, ok, err := p.processLine(line)
		p.line = p.line[:0]
		if err != nil {
			p.err = err
			return Event{}, err
		}
		if ok {
			return ev, nil
		}
	}
}

// grow checks that n more bytes of the current line keep the event within
// the maximum size.
func (p *Parser) grow(n int) error {
	if len(p.line)+len(p.data)+len(p.typ)+len(p.stream)+n > p.max {
		return ErrEventTooLarge
	}
	return nil
}

// fill reads more input into buf[end:].
func (p *Parser) fill() error {
	if p.buf == nil {
		p.buf = make([]byte, readBufferSize)
	}
	if p.pos == p.end {
		p.pos, p.end = 0, 0
	}
	if p.end == len(p.buf) {
		// Only stripBOM keeps bytes across fills; move them to the front.
		n := copy(p.buf, p.buf[p.pos:p.end])
		p.pos, p.end = 0, n
	}
	for range 100 {
		n, err := p.r.Read(p.buf[p.end:])
		p.end += n
		if n > 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return io.ErrNoProgress
}

// stripBOM drops one leading U+FEFF, which may arrive split across reads.
func (p *Parser) stripBOM() error {
	for {
		have := p.buf[p.pos:p.end]
		if len(have) >= len(bom) || !bytes.HasPrefix(bom, have) {
			if bytes.HasPrefix(have, bom) {
				p.pos += len(bom)
			}
			p.bomDone = true
			return nil
		}
		if err := p.fill(); err != nil {
			return err
		}
	}
}

// processLine applies one complete line; ok is true when it dispatched an
// event.
func (p *Parser) processLine(line []byte) (ev Event, ok bool, err error) {
	if !utf8.Valid(line) {
		line = decodeUTF8(line)
	}
	if len(line) == 0 {
		ev, ok = p.dispatch()
		return ev, ok, nil
	}
	if line[0] == ':' {
		if p.cfg.OnComment != nil {
			text := line[1:]
			if len(text) > 0 && text[0] == ' ' {
				text = text[1:]
			}
			p.cfg.OnComment(string(text))
		}
		return Event{}, false, nil
	}
	field, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		field, value = line[:i], line[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(field) {
	case "event":
		p.typ = append(p.typ[:0], value...)
	case "stream":
		p.stream = append(p.stream[:0], value...)
	case "data":
		p.data = append(p.data, value...)
		p.data = append(p.data, '\n')
	case "id":
		if bytes.IndexByte(value, 0) < 0 && string(value) != p.idBuf {
			p.idBuf = string(value)
		}
	case "retry":
		if d, ok := parseRetry(value); ok {
			p.retry, p.retrySet = d, true
			if p.cfg.OnRetry != nil {
				p.cfg.OnRetry(d)
			}
		}
	}
	return Event{}, false, nil
}

// dispatch runs the spec's "dispatch the event" steps.
func (p *Parser) dispatch() (Event, bool) {
	changed := p.lastID != p.idBuf
	p.lastID = p.idBuf
	if len(p.data) == 0 {
		p.typ = p.typ[:0]
		p.stream = p.stream[:0]
		if changed && p.cfg.OnLastEventID != nil {
			p.cfg.OnLastEventID(p.lastID)
		}
		return Event{}, false
	}
	ev := Event{ID: p.lastID, Type: DefaultEventType, Data: string(p.data[:len(p.data)-1])}
	if len(p.typ) > 0 {
		ev.Type = string(p.typ)
	}
	if len(p.stream) > 0 {
		ev.Stream = string(p.stream)
	}
	p.data, p.typ, p.stream = p.data[:0], p.typ[:0], p.stream[:0]
	if cap(p.data) > keepBufferCap {
		p.data = nil
	}
	if cap(p.line) > keepBufferCap {
		p.line = nil
	}
	return ev, true
}

// parseRetry accepts only ASCII digits, as the spec requires; values too
// large for a time.Duration are clamped.
func parseRetry(v []byte) (time.Duration, bool) {
	if len(v) == 0 {
		return 0, false
	}
	var ms uint64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		if ms < 1<<53 { // past that the result is clamped anyway
			ms = ms*10 + uint64(c-'0')
		}
	}
	if ms > math.MaxInt64/uint64(time.Millisecond) {
		return time.Duration(math.MaxInt64), true
	}
	return time.Duration(ms) * time.Millisecond, true
}
