package lossless

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sser-dev/sser/internal/ssetest"
	"github.com/sser-dev/sser/pkg/auth"
)

// Secrets of the authentication tests: every log line of their runs is
// searched for them.
const (
	authTicketKey    = "e2e-ticket-key-0123456789abcdef012345"
	authJWTSecret    = "e2e-jwt-secret-0123456789abcdef012345"
	authPublishToken = "e2e-publish-token-0123456789"
)

// newAuthCluster configures n replicas that authenticate subscribers with
// tickets and HS256 JWTs (secrets from the environment, as from a Secret).
func newAuthCluster(t *testing.T, n int, args ...string) *cluster {
	t.Helper()
	c := newCluster(t, n, append([]string{"--log-level=debug", "--auth-stream-template=users/{sub}/*"}, args...)...)
	for i := range c.cfgs {
		c.cfgs[i].Env = append(c.cfgs[i].Env, "SSER_TICKET_KEY="+authTicketKey, "SSER_AUTH_JWT_HS256_SECRET="+authJWTSecret)
	}
	return c
}

// askTicket asks replica i's internal API for a ticket.
func askTicket(t *testing.T, c *cluster, i int, token, subject string, ttl string, streams ...string) (string, time.Time) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"subject": subject, "streams": streams, "ttl": ttl})
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, c.internalURL(i)+"/api/json/v1/tickets", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ans struct {
		Ticket  string
		Expires time.Time
		Error   string
	}
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil || resp.StatusCode != 200 {
		t.Fatalf("tickets on replica %d: %s %v %s", i, resp.Status, err, ans.Error)
	}
	return ans.Ticket, ans.Expires
}

