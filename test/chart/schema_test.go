package chart

import (
	"strings"
	"testing"
)

// TestSchemaRejectsBadValues checks that values.schema.json turns typos and
// wrong types into an install error instead of a silently ignored value.
func TestSchemaRejectsBadValues(t *testing.T) {
	tests := []struct {
		name string
		set  string
		want string // part of helm's error
	}{
		{"unknown top-level key", "replicas=3", "replicas"},
		{"misspelt nested key", "image.pullPolcy=Always", "pullPolcy"},
		{"misspelt ServiceAccount key", "serviceAccount.craete=false", "craete"},
		{"wrong type", "replicaCount=three", "replicaCount"},
		{"negative replica count", "replicaCount=-1", "replicaCount"},
		{"unknown log level", "sser.logLevel=verbose", "logLevel"},
		{"duration without unit", "sser.heartbeat=15", "heartbeat"},
		{"negative drain window", "sser.drainWindowSeconds=-5", "drainWindowSeconds"},
		{"drain window as a duration string", "sser.drainWindowSeconds=10s", "drainWindowSeconds"},
		{"port out of range", "sser.internalPort=70000", "internalPort"},
		{"unknown peer finder", "sser.peerFinder=dns", "peerFinder"},
		{"bad pull policy", "image.pullPolicy=Sometimes", "pullPolicy"},
		{"bad service type", "service.type=ExternalName", "type"},
		{"unknown anti-affinity preset", "podAntiAffinity=medium", "podAntiAffinity"},
		{"NetworkPolicy typo", "networkPolicy.enabeld=true", "enabeld"},
		{"HPA typo", "autoscaling.maxReplica=5", "maxReplica"},
		{"peer token typo", "sser.peerToken.craete=false", "craete"},
		{"negative per-IP cap", "sser.maxConnectionsPerIP=-1", "maxConnectionsPerIP"},
		{"connection cap below -1", "sser.maxConnections=-2", "maxConnections"},
		{"rate that is not a number", "sser.publishRate=fast", "publishRate"},
		{"negative history bytes", "sser.maxHistoryBytes=-1", "maxHistoryBytes"},
		{"trusted proxy by name", "sser.trustedProxies={ingress.local}", "trustedProxies"},
		{"publish token typo", "sser.publishToken.existingSecert=x", "existingSecert"},
		{"bad Secret key", "sser.peerToken.key=a/b", "key"},
		{"negative outbox", "sser.outboxSize=-1", "outboxSize"},
		{"peer cut-off without unit", "sser.peerCutoff=10", "peerCutoff"},
		{"liveness stall not a duration", "sser.livenessStall=soon", "livenessStall"},
		{"idempotency window not a duration", "sser.idempotencyWindow=forever", "idempotencyWindow"},
		{"unknown log format", "sser.logFormat=xml", "logFormat"},
		{"write timeout without unit", "sser.writeTimeout=10", "writeTimeout"},
		{"negative body size", "sser.maxBodyBytes=-1", "maxBodyBytes"},
		{"body size as a string", "sser.maxBodyBytes=1MiB", "maxBodyBytes"},
		{"allowed streams as one string", "sser.allowedStreams=public/*", "allowedStreams"},
		{"allowed stream with a space", "sser.allowedStreams={a b}", "allowedStreams"},
		// Half-configured subscriber authentication: what a JWT must carry,
		// with nothing to verify it, would leave the frontend open.
		{"issuer without a JWT key", "auth.jwt.issuer=https://id.example.com", "issuer"},
		{"audience without a JWT key", "auth.jwt.audience=sse", "audience"},
		{"streams claim without a JWT key", "auth.jwt.streamsClaim=channels", "streamsClaim"},
		{"JWKS refresh without a JWKS", "auth.jwt.jwksRefresh=1m", "jwksRefresh"},
		{"JWKS refresh with only an HS256 key", "auth.jwt.hs256Secret.existingSecret=k,auth.jwt.jwksRefresh=1m", "jwksRefresh"},
		{"ticket TTL without a ticket key", "auth.tickets.maxTTL=10m", "maxTTL"},
		{"JWT key Secret empty", "auth.jwt.hs256Secret.existingSecret=", "existingSecret"},
		{"JWT key without its Secret", "auth.jwt.publicKey.key=pub.pem", "existingSecret"},
		{"JWKS key without its Secret", "auth.jwt.jwks.key=jwks.json", "existingSecret"},
		{"ticket key Secret empty", "auth.tickets.key.existingSecret=", "existingSecret"},
		{"ticket key without its Secret", "auth.tickets.key.key=k", "existingSecret"},
		{"JWKS from a Secret and a URL", "auth.jwt.jwks.existingSecret=jwks,auth.jwt.jwksURL=https://id.example.com/jwks", "jwksURL"},
		{"JWKS URL not http", "auth.jwt.jwksURL=file:///etc/jwks.json", "jwksURL"},
		{"JWT key Secret not a name", "auth.jwt.hs256Secret.existingSecret=My_Secret", "existingSecret"},
		{"JWT key typo", "auth.jwt.hs256Secret.existingSecert=k", "existingSecert"},
		{"auth typo", "auth.jwt.issuers=x", "issuers"},
		{"JWKS refresh not a duration", "auth.jwt.jwksURL=https://id.example.com/jwks,auth.jwt.jwksRefresh=hourly", "jwksRefresh"},
		{"cookie name with a space", "auth.cookie=my cookie", "cookie"},
		{"grace period as a duration", "terminationGracePeriodSeconds=60s", "terminationGracePeriodSeconds"},
		{"Ingress typo", "ingress.enabeld=true", "enabeld"},
		{"helm test typo", "tests.enable=false", "enable"},
		{"helm test stream with a space", "tests.stream=a b", "stream"},
		{"helm test timeout too short", "tests.timeoutSeconds=1", "timeoutSeconds"},
		{"helm test image without tag or digest", "tests.image.tag=", "tag"},
		{"ServiceMonitor typo", "metrics.serviceMonitor.enable=true", "enable"},
		{"scrape interval without unit", "metrics.serviceMonitor.interval=30", "interval"},
		{"PodMonitor timeout not a duration", "metrics.podMonitor.scrapeTimeout=soon", "scrapeTimeout"},
		{"rule typo", "metrics.prometheusRule.disable=SserPeerDown", "disable"},
		{"runbook URL not http", "metrics.prometheusRule.runbookURL=file:///runbook.md", "runbookURL"},
		{"runbook URL with an anchor", "metrics.prometheusRule.runbookURL=https://example.com/r#x", "runbookURL"},
		{"negative lag threshold", "metrics.prometheusRule.peerLagThreshold=-1", "peerLagThreshold"},
		{"overflow rate not a number", "metrics.prometheusRule.overflowPerSecond=many", "overflowPerSecond"},
		{"dashboard label not a string", "metrics.dashboard.labels.grafana_dashboard=1", "grafana_dashboard"},
		{"Ingress host as a URL", "ingress.hosts={https://sse.example.com}", "hosts"},
		{"Ingress path not absolute", "ingress.paths[0].path=events", "path"},
		{"Ingress path type unknown", "ingress.paths[0].pathType=Regex", "pathType"},
		{"Ingress timeout as a duration", "ingress.timeoutSeconds=1h", "timeoutSeconds"},
		{"HTTPRoute typo", "httpRoute.parentRef=gw", "parentRef"},
		{"HTTPRoute parent without a name", "httpRoute.parentRefs[0].namespace=gw", "name"},
		{"HTTPRoute timeout not a Gateway API duration", "httpRoute.timeouts.request=1.5h", "request"},
		{"HTTPRoute timeout typo", "httpRoute.timeouts.idle=1h", "idle"},
		{"negative grace period", "terminationGracePeriodSeconds=-1", "terminationGracePeriodSeconds"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each case is its own helm process
			_, err := Template(t, "sser", "sser-test", "--set", tc.set)
			if err == nil {
				t.Fatalf("--set %s rendered; want a schema error", tc.set)
			}
			msg := err.Error()
			if !strings.Contains(msg, "schema") || !strings.Contains(msg, tc.want) {
				t.Fatalf("--set %s failed, but not with a schema error naming %q: %v", tc.set, tc.want, err)
			}
		})
	}
}

