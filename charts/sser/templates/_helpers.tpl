{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "sser.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name when it already contains the chart
name, else <release>-<chart>. Truncated to 63 characters (DNS label limit).
*/}}
{{- define "sser.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "sser.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object: the pod labels plus the chart's name and version.
*/}}
{{- define "sser.labels" -}}
helm.sh/chart: {{ include "sser.chart" . }}
{{ include "sser.podLabels" . }}
{{- end }}

{{/*
Labels of the pod template: every label of sser.labels except the chart
version, so an upgrade that only bumps the chart changes no pod template and
restarts no pod.
*/}}
{{- define "sser.podLabels" -}}
{{ include "sser.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/component: server
app.kubernetes.io/part-of: sser
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels: the Deployment's selector, the Services' selectors, the PDB,
the NetworkPolicy, and the peer finder's --selector all use exactly these.
*/}}
{{- define "sser.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sser.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The selector labels as a Kubernetes label selector string (k=v,k=v, keys
sorted), for the peer finder's --selector flag.
*/}}
{{- define "sser.selectorString" -}}
{{- $labels := include "sser.selectorLabels" . | fromYaml }}
{{- $pairs := list }}
{{- range $k := keys $labels | sortAlpha }}
{{- $pairs = append $pairs (printf "%s=%s" $k (get $labels $k)) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/*
Name of the ServiceAccount the pods run as.
*/}}
{{- define "sser.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sser.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Container image reference: repository@digest when a digest is set, else
repository:tag with the tag defaulting to the chart's appVersion.
*/}}
{{- define "sser.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
Listen address for a port: "<bindAddress>:<port>" (":<port>" binds all interfaces).
*/}}
{{- define "sser.listenAddr" -}}
{{- printf "%s:%d" (.root.Values.sser.bindAddress | default "") (int .port) }}
{{- end }}

{{/*
The value sser.extraArgs gives the flag named .flag ("--flag=v", "-flag=v",
or "--flag" followed by "v"; the last one wins, as in Go's flag parsing), or
empty. Called with (dict "args" LIST "flag" NAME).
*/}}
{{- define "sser.extraArg" -}}
{{- $val := "" }}
{{- $next := false }}
{{- range .args }}
{{- $arg := toString . }}
{{- if $next }}
{{- $val = $arg }}
{{- $next = false }}
{{- else if has $arg (list (printf "--%s" $.flag) (printf "-%s" $.flag)) }}
{{- $next = true }}
{{- else if hasPrefix (printf "--%s=" $.flag) $arg }}
{{- $val = trimPrefix (printf "--%s=" $.flag) $arg }}
{{- else if hasPrefix (printf "-%s=" $.flag) $arg }}
{{- $val = trimPrefix (printf "-%s=" $.flag) $arg }}
{{- end }}
{{- end }}
{{- $val }}
{{- end }}

{{/*
Whole seconds (rounded up) of a Go duration such as "90s", "1m30s" or
"2500ms"; fails on anything else. Called with (dict "value" DURATION "what"
"where it comes from").
*/}}
{{- define "sser.durationSeconds" -}}
{{- $number := "[0-9]+(\\.[0-9]*)?" }}
{{- $units := "(h|ms|us|µs|ns|m|s)" }}
{{- if not (regexMatch (printf "^(0|(%s%s)+)$" $number $units) .value) }}
{{- fail (printf "%s: %q is not a Go duration (such as 30s, 1m30s or 2500ms)" .what .value) }}
{{- end }}
{{- $d := .value }}
{{- $scale := dict "h" 3600.0 "m" 60.0 "s" 1.0 "ms" 0.001 "us" 0.000001 "µs" 0.000001 "ns" 0.000000001 }}
{{- $total := 0.0 }}
{{- range regexFindAll (printf "%s%s" $number $units) $d -1 }}
{{- $n := regexFind (printf "^%s" $number) . }}
{{- $total = addf $total (mulf (float64 $n) (get $scale (trimPrefix $n .))) }}
{{- end }}
{{- ceil $total | int }}
{{- end }}

