package sser

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/gobwas/ws"
)

// WebSocket close codes of sser's own (4000-4999 are the application's).
// They follow the HTTP status a request would have got, so a client can
// tell "fix the request" (44xx), "get a new credential" (4401) and
// "reconnect with the last id" (4206, 4408, 4429, and 1001) apart.
const (
	// WSCloseReplayPartial: the client missed more than one resume may
	// replay; it got the oldest part and resumes again for the rest.
	WSCloseReplayPartial ws.StatusCode = 4206
	// WSCloseBadMessage: a message that is not JSON, of an unknown type,
	// or naming an invalid stream or too many streams.
	WSCloseBadMessage ws.StatusCode = 4400
	// WSCloseUnauthorized: no credential, a wrong one, or one that expired.
	WSCloseUnauthorized ws.StatusCode = 4401
	// WSCloseForbidden: a stream the credential does not grant, or that
	// the server does not allow.
	WSCloseForbidden ws.StatusCode = 4403
	// WSCloseTimeout: no subscribe in time after connecting, or no answer
	// to the server's pings.
	WSCloseTimeout ws.StatusCode = 4408
	// WSCloseTooMany: the client fell behind its queue, or sent messages
	// faster than allowed.
	WSCloseTooMany ws.StatusCode = 4429
)

// Client message types.
const (
	wsSubscribe   = "subscribe"
	wsUnsubscribe = "unsubscribe"
)

// wsClientMessage is what a client sends:
//
//	{"type":"subscribe","streams":["a","b"],"lastEventId":"…","token":"…"}
//	{"type":"unsubscribe","streams":["a"]}
//
// lastEventId resumes, exactly as SSE's Last-Event-ID, and is taken on a
// connection's first subscribe only; token is a credential (a ticket or
// JWT) for a connection that brought none, on the first subscribe only.
type wsClientMessage struct {
	Type        string   `json:"type"`
	Streams     []string `json:"streams"`
	LastEventID string   `json:"lastEventId"`
	Token       string   `json:"token"`

	// from is LastEventID parsed.
	from position
}

// wsError is a refusal: the error message the client gets, then a close
// with code.
type wsError struct {
	code ws.StatusCode
	msg  string
}

func (e *wsError) Error() string { return fmt.Sprintf("%d %s", e.code, e.msg) }

func badMessage(format string, a ...any) *wsError {
	return &wsError{code: WSCloseBadMessage, msg: fmt.Sprintf(format, a...)}
}

// parseWSMessage parses one client message and checks everything that
// does not depend on the connection: its type, its streams (valid names,
// at most maxStreams, sorted and without repeats on return) and its
// lastEventId.
func parseWSMessage(data []byte, maxStreams int) (wsClientMessage, *wsError) {
	var m wsClientMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return m, badMessage("message must be a JSON object such as {\"type\":\"subscribe\",\"streams\":[\"a\"]}: %s", jsonProblem(err))
	}
	if dec.More() || dec.InputOffset() != int64(len(bytes.TrimRight(data, " \t\r\n"))) {
		return m, badMessage("message must be one JSON object with nothing after it")
	}
	switch m.Type {
	case wsSubscribe, wsUnsubscribe:
	case "":
		return m, badMessage("message has no type: want \"subscribe\" or \"unsubscribe\"")
	default:
		return m, badMessage("unknown message type %q: want \"subscribe\" or \"unsubscribe\"", truncate(m.Type, 64))
	}
	if len(m.Streams) == 0 {
		return m, badMessage("%s names no streams: add \"streams\":[\"NAME\"]", m.Type)
	}
	if len(m.Streams) > maxStreams {
		return m, badMessage("at most %d streams per connection, got %d", maxStreams, len(m.Streams))
	}
	for _, name := range m.Streams {
		if err := ValidateStreamName(name); err != nil {
			return m, badMessage("%s", truncate(err.Error(), 200))
		}
	}
	slices.Sort(m.Streams)
	m.Streams = slices.Compact(m.Streams)
	if m.Type == wsUnsubscribe && (m.LastEventID != "" || m.Token != "") {
		return m, badMessage("unsubscribe takes streams only")
	}
	from, err := parsePosition(strings.TrimSpace(m.LastEventID))
	if err != nil {
		return m, badMessage("invalid lastEventId (not an id this service wrote): %s", truncate(err.Error(), 200))
	}
	m.from = from
	return m, nil
}

// jsonProblem is a decoding error without the Go type names.
func jsonProblem(err error) string {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		return fmt.Sprintf("field %q has the wrong type (%s)", typeErr.Field, typeErr.Value)
	}
	return truncate(strings.TrimPrefix(err.Error(), "json: "), 200)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// withStreams is set with names added (subscribe) or removed
// (unsubscribe): sorted, no repeats.
func withStreams(set []string, typ string, names []string) []string {
	out := slices.Clone(set)
	if typ == wsSubscribe {
		out = append(out, names...)
		slices.Sort(out)
		return slices.Compact(out)
	}
	return slices.DeleteFunc(out, func(s string) bool {
		_, found := slices.BinarySearch(names, s)
		return found
	})
}
