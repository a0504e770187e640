package app

import (
	"bytes"
	_ "embed"
	"html/template"
	"net"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/sser-dev/sser/internal/csp"
	"github.com/sser-dev/sser/pkg/sser"
)

// demoHTML is the playground served at / with --demo-page: it subscribes
// to streams, shows every event, and publishes through DemoPublishPath.
//
//go:embed demo.html
var demoHTML string

var (
	demoTemplate = template.Must(template.New("demo").Parse(demoHTML))
	// The page's script and style have no template actions, so they are
	// the same on every page served (html/template drops their comments)
	// and can be allowed by hash.
	demoCSP = csp.Inline(renderedDemo())
)

func renderedDemo() []byte {
	var b bytes.Buffer
	if err := demoTemplate.Execute(&b, map[string]any{}); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// DemoPublishPath is where the demo page publishes, on the frontend: the
// same handler as the internal publish endpoint (credentials, validation,
// limits, answers), reached in process.
const DemoPublishPath = "/demo/publish"

// demo serves the demo page and its publish endpoint.
type demo struct {
	srv *sser.ServerImpl
	// tokenRequired says publishing needs a token on these replicas.
	tokenRequired bool
	// readTimeout bounds reading a publish's body: the frontend has no
	// read timeout of its own (its subscriptions are long-lived).
	readTimeout time.Duration
}

func newDemo(srv *sser.ServerImpl, o *Options) *demo {
	return &demo{srv: srv, tokenRequired: o.PublishToken != "" || o.InternalToken != "", readTimeout: o.InternalReadTimeout}
}

// page serves the playground at /.
func (d *demo) page() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			notFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusMethodNotAllowed)
			_, _ = w.Write([]byte(`{"error":"method not allowed"}` + "\n"))
			return
		}
		internal := internalURL(r, d.srv.InternalAddr())
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", demoCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		_ = demoTemplate.Execute(w, map[string]any{
			"Origin": d.srv.Origin(), "LostEvent": sser.LostEventType, "ExpiredEvent": sser.ExpiredEventType,
			"InternalURL": internal, "PublishURL": internal + sser.PublishURLPath, "TokenRequired": d.tokenRequired,
		})
	})
}

// publish hands a POST to the server's own publish handler, so a publish
// from the page is checked and answered exactly as one on the internal
// port (the publish token, when one is set, included). With no publish
// token, only a client on this machine may publish through the frontend
// (a browser on the same host, or kubectl port-forward, which connects
// from the pod's loopback): the frontend is the public port.
func (d *demo) publish() http.Handler {
	internal := d.srv.InternalHandler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !d.tokenRequired && !fromLoopback(r) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"error":"publishing through the demo page is open to clients on this machine only while no publish token is set (--publish-token-file); publish on the internal port"}` + "\n"))
			return
		}
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(d.readTimeout))
		in := r.Clone(r.Context())
		in.URL.Path, in.URL.RawPath, in.RequestURI = sser.PublishURLPath, "", sser.PublishURLPath
		internal.ServeHTTP(w, in)
	})
}

// hostRE is what a Host header may hold to be shown back on the page.
var hostRE = regexp.MustCompile(`^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]+)?$`)

// internalURL is the base URL of the internal listener bound to bound, as
// a reader of the page can reach it: the bound address, or for a wildcard
// address the host the page was loaded from with the internal port.
func internalURL(r *http.Request, bound string) string {
	host, port, err := net.SplitHostPort(bound)
	if err != nil {
		return "http://localhost:7000"
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "localhost"
		if hostRE.MatchString(r.Host) {
			host = r.Host
			if h, _, err := net.SplitHostPort(r.Host); err == nil {
				host = h
			}
			host = strings.Trim(host, "[]")
		}
	}
	return "http://" + net.JoinHostPort(host, port)
}

// fromLoopback reports whether the request's connection comes from a
// loopback address (never a forwarded-for header: anyone can write one).
func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
