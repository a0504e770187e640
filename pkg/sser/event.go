package sser

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

const (
	// PeerEndpointURLPath is where a replica accepts events from its peers.
	// They are delivered to this replica's subscribers only.
	PeerEndpointURLPath = "/api/json/v1/send"
	// PublishURLPath is where applications publish: the events are delivered
	// here and broadcast to every peer, exactly like Send.
	PublishURLPath = "/api/json/v1/publish"
	// HistoryURLPath serves this replica's history to peers (warm-up and gap repair).
	HistoryURLPath = "/api/json/v1/history"
	// QueryParameterName is the query parameter naming the streams to subscribe to.
	QueryParameterName = "stream"
	// LastEventIDQueryParameterName resumes a subscription for clients that
	// cannot set the Last-Event-ID header.
	LastEventIDQueryParameterName = "lastEventID"
	// EnvelopeQueryParameterName=json asks for each event's data as the
	// JSON object {"stream":"...","data":"..."}: how a browser EventSource
	// learns the stream of each event of a subscription of several
	// streams or of patterns.
	EnvelopeQueryParameterName = "envelope"
	// PreambleQueryParameterName=0 leaves out the frames without data
	// sent on connect (retry and id-only), =1 asks for them whatever the
	// server's default (see Options.NoPreamble).
	PreambleQueryParameterName = "preamble"

	// MaxStreamNameLength is the longest stream name accepted.
	MaxStreamNameLength = 128
	maxOriginLength     = 32
	maxEventTypeLength  = 128
)

var (
	// ErrStreamNameRequired is returned when an event or subscription names no stream.
	ErrStreamNameRequired = errors.New("sser: stream name is required")
	// ErrOnlySendNoneEmptyMessages is returned for an event with an empty message.
	ErrOnlySendNoneEmptyMessages = errors.New("sser: only non-empty messages can be sent")
	// ErrInvalidStreamName is returned for a stream name with characters
	// outside [A-Za-z0-9._~:@/-] or longer than MaxStreamNameLength.
	ErrInvalidStreamName = errors.New("sser: invalid stream name")
	// ErrInvalidEventType is returned for an event type with CR, LF or NUL, or too long.
	ErrInvalidEventType = errors.New("sser: invalid event type")
	// ErrInvalidOrigin is returned for a malformed origin or a seq without an origin.
	ErrInvalidOrigin = errors.New("sser: invalid origin")
	// ErrInvalidBody is returned for a request body that is not one Event or an array of them.
	ErrInvalidBody = errors.New("sser: invalid body")
	// ErrTooManyEvents is returned for a batch larger than the configured limit.
	ErrTooManyEvents = errors.New("sser: too many events in one request")
	// ErrClosed is returned by Send after the server has stopped.
	ErrClosed = errors.New("sser: server is closed")
	// ErrNotStarted is returned by Send before Start.
	ErrNotStarted = errors.New("sser: server is not started")
	// ErrBackPressure is returned by Send while a peer lags by the whole
	// outbox: publishing again after a short wait succeeds once the peer
	// catches up or is cut off.
	ErrBackPressure = errors.New("sser: back-pressure: a peer has not acknowledged the oldest events held for it")
	// ErrReservedEventType is returned for a published event type starting
	// with "sser-": those are the server's own notices.
	ErrReservedEventType = errors.New("sser: event types starting with \"sser-\" are reserved")
	// ErrInvalidAt is returned for a negative "at".
	ErrInvalidAt = errors.New("sser: at must not be negative")
	// ErrSeqJump is returned for a peer event whose seq is further ahead of
	// what this replica applied than any outbox could cover.
	ErrSeqJump = errors.New("sser: seq jump too large")
)

// Event is one message on one stream. Stream and Msg are the original format and
// the only required fields; the others are set by the publishing replica.
type Event struct {
	// Stream names the stream the event belongs to.
	Stream string `json:"stream"`
	// Msg is the event's data. A multi-line message becomes several SSE data lines.
	Msg string `json:"msg"`
	// Event is the SSE event type; empty means the default, "message".
	Event string `json:"event,omitempty"`
	// Origin identifies the publishing process incarnation.
	Origin string `json:"origin,omitempty"`
	// Seq is the origin's counter, one sequence across all streams.
	Seq uint64 `json:"seq,omitempty"`
	// At is when the origin accepted the event, in Unix microseconds, set
	// by the publishing replica: the start of the delivery latency metric,
	// and the order of retained events. Replicas that do not send it, and
	// those that do not read it, still interoperate: it is optional on the
	// wire and ignored where unknown.
	At int64 `json:"at,omitempty"`
	// Retain makes the event its stream's retained state: a new
	// subscriber (one that does not resume) gets it first, then live
	// events. With an empty Msg it clears the retained state instead, and
	// is delivered to no one. Every replica keeps the retained event with
	// the latest At (then origin, then seq), so they agree whatever order
	// concurrent publishers' events arrive in.
	Retain bool `json:"retain,omitempty"`
}

