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
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
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

// TestTemplateRejectsInconsistentValues covers checks the schema cannot
// express, done in the templates with fail.
func TestTemplateRejectsInconsistentValues(t *testing.T) {
	tests := []struct {
		name string
		set  string
		want string
	}{
		{"max below min", "autoscaling.enabled=true,autoscaling.minReplicas=5,autoscaling.maxReplicas=2", "maxReplicas"},
		{"no HPA metric", "autoscaling.enabled=true,autoscaling.targetCPUUtilizationPercentage=null", "targetCPUUtilizationPercentage"},
		{"publish token is the generated peer token", "sser.publishToken.existingSecret=sser-peer-token", "publishToken"},
		{"publish token is the existing peer token", "sser.peerToken.existingSecret=tokens,sser.publishToken.existingSecret=tokens", "publishToken"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Template(t, "sser", "sser-test", "--set", tc.set)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("--set %s: got %v, want an error naming %s", tc.set, err, tc.want)
			}
		})
	}
}
