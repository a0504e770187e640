package app

import (
	"html/template"
	"net/http"

	"github.com/sser-dev/sser/pkg/sser"
)

var demoTemplate = template.Must(template.New("demo").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sser demo</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#222}
code,pre{background:#f4f4f4;padding:.1rem .3rem;border-radius:3px}
#log{border:1px solid #ccc;height:22rem;overflow:auto;padding:.5rem;font-family:monospace;font-size:.9rem}
.meta{color:#777}.lost{color:#b00}
</style></head><body>
<h1>sser</h1>
<p>Replica origin <code>{{.Origin}}</code>, peers <code>{{.Peers}}</code>.</p>
<form id="f">Stream <input id="stream" value="demo" pattern="[A-Za-z0-9._~:@/-]{1,128}" required>
<button>Subscribe</button> <span id="state" class="meta">not connected</span><br>
<label>Ticket or token <input id="cred" size="40" autocomplete="off" placeholder="only when the replicas authenticate subscribers"></label></form>
<p>Publish from a terminal: <code>sser pub --stream demo 'hello'</code> or
<code>curl -H 'Content-Type: application/json' -d '{"stream":"demo","msg":"hello"}' localhost:7000/api/json/v1/publish</code></p>
<div id="log" aria-live="polite"></div>
<script>
let es;
const log = document.getElementById('log'), state = document.getElementById('state');
function line(text, cls) {
  const d = document.createElement('div'); d.textContent = text; if (cls) d.className = cls;
  log.appendChild(d); log.scrollTop = log.scrollHeight;
}
const params = new URLSearchParams(location.search), credInput = document.getElementById('cred');
credInput.value = params.get('ticket') || params.get('access_token') || '';
let lastId = '';
// A ticket ("t1.…") goes in ?ticket=, a JWT in ?access_token=; EventSource
// reconnects with the same URL until the credential expires.
function credQuery() {
  const c = credInput.value.trim();
  if (!c) return '';
  return (c.startsWith('t1.') ? '&ticket=' : '&access_token=') + encodeURIComponent(c);
}
function subscribe(stream) {
  if (es) es.close();
  es = new EventSource('events?stream=' + encodeURIComponent(stream) + credQuery() + (lastId ? '&lastEventID=' + encodeURIComponent(lastId) : ''));
  es.onopen = () => { state.textContent = 'connected to ' + stream; };
  es.onerror = () => {
    // After a 401 or 403 the browser gives up (readyState CLOSED).
    state.textContent = es.readyState === EventSource.CLOSED ? 'refused: paste a valid ticket or token and subscribe again' : 'reconnecting…';
  };
  es.addEventListener('{{.ExpiredEvent}}', () => { es.close(); state.textContent = 'credential expired: paste a new ticket or token and subscribe again'; });
  es.onmessage = (e) => { lastId = e.lastEventId; line(new Date().toLocaleTimeString() + '  ' + e.data); };
  es.addEventListener('{{.LostEvent}}', (e) => line('some events were lost: ' + e.data, 'lost'));
}
document.getElementById('f').onsubmit = (e) => { e.preventDefault(); subscribe(document.getElementById('stream').value); };
subscribe(new URLSearchParams(location.search).get('stream') || 'demo');
</script></body></html>
`))

// demoPage serves a page that subscribes to a stream with EventSource.
func demoPage(srv *sser.ServerImpl) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusMethodNotAllowed)
			_, _ = w.Write([]byte(`{"error":"method not allowed"}` + "\n"))
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
		_ = demoTemplate.Execute(w, map[string]any{"Origin": srv.Origin(), "Peers": srv.Peers(), "LostEvent": sser.LostEventType, "ExpiredEvent": sser.ExpiredEventType})
	})
}