// TestSchemaRejectsStreamTemplatesWithoutJWT: templates grant streams to
// JWTs, so they need a JWT key source (tickets carry their own streams).
func TestSchemaRejectsStreamTemplatesWithoutJWT(t *testing.T) {
	for _, set := range []string{"", "auth.tickets.key.existingSecret=tickets"} {
		args := []string{"--set-json", `auth.jwt.streamTemplates=["users/{sub}/*"]`}
		if set != "" {
			args = append(args, "--set", set)
		}
		_, err := Template(t, "sser", "sser-test", args...)
		if err == nil || !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), "streamTemplates") {
			t.Errorf("stream templates with %q: got %v, want a schema error naming streamTemplates", set, err)
		}
	}
	if _, err := Template(t, "sser", "sser-test", "--set-json", `auth.jwt.streamTemplates=["users/{sub}/*"]`, "--set", "auth.jwt.jwksURL=https://id.example.com/jwks"); err != nil {
		t.Errorf("stream templates with a JWKS URL: %v", err)
	}
}

// TestTemplateRejectsInconsistentValues covers checks the schema cannot
// express, done in the templates with fail.
func TestTemplateRejectsInconsistentValues(t *testing.T) {
	set := func(s string) []string { return []string{"--set", s} }
	setJSON := func(s string) []string { return []string{"--set-json", s} }
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"max below min", set("autoscaling.enabled=true,autoscaling.minReplicas=5,autoscaling.maxReplicas=2"), "maxReplicas"},
		{"no HPA metric", set("autoscaling.enabled=true,autoscaling.targetCPUUtilizationPercentage=null"), "targetCPUUtilizationPercentage"},
		{"publish token is the generated peer token", set("sser.publishToken.existingSecret=sser-peer-token"), "publishToken"},
		{"publish token is the existing peer token", set("sser.peerToken.existingSecret=tokens,sser.publishToken.existingSecret=tokens"), "publishToken"},
		{"grace period below the drain", set("terminationGracePeriodSeconds=24"), "terminationGracePeriodSeconds 24 is shorter"},
		{"grace period below a drain from extraArgs", append(set("terminationGracePeriodSeconds=60"), setJSON(`sser.extraArgs=["--drain-window=2m"]`)...), "drain window 120s"},
		{"drain window in extraArgs not a duration", setJSON(`sser.extraArgs=["--drain-window=soon"]`), "--drain-window"},
		{"shutdown timeout in extraArgs not a duration", setJSON(`sser.extraArgs=["--shutdown-timeout","5"]`), "--shutdown-timeout"},
		{"static peer finder without peers", set("sser.peerFinder=static"), "sser.peerFinder=static needs sser.peers"},
		{"peers the finder does not read", set("sser.peers={10.0.0.1,10.0.0.2}"), "sser.peers is read only with sser.peerFinder=static"},
		{"local peer finder with three replicas", set("sser.peerFinder=local"), "sser.peerFinder=local runs every replica alone"},
		{"local peer finder that may autoscale", set("sser.peerFinder=local,replicaCount=1,autoscaling.enabled=true,autoscaling.minReplicas=1,autoscaling.maxReplicas=4"), "up to 4 replicas"},
		{"kubernetes peer finder without the token", set("serviceAccount.automount=false"), "serviceAccount.automount=false"},
		{"auto peer finder without the token", set("sser.peerFinder=auto,serviceAccount.automount=false"), "serviceAccount.automount=false"},
		{"one port for both listeners", set("sser.internalPort=8000"), "both 8000"},
		{"loopback bind address", set("sser.bindAddress=127.0.0.1"), "loopback"},
		{"IPv6 loopback bind address", set("sser.bindAddress=[::1]"), "loopback"},
		{"node port on a ClusterIP Service", set("service.nodePort=30080"), "service.nodePort"},
		{"CPU target without a CPU request", set("autoscaling.enabled=true,resources.requests.cpu=null"), "resources.requests.cpu"},
		{"memory target without a memory request", set("autoscaling.enabled=true,autoscaling.targetMemoryUtilizationPercentage=80,resources.requests.memory=null"), "resources.requests.memory"},
		{"PDB that keeps every pod", set("podDisruptionBudget.minAvailable=3"), "podDisruptionBudget.minAvailable=3"},
		{"PDB that keeps every pod, in percent", set("podDisruptionBudget.minAvailable=100%"), "podDisruptionBudget.minAvailable=100%"},
		{"PDB that evicts none", set("podDisruptionBudget.maxUnavailable=0"), "podDisruptionBudget.maxUnavailable=0"},
		{"HTTPRoute without a Gateway", set("httpRoute.enabled=true"), "httpRoute.parentRefs"},
		{"ServiceMonitor without the internal Service", set("metrics.serviceMonitor.enabled=true,internalService.enabled=false"), "metrics.podMonitor"},
		{"ServiceMonitor and PodMonitor", set("metrics.serviceMonitor.enabled=true,metrics.podMonitor.enabled=true"), "enable one of them"},
		{"an alert to leave out that does not exist", set("metrics.prometheusRule.enabled=true,metrics.prometheusRule.disabled={SserPeerDwn}"), "SserPeerDwn"},
		{"PDB that keeps the autoscaler's fewest", set("autoscaling.enabled=true,autoscaling.minReplicas=2,podDisruptionBudget.minAvailable=2"), "none of 2 pods"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each case is its own helm process
			_, err := Template(t, "sser", "sser-test", tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%q: got %v, want an error naming %s", tc.args, err, tc.want)
			}
		})
	}
}

