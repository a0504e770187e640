package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

const pubUsage = `Usage: sser pub [flags] [MESSAGE...]

Publish an event to every subscriber of a stream on every replica, through a
replica's internal API (POST <url>/api/json/v1/publish). The message is the
arguments joined by spaces; with none, every line of standard input is
published as its own event (empty lines are skipped).

Examples:
  sser pub --stream prices '{"eur":1.08}'
  tail -F app.log | sser pub --stream logs --event line
  kubectl exec deploy/app -c sser -- sser pub --stream demo hello

Flags:
`

// pubPath is the internal publish endpoint, appended to a --url with no path.
const pubPath = "/api/json/v1/publish"

// pubMaxLine bounds one stdin line (one event).
const pubMaxLine = 16 << 20

var pubErrNoStream = errors.New("sser: --stream is required")

// pubEvent is the publish body (the peer wire format's required fields and
// the event type).
type pubEvent struct {
	Stream string `json:"stream"`
	Msg    string `json:"msg"`
	Event  string `json:"event,omitempty"`
}

// RunPub is `sser pub`: it publishes the message in args, or one event per
// line of stdin, and returns the first failure with the server's reason.
func RunPub(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sser pub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), pubUsage)
		fs.PrintDefaults()
	}
	defURL := "http://localhost:7000"
	if v := os.Getenv("SSER_URL"); v != "" {
		defURL = v
	}
	rawURL := fs.String("url", defURL, "internal address of an sser replica, or the full publish URL [SSER_URL]")
	stream := fs.String("stream", "", "stream to publish to (required)")
	event := fs.String("event", "", `SSE event type (default "message")`)
	timeout := fs.Duration("timeout", 10*time.Second, "timeout of each publish request")
	token := fs.String("token", os.Getenv("SSER_INTERNAL_TOKEN"), "the replicas' internal token, when they require one [SSER_INTERNAL_TOKEN]")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if *stream == "" {
		fmt.Fprintln(stderr, pubErrNoStream)
		fs.Usage()
		return fmt.Errorf("%w: %w", errUsage, pubErrNoStream)
	}
	endpoint, err := pubEndpoint(*rawURL)
	if err != nil {
		fmt.Fprintln(stderr, err)
		fs.Usage()
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	p := &pubClient{url: endpoint, timeout: *timeout, token: *token, hc: &http.Client{}}
	defer p.hc.CloseIdleConnections()

	if fs.NArg() > 0 {
		return p.publish(ctx, pubEvent{Stream: *stream, Msg: strings.Join(fs.Args(), " "), Event: *event})
	}
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 0, 64<<10), pubMaxLine)
	n := 0
	for sc.Scan() {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if line == "" {
			continue
		}
		if err := p.publish(ctx, pubEvent{Stream: *stream, Msg: line, Event: *event}); err != nil {
			return fmt.Errorf("line %d: %w", n+1, err)
		}
		n++
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	return nil
}

// pubEndpoint accepts a base URL (the publish path is added) or a full one.
func pubEndpoint(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("sser: --url %q is not an http(s) URL", raw)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = pubPath
	}
	return u.String(), nil
}

type pubClient struct {
	url     string
	token   string
	timeout time.Duration
	hc      *http.Client
}

func (p *pubClient) publish(ctx context.Context, ev pubEvent) error {
	body, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if p.token != "" {
		req.Header.Set("Authorization", "Bearer "+p.token)
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return fmt.Errorf("publish to %s: %w", p.url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	reason := strings.TrimSpace(string(b))
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		reason = e.Error
	}
	if reason == "" {
		reason = "(no reason given)"
	}
	return fmt.Errorf("publish to %s: %s: %s", p.url, resp.Status, reason)
}
