package sser

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// The peer protocol: what replicas say to each other over the internal
// port, and the one client that says it.
const (
	// PeerHeader carries the sending replica's own IP on peer requests.
	PeerHeader = "X-Sser-Peer"
	// HeldFromHeader carries, on a peer delivery, the lowest seq of the
	// sending origin that its outbox still holds: the receiver knows that
	// anything it lacks below it must come from other replicas, or is lost.
	HeldFromHeader = "X-Sser-Held-From"
	// warmingHeader marks a history answer from a replica still warming up.
	warmingHeader = "X-Sser-Warming"

	// maxPeerAnswerBytes bounds an answer read from a peer.
	maxPeerAnswerBytes = 64 << 20
	// Page sizes of history reads.
	defaultPageEvents = 1000
	maxPageEvents     = 5000
)

var errPeerWarming = errors.New("sser: peer is warming up")

// rangeAnswer is the history endpoint's answer for one origin's seq range.
type rangeAnswer struct {
	Origin string `json:"origin"`
	// Last is the highest seq of origin the answering replica has applied.
	Last   uint64  `json:"last"`
	Events []Event `json:"events"`
	// More is true when the range holds more events than the page.
	More bool `json:"more,omitempty"`
	// Owner is true when the answering replica is the origin itself; then
	// HeldFrom is the lowest seq it still holds.
	Owner    bool   `json:"owner,omitempty"`
	HeldFrom uint64 `json:"heldFrom,omitempty"`
}

// peerClient is everything a replica asks of a peer. One implementation
// speaks HTTP; tests give a fake.
type peerClient interface {
	// openStream opens a delivery stream (peerstream.go): batches go out
	// as lines, answers come back per line. errStreamUnsupported: the peer
	// takes one batch per request only, through send.
	openStream(ctx context.Context, peer string, timeout time.Duration) (peerStream, error)
	// send delivers a batch of this replica's events in one request.
	send(ctx context.Context, peer string, events []Event, heldFrom uint64, timeout time.Duration) error
	// rangeRead fetches up to limit events of origin with after < seq <= upTo.
	rangeRead(ctx context.Context, peer, origin string, after, upTo uint64, limit int) (*rangeAnswer, error)
	// snapshotPage fetches up to limit history entries past apply index after.
	snapshotPage(ctx context.Context, peer string, after uint64, limit int) (*Snapshot, error)
	// origins fetches the peer's notes on every origin.
	origins(ctx context.Context, peer string) ([]OriginInfo, error)
}

// timeoutError marks a peer request that ran out of time, so the sender
// can tell a slow peer from an unreachable one.
type timeoutError struct{ error }

func (e timeoutError) Unwrap() error { return e.error }

// httpPeers is the peerClient over HTTP/1.1 keep-alive connections.
type httpPeers struct {
	client  *http.Client
	dialer  *net.Dialer
	self    string
	port    int
	token   string
	timeout time.Duration
}

func newHTTPPeers(self string, port int, token string, timeout time.Duration) *httpPeers {
	d := &net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}
	if ip := net.ParseIP(self); ip != nil && !ip.IsUnspecified() {
		// Dial from this replica's own address: peers know a replica by it.
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	tr := &http.Transport{
		Proxy:               nil, // peers are pod IPs: never through a proxy
		DialContext:         d.DialContext,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   false,
	}
	return &httpPeers{client: &http.Client{Transport: tr}, dialer: d, self: self, port: port, token: token, timeout: timeout}
}

func (p *httpPeers) url(ip, path string, q url.Values) string {
	u := "http://" + net.JoinHostPort(ip, strconv.Itoa(p.port)) + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

func (p *httpPeers) do(ctx context.Context, method, u string, body []byte, hdr http.Header, timeout time.Duration) (*http.Response, context.CancelFunc, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		cancel()
		return nil, nil, permanentError{err}
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if p.self != "" {
		req.Header.Set(PeerHeader, p.self)
	}
	if p.token != "" {
		req.Header.Set("Authorization", "Bearer "+p.token)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		cancel()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			return nil, nil, timeoutError{err}
		}
		return nil, nil, err
	}
	return resp, cancel, nil
}

func (p *httpPeers) send(ctx context.Context, peer string, events []Event, heldFrom uint64, timeout time.Duration) error {
	body, err := json.Marshal(events)
	if err != nil {
		return permanentError{err}
	}
	hdr := http.Header{"Content-Type": {"application/json"}}
	if heldFrom > 0 {
		hdr.Set(HeldFromHeader, strconv.FormatUint(heldFrom, 10))
	}
	resp, cancel, err := p.do(ctx, http.MethodPost, p.url(peer, PeerEndpointURLPath, nil), body, hdr, timeout)
	if err != nil {
		return err
	}
	defer cancel()
	msg, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	_ = resp.Body.Close()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return timeoutError{err}
		}
		return err
	}
	if resp.StatusCode/100 == 2 {
		return nil
	}
	return statusError(resp.StatusCode, string(bytes.TrimSpace(msg)))
}

// permanentError is an answer that retrying the same request cannot change.
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

func (p *httpPeers) getJSON(ctx context.Context, peer, path string, q url.Values, v any) error {
	resp, cancel, err := p.do(ctx, http.MethodGet, p.url(peer, path, q), nil, nil, p.timeout)
	if err != nil {
		return err
	}
	defer cancel()
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get(warmingHeader) != "" {
		return errPeerWarming
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return json.NewDecoder(io.LimitReader(resp.Body, maxPeerAnswerBytes)).Decode(v)
}

func (p *httpPeers) rangeRead(ctx context.Context, peer, origin string, after, upTo uint64, limit int) (*rangeAnswer, error) {
	q := url.Values{"origin": {origin}, "after": {strconv.FormatUint(after, 10)}, "upTo": {strconv.FormatUint(upTo, 10)}, "limit": {strconv.Itoa(limit)}}
	var ans rangeAnswer
	if err := p.getJSON(ctx, peer, HistoryURLPath, q, &ans); err != nil {
		return nil, err
	}
	for i := range ans.Events {
		ev := &ans.Events[i]
		if ev.Validate() != nil || ev.Origin != origin || ev.Seq <= after || ev.Seq > upTo {
			return nil, fmt.Errorf("peer %s answered an event outside the range asked", peer)
		}
	}
	if len(ans.Events) > limit {
		return nil, fmt.Errorf("peer %s answered more events than asked", peer)
	}
	return &ans, nil
}

func (p *httpPeers) snapshotPage(ctx context.Context, peer string, after uint64, limit int) (*Snapshot, error) {
	q := url.Values{"after": {strconv.FormatUint(after, 10)}, "limit": {strconv.Itoa(limit)}}
	var snap Snapshot
	if err := p.getJSON(ctx, peer, HistoryURLPath, q, &snap); err != nil {
		return nil, err
	}
	if len(snap.Entries) > limit {
		return nil, fmt.Errorf("peer %s answered more entries than asked", peer)
	}
	return &snap, nil
}

func (p *httpPeers) origins(ctx context.Context, peer string) ([]OriginInfo, error) {
	var ans originsAnswer
	if err := p.getJSON(ctx, peer, OriginsURLPath, nil, &ans); err != nil {
		return nil, err
	}
	return ans.Origins, nil
}

func (p *httpPeers) close() { p.client.CloseIdleConnections() }