// clearsRetained reports whether ev clears its stream's retained state.
func (ev *Event) clearsRetained() bool { return ev.Retain && ev.Msg == "" }

// retainedAfter reports whether retained event ev wins over old.
func (ev *Event) retainedAfter(old *Event) bool {
	if ev.At != old.At {
		return ev.At > old.At
	}
	if ev.Origin != old.Origin {
		return ev.Origin > old.Origin
	}
	return ev.Seq > old.Seq
}

// ValidateStreamName reports whether name can be used as a stream name.
func ValidateStreamName(name string) error {
	if name == "" {
		return ErrStreamNameRequired
	}
	if len(name) > MaxStreamNameLength {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidStreamName, MaxStreamNameLength)
	}
	for i := 0; i < len(name); i++ {
		if !streamNameByte(name[i]) {
			return fmt.Errorf("%w: %q has a character outside [A-Za-z0-9._~:@/-] at byte %d", ErrInvalidStreamName, name, i)
		}
	}
	return nil
}

func streamNameByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	case c == '.', c == '_', c == '~', c == ':', c == '@', c == '/', c == '-':
		return true
	}
	return false
}

func validOrigin(o string) bool {
	if o == "" || len(o) > maxOriginLength {
		return false
	}
	for i := 0; i < len(o); i++ {
		c := o[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// Validate checks an event for delivery. Origin and Seq are checked only when
// present: the original format has neither.
func (e *Event) Validate() error {
	if err := ValidateStreamName(e.Stream); err != nil {
		return err
	}
	if e.Msg == "" && !e.Retain {
		return ErrOnlySendNoneEmptyMessages
	}
	if e.At < 0 {
		return ErrInvalidAt
	}
	if len(e.Event) > maxEventTypeLength || strings.ContainsAny(e.Event, "\r\n\x00") {
		return fmt.Errorf("%w: must be at most %d bytes with no CR, LF or NUL", ErrInvalidEventType, maxEventTypeLength)
	}
	if e.Origin != "" || e.Seq != 0 {
		if !validOrigin(e.Origin) || e.Seq == 0 {
			return fmt.Errorf("%w: origin must be 1-%d characters of [A-Za-z0-9_] with a seq > 0", ErrInvalidOrigin, maxOriginLength)
		}
	}
	return nil
}

// DecodeEvents parses a request body: one Event object or a JSON array of
// them, with nothing after it. It validates every event and returns either
// all of them or an error, never part of a batch. maxEvents <= 0 means no limit.
func DecodeEvents(r io.Reader, maxEvents int) ([]Event, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	return decodeEvents(data, maxEvents)
}

func decodeEvents(data []byte, maxEvents int) ([]Event, error) {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, fmt.Errorf("%w: empty body; want an Event object or an array of them", ErrInvalidBody)
	}
	keys, err := checkKeys(trimmed)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalidBody, err.Error())
	}
	events, err := decodeBody(trimmed, false)
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) && typ.Field == "msg" {
		// msg given as JSON (an object, an array, a number): sent as its
		// compact JSON text, so a JSON payload need not be escaped twice.
		events, err = decodeBody(trimmed, true)
	}
	if err != nil {
		return nil, err
	}
	if maxEvents > 0 && len(events) > maxEvents {
		return nil, fmt.Errorf("%w: %d events, at most %d", ErrTooManyEvents, len(events), maxEvents)
	}
	for i := range events {
		if err := events[i].Validate(); err != nil {
			if errors.Is(err, ErrOnlySendNoneEmptyMessages) && i < len(keys) && !keys[i].msg {
				err = missingMsg(keys[i].unknown)
			}
			if len(events) == 1 {
				return nil, err
			}
			return nil, fmt.Errorf("event %d: %w", i, err)
		}
	}
	return events, nil
}

// decodeBody decodes one Event object or an array of them, with nothing
// after it. With anyMsg, msg may be any JSON value.
func decodeBody(data []byte, anyMsg bool) ([]Event, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	var events []Event
	switch {
	case data[0] == '[' && anyMsg:
		var raw []jsonMsgEvent
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("%w: %s", ErrInvalidBody, jsonErrorText(err))
		}
		events = make([]Event, len(raw))
		for i := range raw {
			events[i] = raw[i].event()
		}
	case data[0] == '[':
		if err := dec.Decode(&events); err != nil {
			if anyMsgError(err) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %s", ErrInvalidBody, jsonErrorText(err))
		}
	case data[0] == '{' && anyMsg:
		var raw jsonMsgEvent
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("%w: %s", ErrInvalidBody, jsonErrorText(err))
		}
		events = []Event{raw.event()}
	case data[0] == '{':
		var ev Event
		if err := dec.Decode(&ev); err != nil {
			if anyMsgError(err) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %s", ErrInvalidBody, jsonErrorText(err))
		}
		events = []Event{ev}
	default:
		return nil, fmt.Errorf("%w: want an Event object or an array of them", ErrInvalidBody)
	}
	if len(events) == 0 {
		return nil, fmt.Errorf("%w: empty array", ErrInvalidBody)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: unexpected data after the JSON value", ErrInvalidBody)
	}
	return events, nil
}

