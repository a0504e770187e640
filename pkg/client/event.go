package client

// Event is one dispatched server-sent event.
type Event struct {
	// ID is the stream's last event ID when the event was dispatched: the id
	// field of this event or, when it had none, of an earlier one. Per the
	// spec it persists from event to event until the server changes it.
	ID string
	// Type is the event type: the event field, or "message" when the server
	// sent none.
	Type string
	// Data is the data lines of the event joined with LF.
	Data string
	// Stream is the event's stream when the server names it: sser does
	// for a subscription of several streams or of patterns, with a
	// "stream" field that other parsers ignore. Empty otherwise.
	Stream string
}

// DefaultEventType is the type of an event that has no event field.
const DefaultEventType = "message"