{{/*
The drain window and the shutdown timeout sser really runs with, in seconds:
a --drain-window or --shutdown-timeout in sser.extraArgs comes after the
chart's own flag and wins over sser.drainWindowSeconds and
sser.shutdownTimeoutSeconds.
*/}}
{{- define "sser.drainSeconds" -}}
{{- with include "sser.extraArg" (dict "args" .Values.sser.extraArgs "flag" "drain-window") }}
{{- include "sser.durationSeconds" (dict "value" . "what" "sser.extraArgs --drain-window") }}
{{- else }}
{{- int .Values.sser.drainWindowSeconds }}
{{- end }}
{{- end }}

{{- define "sser.shutdownSeconds" -}}
{{- with include "sser.extraArg" (dict "args" .Values.sser.extraArgs "flag" "shutdown-timeout") }}
{{- include "sser.durationSeconds" (dict "value" . "what" "sser.extraArgs --shutdown-timeout") }}
{{- else }}
{{- int .Values.sser.shutdownTimeoutSeconds }}
{{- end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the preStop pause, then the drain window over
which subscribers are closed, then the HTTP shutdown timeout, plus a margin,
so SIGKILL never cuts a drain short. A terminationGracePeriodSeconds value
may raise it, never lower it.
*/}}
{{- define "sser.terminationGracePeriodSeconds" -}}
{{- $need := add (int .Values.preStopSleepSeconds) (include "sser.drainSeconds" . | int) (include "sser.shutdownSeconds" . | int) (int .Values.terminationGraceMarginSeconds) }}
{{- $set := .Values.terminationGracePeriodSeconds }}
{{- if kindIs "invalid" $set }}
{{- $need }}
{{- else if lt (int64 $set) (int64 $need) }}
{{- fail (printf "terminationGracePeriodSeconds %d is shorter than the shutdown needs: preStopSleepSeconds %d + drain window %ds + shutdown timeout %ds + terminationGraceMarginSeconds %d = %d; raise it or leave it empty" (int64 $set) (int .Values.preStopSleepSeconds) (include "sser.drainSeconds" . | int) (include "sser.shutdownSeconds" . | int) (int .Values.terminationGraceMarginSeconds) $need) }}
{{- else }}
{{- int64 $set }}
{{- end }}
{{- end }}

{{/*
Whether more than one replica can run, which is when a PDB makes sense.
*/}}
{{- define "sser.multiReplica" -}}
{{- if .Values.autoscaling.enabled }}
{{- if gt (int .Values.autoscaling.minReplicas) 1 }}true{{ end }}
{{- else if gt (int .Values.replicaCount) 1 }}true{{ end }}
{{- end }}

{{/*
Name of the Secret holding the peer token: the existing one when named, else
the one the chart creates, else empty (no peer token).
*/}}
{{- define "sser.peerTokenSecret" -}}
{{- if .Values.sser.peerToken.existingSecret }}
{{- .Values.sser.peerToken.existingSecret }}
{{- else if .Values.sser.peerToken.create }}
{{- printf "%s-peer-token" (include "sser.fullname" .) }}
{{- end }}
{{- end }}

{{/*
Whether subscribers are authenticated: a JWT key source or a ticket key is set.
*/}}
{{- define "sser.authEnabled" -}}
{{- $auth := .Values.auth | default dict }}
{{- if or (dig "jwt" "hs256Secret" "existingSecret" "" $auth) (dig "jwt" "publicKey" "existingSecret" "" $auth) (dig "jwt" "jwks" "existingSecret" "" $auth) (dig "jwt" "jwksURL" "" $auth) (dig "tickets" "key" "existingSecret" "" $auth) }}true{{ end }}
{{- end }}

