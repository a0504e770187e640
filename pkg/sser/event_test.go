package sser

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateStreamName(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"simple", "prices", nil},
		{"all punctuation", "a.b_c~d:e@f/g-h", nil},
		{"max length", strings.Repeat("a", MaxStreamNameLength), nil},
		{"empty", "", ErrStreamNameRequired},
		{"too long", strings.Repeat("a", MaxStreamNameLength+1), ErrInvalidStreamName},
		{"space", "a b", ErrInvalidStreamName},
		{"newline", "a\nb", ErrInvalidStreamName},
		{"NUL", "a\x00", ErrInvalidStreamName},
		{"non-ASCII", "prïces", ErrInvalidStreamName},
		{"query chars", "a&stream=b", ErrInvalidStreamName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateStreamName(tt.in)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Errorf("ValidateStreamName(%q) = %v, want %v", tt.in, err, tt.want)
			}
		})
	}
}

func TestDecodeEvents(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		max     int
		want    []Event
		wantErr error
	}{
		{"seed object", `{"stream":"s","msg":"m"}`, 0, []Event{{Stream: "s", Msg: "m"}}, nil},
		{"full object", `{"stream":"s","msg":"m","event":"t","origin":"abc","seq":7}`, 0, []Event{{Stream: "s", Msg: "m", Event: "t", Origin: "abc", Seq: 7}}, nil},
		{"unknown fields ignored", `{"stream":"s","msg":"m","future":{"x":1}}`, 0, []Event{{Stream: "s", Msg: "m"}}, nil},
		{"array", ` [{"stream":"a","msg":"1"},{"stream":"b","msg":"2"}] `, 0, []Event{{Stream: "a", Msg: "1"}, {Stream: "b", Msg: "2"}}, nil},
		{"empty body", ``, 0, nil, ErrInvalidBody},
		{"whitespace body", " \n", 0, nil, ErrInvalidBody},
		{"empty array", `[]`, 0, nil, ErrInvalidBody},
		{"malformed", `{"stream":`, 0, nil, ErrInvalidBody},
		{"not an object", `"hello"`, 0, nil, ErrInvalidBody},
		{"number", `42`, 0, nil, ErrInvalidBody},
		{"wrong type", `{"stream":1,"msg":"m"}`, 0, nil, ErrInvalidBody},
		{"msg as a JSON object", `{"stream":"s","msg": {"price": 1.5, "tags": ["a", "b"]}}`, 0, []Event{{Stream: "s", Msg: `{"price":1.5,"tags":["a","b"]}`}}, nil},
		{"msg as JSON in a batch", `[{"stream":"s","msg":[1, 2]},{"stream":"s","msg":"text"},{"stream":"s","msg":42},{"stream":"s","msg":true}]`, 0,
			[]Event{{Stream: "s", Msg: "[1,2]"}, {Stream: "s", Msg: "text"}, {Stream: "s", Msg: "42"}, {Stream: "s", Msg: "true"}}, nil},
		{"msg null", `{"stream":"s","msg":null}`, 0, nil, ErrOnlySendNoneEmptyMessages},
		{"msg as JSON with a bad stream", `{"stream":"a b","msg":{}}`, 0, nil, ErrInvalidStreamName},
		{"trailing data", `{"stream":"s","msg":"m"} {"stream":"s","msg":"m"}`, 0, nil, ErrInvalidBody},
		{"missing stream", `{"msg":"m"}`, 0, nil, ErrStreamNameRequired},
		{"bad stream", `{"stream":"a b","msg":"m"}`, 0, nil, ErrInvalidStreamName},
		{"empty msg", `{"stream":"s","msg":""}`, 0, nil, ErrOnlySendNoneEmptyMessages},
		{"event with newline", `{"stream":"s","msg":"m","event":"a\nb"}`, 0, nil, ErrInvalidEventType},
		{"seq without origin", `{"stream":"s","msg":"m","seq":3}`, 0, nil, ErrInvalidOrigin},
		{"origin without seq", `{"stream":"s","msg":"m","origin":"abc"}`, 0, nil, ErrInvalidOrigin},
		{"bad origin chars", `{"stream":"s","msg":"m","origin":"a-b","seq":1}`, 0, nil, ErrInvalidOrigin},
		{"negative seq", `{"stream":"s","msg":"m","origin":"a","seq":-1}`, 0, nil, ErrInvalidBody},
		{"one bad in batch rejects all", `[{"stream":"s","msg":"m"},{"stream":"","msg":"m"}]`, 0, nil, ErrStreamNameRequired},
		{"too many", `[{"stream":"s","msg":"1"},{"stream":"s","msg":"2"}]`, 1, nil, ErrTooManyEvents},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeEvents(strings.NewReader(tt.body), tt.max)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if got != nil {
					t.Errorf("got events %v with an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("event %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestDecodeEventsIsStrictAboutKeys(t *testing.T) {
	for _, tt := range []struct {
		body, err string
	}{
		{`{"stream":"a","msg":"x","msg":"y"}`, "given twice"},
		{`[{"stream":"a","msg":"x"},{"stream":"b","Stream":"c","msg":"y"}]`, "case-sensitive"},
		{`{"Msg":"x","stream":"a"}`, "case-sensitive"},
		{`{"stream":"a","msg":"x","extra":{"msg":1,"msg":2}}`, ""}, // unknown keys and their values are not events
		{`{"stream":"a","msg":"x","unknown":"ok"}`, ""},
		{`{"stream":"a","msg":"{\"stream\":1,\"stream\":2}"}`, ""},
	} {
		_, err := decodeEvents([]byte(tt.body), 0)
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("decodeEvents(%s) = %v, want an error with %q", tt.body, err, tt.err)
		}
	}
}

// A body without msg names the fields it has instead, so a misspelt
// "message" is not answered "only non-empty messages can be sent".
func TestMissingMsgNamesUnknownFields(t *testing.T) {
	for _, tt := range []struct{ body, want string }{
		{`{"stream":"s","message":"hello"}`, `unknown fields "message": did you mean "msg"?`},
		{`[{"stream":"s","msg":"ok"},{"stream":"s","data":"x","text":"y"}]`, `event 1: sser: only non-empty messages can be sent: the event has no "msg" (its data), and unknown fields "data", "text"`},
		{`{"stream":"s"}`, `the event has no "msg" (its data)`},
	} {
		_, err := decodeEvents([]byte(tt.body), 0)
		if !errors.Is(err, ErrOnlySendNoneEmptyMessages) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want it to say %q", tt.body, err, tt.want)
		}
	}
}