// TestTemplateAcceptsNeighbours renders settings next to the refused ones
// above, so each check refuses only what cannot work.
func TestTemplateAcceptsNeighbours(t *testing.T) {
	for _, set := range []string{
		"sser.peerFinder=static,sser.peers={10.0.0.1,10.0.0.2}",
		"sser.peerFinder=local,replicaCount=1",
		"sser.peerFinder=local,serviceAccount.automount=false,replicaCount=1",
		"sser.peerFinder=static,sser.peers={10.0.0.1},serviceAccount.automount=false",
		"sser.bindAddress=$(POD_IP)",
		"sser.bindAddress=0.0.0.0",
		"service.type=NodePort,service.nodePort=30080",
		"autoscaling.enabled=true,autoscaling.targetCPUUtilizationPercentage=null,autoscaling.targetMemoryUtilizationPercentage=80,resources.requests.cpu=null",
		"podDisruptionBudget.minAvailable=2",
		"podDisruptionBudget.minAvailable=3,replicaCount=4",
		"podDisruptionBudget.minAvailable=90%",
		"podDisruptionBudget.maxUnavailable=0,podDisruptionBudget.enabled=false",
		"podDisruptionBudget.maxUnavailable=0,replicaCount=1",
	} {
		if _, err := Template(t, "sser", "sser-test", "--set", set); err != nil {
			t.Errorf("--set %s: %v", set, err)
		}
	}
}
