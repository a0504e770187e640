{{/*
Values the schema cannot judge alone: combinations that would install but
cannot work. Each fails the render with what is wrong and what to do, instead
of leaving replicas that never find each other or a drain that never ends.
Included by deployment.yaml, which every install renders.
*/}}
{{- define "sser.validate" -}}
{{- $sser := .Values.sser }}
{{- $finder := $sser.peerFinder }}
{{- if and (eq $finder "static") (not $sser.peers) }}
{{- fail "sser.peerFinder=static needs sser.peers: the IP address of every replica, this one's included" }}
{{- end }}
{{- if and $sser.peers (ne $finder "static") }}
{{- fail (printf "sser.peers is read only with sser.peerFinder=static, not %s: set the finder or remove the peers" $finder) }}
{{- end }}
{{- $most := ternary .Values.autoscaling.maxReplicas .Values.replicaCount .Values.autoscaling.enabled | int }}
{{- if and (eq $finder "local") (gt $most 1) }}
{{- fail (printf "sser.peerFinder=local runs every replica alone, so with up to %d replicas a subscriber misses what is published on another one: use kubernetes (or static), or one replica" $most) }}
{{- end }}
{{- if and (has $finder (list "kubernetes" "auto")) (not .Values.serviceAccount.automount) }}
{{- fail (printf "sser.peerFinder=%s watches pods with the ServiceAccount token, which serviceAccount.automount=false leaves out: mount it or use another peer finder" $finder) }}
{{- end }}
{{- if eq (int $sser.frontendPort) (int $sser.internalPort) }}
{{- fail (printf "sser.frontendPort and sser.internalPort are both %d: the two listeners need a port each" (int $sser.frontendPort)) }}
{{- end }}
{{- $bind := $sser.bindAddress | default "" | trimPrefix "[" | trimSuffix "]" }}
{{- if or (hasPrefix "127." $bind) (has $bind (list "localhost" "::1")) }}
{{- fail (printf "sser.bindAddress=%s is loopback: probes and peers reach the pod at its IP; leave it empty or use $(POD_IP)" $sser.bindAddress) }}
{{- end }}
{{- if and .Values.service.nodePort (not (has .Values.service.type (list "NodePort" "LoadBalancer"))) }}
{{- fail (printf "service.nodePort is set but service.type is %s: use NodePort or LoadBalancer, or remove it" .Values.service.type) }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- $requests := dig "requests" dict (.Values.resources | default dict) }}
{{- if and (not (kindIs "invalid" .Values.autoscaling.targetCPUUtilizationPercentage)) (not $requests.cpu) }}
{{- fail "autoscaling.targetCPUUtilizationPercentage is a share of resources.requests.cpu, which is not set" }}
{{- end }}
{{- if and (not (kindIs "invalid" .Values.autoscaling.targetMemoryUtilizationPercentage)) (not $requests.memory) }}
{{- fail "autoscaling.targetMemoryUtilizationPercentage is a share of resources.requests.memory, which is not set" }}
{{- end }}
{{- end }}
{{- $pdb := .Values.podDisruptionBudget }}
{{- if and $pdb.enabled (include "sser.multiReplica" .) }}
{{- $fewest := ternary .Values.autoscaling.minReplicas .Values.replicaCount .Values.autoscaling.enabled | int }}
{{- $blocked := "" }}
{{- if not (kindIs "invalid" $pdb.minAvailable) }}
{{- if or (eq (toString $pdb.minAvailable) "100%") (and (not (kindIs "string" $pdb.minAvailable)) (ge (int $pdb.minAvailable) $fewest)) }}
{{- $blocked = printf "minAvailable=%v" $pdb.minAvailable }}
{{- end }}
{{- else if has (toString $pdb.maxUnavailable) (list "0" "0%") }}
{{- $blocked = printf "maxUnavailable=%v" $pdb.maxUnavailable }}
{{- end }}
{{- with $blocked }}
{{- fail (printf "podDisruptionBudget.%s lets none of %d pods be evicted, so node drains never finish: allow at least one" . $fewest) }}
{{- end }}
{{- end }}
{{- end }}