func statusOf(t *testing.T, u string, header ...string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// A ticket minted on one replica is accepted by every other (no shared
// state but the key), for its streams only; a JWT likewise, with its
// template; a publisher JWT publishes to its own streams only. Then every
// log line of every replica is searched for the credentials used.
func TestAuthTicketOnEveryReplica(t *testing.T) {
	skipShort(t)
	c := newAuthCluster(t, 3)
	for i := range c.cfgs {
		c.cfgs[i].Env = append(c.cfgs[i].Env, "SSER_PUBLISH_TOKEN="+authPublishToken)
	}
	c.startAll()
	ticket, exp := askTicket(t, c, 0, authPublishToken, "alice", "5m", "users/alice/*", "news")
	if d := time.Until(exp); d < 4*time.Minute || d > 5*time.Minute {
		t.Errorf("ticket expires in %s, want 5m", d)
	}
	jwt, err := auth.MintHS256([]byte(authJWTSecret), "", auth.DevClaims("bob", nil, nil, 5*time.Minute, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	publisher, err := auth.MintHS256([]byte(authJWTSecret), "", auth.DevClaims("app", nil, []string{"users/*/inbox"}, 5*time.Minute, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	q := url.QueryEscape(ticket)
	var subs []*ssetest.Sub
	for i := range 3 {
		subs = append(subs, ssetest.Dial(t, c.frontendURL(i)+"/events?stream=users/alice/inbox&ticket="+q, ""))
		if got := statusOf(t, c.frontendURL(i)+"/events?stream=users/bob/inbox&ticket="+q); got != 403 {
			t.Errorf("replica %d: ticket for alice on bob's stream: %d, want 403", i, got)
		}
		if got := statusOf(t, c.frontendURL(i)+"/events?stream=users/alice/inbox"); got != 401 {
			t.Errorf("replica %d: no credential: %d, want 401", i, got)
		}
		if got := statusOf(t, c.frontendURL(i)+"/events?stream=users/alice/inbox&ticket="+q[:len(q)-4]+"AAAA"); got != 401 {
			t.Errorf("replica %d: forged ticket: %d, want 401", i, got)
		}
	}
	bob := ssetest.Dial(t, c.frontendURL(2)+"/events?stream=users/bob/inbox&access_token="+jwt, "")
	if got := statusOf(t, c.frontendURL(1)+"/events?stream=users/alice/inbox", "Authorization", "Bearer "+jwt); got != 403 {
		t.Errorf("bob's JWT on alice's stream: %d, want 403", got)
	}

	publish := func(token, body string) int {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, c.internalURL(1)+"/api/json/v1/publish", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	if got := publish(publisher, `{"stream":"news","msg":"not yours"}`); got != 403 {
		t.Errorf("publisher JWT outside its grant: %d, want 403", got)
	}
	if got := publish(publisher, `[{"stream":"users/alice/inbox","msg":"for alice"},{"stream":"users/bob/inbox","msg":"for bob"}]`); got != 200 {
		t.Fatalf("publisher JWT inside its grant: %d", got)
	}
	for i, s := range subs {
		if ev := s.Next(t, deadline); ev.Data != "for alice" {
			t.Errorf("alice on replica %d got %+v", i, ev)
		}
	}
	if ev := bob.Next(t, deadline); ev.Data != "for bob" {
		t.Errorf("bob got %+v", ev)
	}

	secrets := []string{authTicketKey, authJWTSecret, authPublishToken, ticket, q, jwt, publisher, ticket[len(ticket)-20:], jwt[len(jwt)-20:]}
	sawRefusal := false
	for i := range 3 {
		logs := c.rep(i).Logs()
		for _, line := range strings.Split(logs, "\n") {
			for _, s := range secrets {
				if strings.Contains(line, s) {
					t.Errorf("replica %d logged a credential: %s", i, line)
				}
			}
			sawRefusal = sawRefusal || strings.Contains(line, "ticket=REDACTED")
		}
	}
	if !sawRefusal {
		t.Error("no refusal was logged with its redacted URL: the search above proves nothing")
	}
}

// pageWith is the lossless test page, subscribing with query added to the
// EventSource URL, after running setup.
func pageWith(query, setup string) string {
	p := strings.Replace(browserPage, "'/events?stream="+stream+"'", "'/events?stream="+stream+query+"'", 1)
	return strings.Replace(p, "let k = 0;", setup+"\nlet k = 0;", 1)
}

// An EventSource with a ticket in its URL survives a drain of its replica:
// it reconnects with the same URL to the other replica and resumes exactly.
// Another page carries its ticket in a cookie.
func TestBrowserTicketSurvivesDrain(t *testing.T) {
	skipShort(t)
	bin := findChromium(t)
	for _, mode := range []string{"url", "cookie"} {
		t.Run(mode, func(t *testing.T) {
			c := newAuthCluster(t, 2, "--retry=300ms")
			c.startAll()
			ticket, _ := askTicket(t, c, 0, "", "page", "10m", stream)
			page := pageWith("&ticket="+url.QueryEscape(ticket), "")
			if mode == "cookie" {
				page = pageWith("", "document.cookie = 'sser_token="+ticket+"; path=/; SameSite=Strict';")
			}
			b, blog := browserRun(t, bin, c, page)
			drainUnderBrowser(t, c, b, blog, 40)
			for i := range 2 {
				if strings.Contains(c.rep(i).Logs(), ticket) {
					t.Errorf("replica %d logged the ticket", i)
				}
			}
		})
	}
}

// A page whose ticket has expired gets 401: its EventSource closes for good
// and shows no event.
func TestBrowserExpiredTicketGetsNothing(t *testing.T) {
	skipShort(t)
	bin := findChromium(t)
	c := newAuthCluster(t, 2)
	c.startAll()
	ticket, exp := askTicket(t, c, 0, "", "page", "1s", stream)
	waitFor(t, deadline, "the ticket to expire", func() bool { return time.Now().After(exp) })
	b, blog := browserRun(t, bin, c, pageWith("&ticket="+url.QueryEscape(ticket), ""))
	p := newPublisher(c, b, "p", 0)
	publishRounds(t, 5, p)
	waitFor(t, deadline, "the EventSource to close", func() bool {
		for _, r := range blog.ordered() {
			if r.Kind == "error" && r.Data == "2" { // EventSource.CLOSED
				return true
			}
		}
		return false
	}, func() string { return fmt.Sprintf("reports %+v", blog.ordered()) })
	publishRounds(t, 5, p)
	msgs, opens, _, _ := blog.kinds()
	if len(msgs) != 0 || opens != 0 {
		t.Fatalf("a page with an expired ticket opened %d times and got %d events", opens, len(msgs))
	}
	if n := c.metric(0, "sser_auth_failures_total", `endpoint="events"`) + c.metric(1, "sser_auth_failures_total", `endpoint="events"`); n < 1 {
		t.Errorf("sser_auth_failures_total{endpoint=events} = %v, want the refusal counted", n)
	}
}
