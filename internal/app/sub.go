package app

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/sser-dev/sser/pkg/client"
)

const subUsage = `Usage: sser sub [flags]

Subscribe to one or more streams of an sser frontend and print every event
on standard output until interrupted. Connection problems are reported on
standard error and the subscription resumes on its own from the last event
id (on whichever replica answers), so nothing is missed or repeated while
the server still holds the events.

Output is the data of each event (prefixed with "[type] " for named event
types), or with --json one JSON object per line: {"id":..., "event":..., "data":...}.

Examples:
  sser sub --stream prices
  sser sub --url http://localhost:8000 --stream a --stream b --json | jq .
  sser sub --stream prices --last-event-id "$SAVED_ID"

Flags:
`

// subEventsPath is the SSE endpoint, used when --url has no path.
const subEventsPath = "/events"

// subErrDone stops the stream once --count events were printed.
var subErrDone = errors.New("sser: received the requested number of events")

// subJSONEvent is one --json output line.
type subJSONEvent struct {
	ID     string `json:"id"`
	Stream string `json:"stream,omitempty"`
	Event  string `json:"event"`
	Data   string `json:"data"`
}

// RunSub is `sser sub`: it prints the events of the given streams until ctx
// ends, --count events were printed, or the server says stop (204, or an
// error that retrying cannot fix, such as a bad stream name).
func RunSub(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sser sub", flag.ContinueOnError)
	rawURL := fs.String("url", "http://localhost:8000", "frontend address of sser, or the full events URL")
	var streams []string
	fs.Func("stream", "stream to subscribe to (repeat for several)", func(s string) error {
		streams = append(streams, s)
		return nil
	})
	lastID := fs.String("last-event-id", "", "resume after this event id (printed on exit)")
	asJSON := fs.Bool("json", false, "print one JSON object per event")
	readTimeout := fs.Duration("read-timeout", 45*time.Second, "reconnect when nothing, not even a heartbeat, arrives for this long (0: never)")
	count := fs.Int("count", 0, "exit after this many events (0: run until interrupted)")
	if err := parseFlags(fs, args, stdout, subUsage); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &usageError{msg: fmt.Sprintf("unexpected arguments %q", fs.Args())}
	}
	eventsURL, err := subURL(*rawURL, streams)
	if err != nil {
		return &usageError{msg: err.Error()}
	}

	out := &subPrinter{w: stdout, json: *asJSON}
	if out.json {
		out.enc = json.NewEncoder(stdout)
		out.enc.SetEscapeHTML(false)
	}
	var (
		mu sync.Mutex
		// connects counts the connections made.
		connects int
		printed  int
	)
	s, err := client.NewStream(ctx, eventsURL,
		client.WithLastEventID(*lastID),
		client.WithReadTimeout(*readTimeout),
		client.WithHandler(func(_ context.Context, ev client.Event) error {
			if err := out.print(ev); err != nil {
				return fmt.Errorf("writing output: %w", err)
			}
			printed++
			if *count > 0 && printed >= *count {
				return subErrDone
			}
			return nil
		}),
		client.WithConnectHandler(func(resp *http.Response) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case connects == 0:
				fmt.Fprintf(stderr, "sser sub: connected to %s\n", eventsURL)
			case resp.Header.Get("X-Sser-Resume") == "exact":
				fmt.Fprintln(stderr, "sser sub: reconnected; resumed after the last event, none missed")
			case resp.Header.Get("X-Sser-Resume") == "lost":
				fmt.Fprintln(stderr, "sser sub: reconnected; warning: the server no longer holds every event since the last id; some events were missed")
			default:
				fmt.Fprintln(stderr, "sser sub: reconnected")
			}
			connects++
		}),
		client.WithErrorHandler(func(_ context.Context, err error) bool {
			retry := client.Retryable(err)
			if retry {
				fmt.Fprintf(stderr, "sser sub: %v; reconnecting\n", err)
			}
			return retry
		}),
	)
	if err != nil {
		return err
	}
	<-s.Done()
	err = s.Err()
	if id := s.LastEventID(); id != "" && !errors.Is(err, subErrDone) {
		fmt.Fprintf(stderr, "sser sub: resume with --last-event-id '%s'\n", id)
	}
	switch {
	case errors.Is(err, subErrDone), ctx.Err() != nil && errors.Is(err, context.Cause(ctx)):
		return nil
	}
	return err
}

// subURL builds the events URL: --url's path defaults to /events, and every
// --stream is added as a stream query parameter.
func subURL(raw string, streams []string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("sser: --url %q is not an http(s) URL", raw)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = subEventsPath
	}
	q := u.Query()
	for _, s := range streams {
		q.Add("stream", s)
	}
	if len(q["stream"]) == 0 {
		return "", errors.New("sser: at least one --stream is required")
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

type subPrinter struct {
	w    io.Writer
	json bool
	enc  *json.Encoder
}

func (p *subPrinter) print(ev client.Event) error {
	if p.json {
		return p.enc.Encode(subJSONEvent{ID: ev.ID, Stream: ev.Stream, Event: ev.Type, Data: ev.Data})
	}
	var b strings.Builder
	if ev.Stream != "" {
		// A subscription of several streams or of patterns: name each
		// event's stream.
		b.WriteString(ev.Stream + ": ")
	}
	if ev.Type != client.DefaultEventType {
		b.WriteString("[" + ev.Type + "] ")
	}
	b.WriteString(ev.Data)
	b.WriteByte('\n')
	_, err := io.WriteString(p.w, b.String())
	return err
}