{{/*
The credentials the sser container reads from files, as a YAML list of
{volume, secret, key, file, flag}: the internal port's tokens in the volume
sser-tokens (/etc/sser/tokens) and the subscriber authentication keys in
sser-auth (/etc/sser/auth). Each file is one Secret key, passed to sser with
its *-file flag, so no secret is ever in an environment variable or argument.
*/}}
{{- define "sser.secretFiles" -}}
{{- $files := list }}
{{- with include "sser.peerTokenSecret" . }}
{{- $files = append $files (dict "volume" "sser-tokens" "secret" . "key" $.Values.sser.peerToken.key "file" "peer-token" "flag" "peer-token-file") }}
{{- end }}
{{- with .Values.sser.publishToken.existingSecret }}
{{- $files = append $files (dict "volume" "sser-tokens" "secret" . "key" $.Values.sser.publishToken.key "file" "publish-token" "flag" "publish-token-file") }}
{{- end }}
{{- with .Values.sser.internalToken.existingSecret }}
{{- $files = append $files (dict "volume" "sser-tokens" "secret" . "key" $.Values.sser.internalToken.key "file" "internal-token" "flag" "internal-token-file") }}
{{- end }}
{{- $auth := .Values.auth | default dict }}
{{- range $src := list
  (list "jwt" "hs256Secret" "secret" "jwt-hs256-secret" "auth-jwt-hs256-secret-file")
  (list "jwt" "publicKey" "public.pem" "jwt-public-keys.pem" "auth-jwt-public-key-file")
  (list "jwt" "jwks" "jwks.json" "jwks.json" "auth-jwks-file")
  (list "tickets" "key" "key" "ticket-key" "ticket-key-file") }}
{{- $ref := dig (index $src 0) (index $src 1) dict $auth }}
{{- with $ref.existingSecret }}
{{- $files = append $files (dict "volume" "sser-auth" "secret" . "key" ($ref.key | default (index $src 2)) "file" (index $src 3) "flag" (index $src 4)) }}
{{- end }}
{{- end }}
{{- toYaml $files }}
{{- end }}

{{/*
Mount path of a credentials volume.
*/}}
{{- define "sser.secretDir" -}}
{{- if eq . "sser-tokens" }}/etc/sser/tokens{{ else }}/etc/sser/auth{{ end }}
{{- end }}

{{/*
The scrape endpoint of the ServiceMonitor and the PodMonitor: /metrics on the
internal port, with the job label set to the full name, so the alerts and
the dashboard find the replicas the same way whichever monitor scrapes them.
Called with (dict "root" $ "monitor" VALUES).
*/}}
{{- define "sser.scrapeEndpoint" -}}
{{- $m := .monitor -}}
port: internal
path: /metrics
scheme: http
{{- with $m.interval }}
interval: {{ . }}
{{- end }}
{{- with $m.scrapeTimeout }}
scrapeTimeout: {{ . }}
{{- end }}
honorLabels: {{ $m.honorLabels }}
relabelings:
  - action: replace
    targetLabel: job
    replacement: {{ include "sser.fullname" .root }}
  {{- with $m.relabelings }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with $m.metricRelabelings }}
metricRelabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Events of lag above which SserPeerLagHigh fires: the value set, else half of
the outbox (sser.outboxSize, its older name sser.peerQueue, or --outbox-size
in sser.extraArgs; else the binary's default of 65536).
*/}}
{{- define "sser.peerLagThreshold" -}}
{{- $set := .Values.metrics.prometheusRule.peerLagThreshold | int64 }}
{{- if gt $set 0 }}
{{- $set }}
{{- else }}
{{- $outbox := .Values.sser.outboxSize | default .Values.sser.peerQueue | int64 }}
{{- with include "sser.extraArg" (dict "args" .Values.sser.extraArgs "flag" "outbox-size") }}
{{- $outbox = int64 . }}
{{- end }}
{{- if le $outbox 0 }}
{{- $outbox = 65536 }}
{{- end }}
{{- div $outbox 2 }}
{{- end }}
{{- end }}

{{/*
Whether the `helm test` Pod is rendered: tests.enabled, and the internal
Service it publishes through exists.
*/}}
{{- define "sser.testEnabled" -}}
{{- if and .Values.tests.enabled .Values.internalService.enabled }}true{{ end }}
{{- end }}

{{/*
Labels of the `helm test` Pod that the NetworkPolicy admits it by. They
differ from the selector labels in app.kubernetes.io/name, so nothing that
selects the replicas selects it.
*/}}
{{- define "sser.testSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-test" (include "sser.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
{{- end }}

{{/*
Image of the `helm test` Pod: repository@digest, else repository:tag.
*/}}
{{- define "sser.testImage" -}}
{{- $i := .Values.tests.image }}
{{- if $i.digest }}
{{- printf "%s@%s" $i.repository $i.digest }}
{{- else }}
{{- printf "%s:%s" $i.repository $i.tag }}
{{- end }}
{{- end }}