// anyMsgError is a decoding error that a msg given as JSON explains.
func anyMsgError(err error) bool {
	var typ *json.UnmarshalTypeError
	return errors.As(err, &typ) && typ.Field == "msg"
}

// jsonMsgEvent is an Event whose msg may be any JSON value.
type jsonMsgEvent struct {
	Stream string          `json:"stream"`
	Msg    json.RawMessage `json:"msg"`
	Event  string          `json:"event,omitempty"`
	Origin string          `json:"origin,omitempty"`
	Seq    uint64          `json:"seq,omitempty"`
	At     int64           `json:"at,omitempty"`
	Retain bool            `json:"retain,omitempty"`
}

func (j *jsonMsgEvent) event() Event {
	ev := Event{Stream: j.Stream, Event: j.Event, Origin: j.Origin, Seq: j.Seq, At: j.At, Retain: j.Retain}
	switch {
	case len(j.Msg) == 0 || string(j.Msg) == "null":
	case j.Msg[0] == '"':
		_ = json.Unmarshal(j.Msg, &ev.Msg)
	default:
		var b bytes.Buffer
		if json.Compact(&b, j.Msg) == nil {
			ev.Msg = b.String()
		}
	}
	return ev
}

// missingMsg says an event has no msg, naming the keys it had instead.
func missingMsg(unknown []string) error {
	if len(unknown) == 0 {
		return fmt.Errorf("%w: the event has no \"msg\" (its data)", ErrOnlySendNoneEmptyMessages)
	}
	q := make([]string, len(unknown))
	for i, k := range unknown {
		q[i] = strconv.Quote(k)
	}
	return fmt.Errorf("%w: the event has no \"msg\" (its data), and unknown fields %s: did you mean \"msg\"?", ErrOnlySendNoneEmptyMessages, strings.Join(q, ", "))
}

// eventKeysSeen is what checkKeys saw of one event object's keys.
type eventKeysSeen struct {
	msg     bool
	unknown []string
}

// eventKeys are the JSON keys of an Event, spelled exactly.
var eventKeys = []string{"stream", "msg", "event", "origin", "seq", "at", "retain"}

// checkKeys refuses what encoding/json would quietly accept in an Event
// object: a key given twice (the last would win) and a known key in another
// case ("Stream" would fill stream). Unknown keys stay allowed, as do
// nested values of unknown keys.
//
// It returns, for each event object in order, whether it has msg and the
// keys it has that an Event does not.
func checkKeys(data []byte) ([]eventKeysSeen, error) {
	type frame struct {
		obj, wantKey, event bool
		seen                map[string]bool
	}
	var stack []frame
	var out []eventKeysSeen
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].obj {
			stack[n-1].wantKey = true
		}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		tok, err := dec.Token()
		if err != nil {
			return out, nil // malformed JSON is reported by the decoder proper
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				// An event object is the top value, or an element of a top array.
				event := len(stack) == 0 || (len(stack) == 1 && !stack[0].obj)
				stack = append(stack, frame{obj: true, wantKey: true, event: event, seen: make(map[string]bool, 5)})
				if event {
					out = append(out, eventKeysSeen{})
				}
			case '[':
				stack = append(stack, frame{})
			default:
				if len(stack) == 0 {
					return out, nil
				}
				stack = stack[:len(stack)-1]
				if len(stack) == 0 {
					return out, nil
				}
				valueDone()
			}
		case string:
			if len(stack) == 0 {
				return out, nil // not an object or array: the decoder proper says so
			}
			top := &stack[len(stack)-1]
			if top.obj && top.wantKey {
				top.wantKey = false
				if !top.event {
					continue
				}
				known := false
				for _, k := range eventKeys {
					if t != k && strings.EqualFold(t, k) {
						return nil, fmt.Errorf("key %q: keys are case-sensitive, did you mean %q?", t, k)
					}
					known = known || t == k
				}
				if top.seen[t] {
					return nil, fmt.Errorf("key %q given twice", t)
				}
				top.seen[t] = true
				ks := &out[len(out)-1]
				switch {
				case t == "msg":
					ks.msg = true
				case !known && len(ks.unknown) < 8:
					ks.unknown = append(ks.unknown, t)
				}
				continue
			}
			valueDone()
		default:
			valueDone()
		}
	}
}

func jsonErrorText(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("malformed JSON at byte %d: %s", syn.Offset, syn.Error())
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q must be %s, not %s", typ.Field, typ.Type, typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "truncated JSON"
	}
	return err.Error()
}
