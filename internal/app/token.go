package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/sser-dev/sser/pkg/auth"
	"github.com/sser-dev/sser/pkg/sser"
)

const tokenUsage = `Usage: sser token [flags]

Mint a JWT signed with HS256, for development: it reads the streams given
with --stream (and publishes to those given with --publish) until --ttl.
The secret is the one replicas verify with: --secret-file, else
$SSER_AUTH_JWT_HS256_SECRET_FILE, else $SSER_AUTH_JWT_HS256_SECRET.

Examples:
  sser token --secret-file jwt.key --sub alice --stream 'users/alice/*'
  curl -N -H "Authorization: Bearer $(sser token --sub a --stream demo)" 'localhost:8000/events?stream=demo'

Flags:
`

const ticketUsage = `Usage: sser ticket [flags]

Get a ticket for --stream (repeatable) and --sub, valid for --ttl: from a
replica's internal API (POST <url>/api/json/v1/tickets, with the publish
token from $SSER_PUBLISH_TOKEN, else $SSER_INTERNAL_TOKEN), or, with
--key-file (or $SSER_TICKET_KEY_FILE, $SSER_TICKET_KEY), minted here with the
replicas' ticket key. The ticket is printed; use it as ?ticket= in an
EventSource URL.

Examples:
  sser ticket --stream demo
  open "http://localhost:8000/?stream=demo&ticket=$(sser ticket --stream demo --ttl 10m)"

Flags:
`

// repeated is a flag that may be given several times.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

// parseOnly parses flags of a command that takes no arguments.
func parseOnly(fs *flag.FlagSet, args []string, stdout io.Writer, usage string) error {
	if err := parseFlags(fs, args, stdout, usage); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &usageError{msg: fmt.Sprintf("unexpected arguments %q", fs.Args())}
	}
	return nil
}

// RunToken is `sser token`.
func RunToken(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sser token", flag.ContinueOnError)
	secretFile := fs.String("secret-file", os.Getenv("SSER_AUTH_JWT_HS256_SECRET_FILE"), "file holding the HS256 secret")
	sub := fs.String("sub", "dev", "subject (sub claim)")
	var streams, publish repeated
	fs.Var(&streams, "stream", "stream name or pattern the token may read (repeatable)")
	fs.Var(&publish, "publish", "stream name or pattern the token may publish to (repeatable)")
	ttl := fs.Duration("ttl", time.Hour, "lifetime (exp claim)")
	iss := fs.String("iss", "", "issuer (iss claim)")
	aud := fs.String("aud", "", "audience (aud claim)")
	kid := fs.String("kid", "", "key id (kid header)")
	if err := parseOnly(fs, args, stdout, tokenUsage); err != nil {
		return err
	}
	if *ttl <= 0 {
		return errors.New("--ttl must be positive")
	}
	if len(streams) == 0 && len(publish) == 0 {
		fmt.Fprintln(stderr, "sser token: the token grants nothing without --stream or --publish (a --auth-stream-template may grant it streams)")
	}
	secret, err := readSecret(*secretFile, os.Getenv(envHS256Secret))
	if err != nil {
		return err
	}
	if len(secret) == 0 {
		return errors.New("no secret: --secret-file, SSER_AUTH_JWT_HS256_SECRET_FILE or " + envHS256Secret)
	}
	if _, err := auth.HS256Key(secret); err != nil {
		return err
	}
	claims := auth.DevClaims(*sub, streams, publish, *ttl, time.Now())
	if *iss != "" {
		claims["iss"] = *iss
	}
	if *aud != "" {
		claims["aud"] = *aud
	}
	tok, err := auth.MintHS256(secret, *kid, claims)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

// RunTicket is `sser ticket`.
func RunTicket(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sser ticket", flag.ContinueOnError)
	defURL := "http://localhost:7000"
	if v := os.Getenv("SSER_URL"); v != "" {
		defURL = v
	}
	rawURL := fs.String("url", defURL, "internal address of an sser replica [SSER_URL]")
	keyFile := fs.String("key-file", os.Getenv("SSER_TICKET_KEY_FILE"), "mint here with the ticket key in this file instead of asking a replica")
	sub := fs.String("sub", "", "subject")
	var streams repeated
	fs.Var(&streams, "stream", "stream name or pattern the ticket grants (repeatable, at least one)")
	ttl := fs.Duration("ttl", auth.DefaultTicketTTL, "lifetime")
	if err := parseOnly(fs, args, stdout, ticketUsage); err != nil {
		return err
	}
	if len(streams) == 0 {
		return errors.New("--stream is required")
	}
	if key := os.Getenv(envTicketKey); *keyFile != "" || key != "" {
		k, err := readSecret(*keyFile, key)
		if err != nil {
			return err
		}
		tk, err := auth.NewTicketer(max(*ttl, auth.DefaultTicketMaxTTL), k)
		if err != nil {
			return err
		}
		t, exp, err := tk.Mint(*sub, streams, *ttl)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, t)
		fmt.Fprintln(stderr, "expires", exp.UTC().Format(time.RFC3339))
		return nil
	}
	body, _ := json.Marshal(map[string]any{"subject": *sub, "streams": []string(streams), "ttl": ttl.String()})
	u := strings.TrimRight(*rawURL, "/") + sser.TicketsURLPath
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if tok := firstEnv("SSER_PUBLISH_TOKEN", "SSER_INTERNAL_TOKEN"); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	var ans struct {
		Ticket  string `json:"ticket"`
		Expires string `json:"expires"`
		Error   string `json:"error"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&ans); err != nil {
		return fmt.Errorf("%s: %s", u, resp.Status)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", u, resp.Status, ans.Error)
	}
	fmt.Fprintln(stdout, ans.Ticket)
	fmt.Fprintln(stderr, "expires", ans.Expires)
	return nil
}

func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}
