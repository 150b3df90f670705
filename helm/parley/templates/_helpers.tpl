{{/* Names. */}}
{{- define "parley.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name; kept to 40 characters so "<name>-owner-headless" fits 63. */}}
{{- define "parley.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "parley.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "parley.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "parley.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "parley.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "parley.labels" -}}
helm.sh/chart: {{ include "parley.chart" . }}
app.kubernetes.io/name: {{ include "parley.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: parley
{{- end -}}

{{/* Selector labels of one role: (dict "root" $ "role" "meta"). */}}
{{- define "parley.selectorLabels" -}}
app.kubernetes.io/name: {{ include "parley.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "parley.roleLabels" -}}
{{ include "parley.labels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{/* Headless Service of a StatefulSet role: (dict "root" $ "role" "meta"). */}}
{{- define "parley.headlessName" -}}
{{- printf "%s-%s-headless" (include "parley.fullname" .root) .role -}}
{{- end -}}

{{/* The DNS suffix of a StatefulSet role's pods: ".<headless>.<ns>.svc.<domain>". */}}
{{- define "parley.podDomain" -}}
{{- printf "%s.%s.svc.%s" (include "parley.headlessName" .) .root.Release.Namespace .root.Values.clusterDomain -}}
{{- end -}}

{{/*
The --meta list: ID=HOST:PORT for every meta pod, the id being its ordinal + 1. Meta, owners and
edges are all given this one list.
*/}}
{{- define "parley.metaList" -}}
{{- $fullname := include "parley.fullname" . -}}
{{- $domain := include "parley.podDomain" (dict "root" . "role" "meta") -}}
{{- $entries := list -}}
{{- range $ordinal := until (int .Values.meta.replicas) -}}
{{- $entries = append $entries (printf "%d=%s-meta-%d.%s:%d" (add1 $ordinal) $fullname $ordinal $domain (int $.Values.ports.grpc)) -}}
{{- end -}}
{{- join "," $entries -}}
{{- end -}}

{{/* The owners' --store. */}}
{{- define "parley.redisUrl" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s-redis.%s.svc.%s:6379" (include "parley.fullname" .) .Release.Namespace .Values.clusterDomain -}}
{{- else -}}
{{- .Values.externalRedis.url -}}
{{- end -}}
{{- end -}}

{{- define "parley.secretName" -}}
{{- default (printf "%s-secret" (include "parley.fullname" .)) .Values.app.existingSecret -}}
{{- end -}}

{{/* Checks across values that the schema cannot express. */}}
{{- define "parley.validate" -}}
{{- if and (not .Values.redis.enabled) (not .Values.externalRedis.url) (not .Values.externalRedis.existingSecret) -}}
{{- fail "redis.enabled is false: set externalRedis.url (redis://… or redis-cluster://…) or externalRedis.existingSecret" -}}
{{- end -}}
{{- if .Values.region.name -}}
{{- if not .Values.kafka.brokers -}}
{{- fail "region.name needs kafka.brokers: regions exchange their traffic over Kafka" -}}
{{- end -}}
{{- if not .Values.region.remote -}}
{{- fail "region.name needs region.remote: the other regions' names" -}}
{{- end -}}
{{- if has .Values.region.name .Values.region.remote -}}
{{- fail (printf "region %q is named among region.remote" .Values.region.name) -}}
{{- end -}}
{{- else if .Values.region.remote -}}
{{- fail "region.remote needs region.name" -}}
{{- end -}}
{{- if and .Values.app.certificate (not .Values.app.id) (not .Values.app.existingSecret) -}}
{{- fail "app.certificate needs app.id" -}}
{{- end -}}
{{- if and .Values.app.customerKeys (not .Values.app.id) (not .Values.app.existingSecret) -}}
{{- fail "app.customerKeys needs app.id" -}}
{{- end -}}
{{- if and .Values.app.webhook.secret (not .Values.app.webhook.url) (not .Values.app.existingSecret) -}}
{{- fail "app.webhook.secret needs app.webhook.url" -}}
{{- end -}}
{{- if and .Values.app.webhook.url (not .Values.app.webhook.secret) (not .Values.app.existingSecret) -}}
{{- fail "app.webhook.url needs app.webhook.secret (or app.existingSecret with a webhook-secret key)" -}}
{{- end -}}
{{- if and .Values.edges.autoscaling.enabled (gt (int .Values.edges.autoscaling.minReplicas) (int .Values.edges.autoscaling.maxReplicas)) -}}
{{- fail "edges.autoscaling.minReplicas is above maxReplicas" -}}
{{- end -}}
{{- if and .Values.cluster.production (not .Values.cluster.tls.secretName) -}}
{{- fail "cluster.production needs cluster.tls.secretName: nodes speak only mutual TLS in production" -}}
{{- end -}}
{{- if and .Values.cluster.production (not .Values.edges.tls.secretName) -}}
{{- fail "cluster.production needs edges.tls.secretName: clients connect only over TLS in production" -}}
{{- end -}}
{{- if and .Values.edges.ingress.enabled (not .Values.edges.ingress.hosts) -}}
{{- fail "edges.ingress.enabled needs at least one edges.ingress.hosts entry" -}}
{{- end -}}
{{- end -}}

{{/*
Anti-affinity and topology spread of one role: (dict "root" $ "role" "meta" "mode" "preferred").
*/}}
{{- define "parley.placement" -}}
{{- $mode := .mode | default .root.Values.podAntiAffinity -}}
{{- if eq $mode "required" }}
affinity:
  podAntiAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "parley.selectorLabels" . | nindent 12 }}
{{- else if eq $mode "preferred" }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "parley.selectorLabels" . | nindent 14 }}
{{- end }}
{{- with .root.Values.topologySpread }}
{{- if .enabled }}
topologySpreadConstraints:
  - maxSkew: {{ .maxSkew }}
    topologyKey: {{ .topologyKey }}
    whenUnsatisfiable: {{ .whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "parley.selectorLabels" $ | nindent 8 }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Pod annotations of one role: (dict "root" $ "role" "meta" "extra" .Values.meta.podAnnotations). */}}
{{- define "parley.podAnnotations" -}}
checksum/config: {{ include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum }}
checksum/secret: {{ include (print .root.Template.BasePath "/secret.yaml") .root | sha256sum }}
{{- if .root.Values.metrics.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .root.Values.ports.ops | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with .root.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Pod-level settings every Parley pod shares. */}}
{{- define "parley.podCommon" -}}
serviceAccountName: {{ include "parley.serviceAccountName" . }}
automountServiceAccountToken: false
terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  fsGroupChangePolicy: OnRootMismatch
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* nodeSelector and tolerations of one role: (dict "root" $ "values" .Values.meta). */}}
{{- define "parley.scheduling" -}}
{{- with merge (deepCopy (.values.nodeSelector | default dict)) (.root.Values.nodeSelector | default dict) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with concat (.root.Values.tolerations | default list) (.values.tolerations | default list) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Container-level settings every Parley container shares. */}}
{{- define "parley.containerCommon" -}}
image: {{ include "parley.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  privileged: false
  capabilities:
    drop:
      - ALL
startupProbe:
  httpGet:
    path: /healthz
    port: ops
  periodSeconds: 2
  failureThreshold: {{ div (int .Values.probes.startupSeconds) 2 | max 1 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: ops
  periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.readiness.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
livenessProbe:
  httpGet:
    path: /healthz
    port: ops
  periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.liveness.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
{{- end -}}

{{/*
Environment of a Parley container: (dict "root" $ "role" "meta"). The pod's own name, namespace
and IP first, so the OpenTelemetry attributes and the command can use them.
*/}}
{{- define "parley.env" -}}
{{- $root := .root -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- $attributes := list "k8s.namespace.name=$(POD_NAMESPACE)" "k8s.pod.name=$(POD_NAME)" (printf "parley.role=%s" .role) }}
{{- with $root.Values.region.name }}
{{- $attributes = append $attributes (printf "parley.region=%s" .) }}
{{- end }}
{{- range $key, $value := $root.Values.telemetry.resourceAttributes }}
{{- $attributes = append $attributes (printf "%s=%v" $key $value) }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attributes | quote }}
- name: PARLEY_CLUSTER_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ printf "%s-cluster" (include "parley.fullname" $root) }}
      key: cluster-secret
{{- if $root.Values.cluster.tls.secretName }}
- name: PARLEY_CLUSTER_CA
  value: /etc/parley/cluster-tls/ca.crt
- name: PARLEY_CLUSTER_CERT
  value: /etc/parley/cluster-tls/tls.crt
- name: PARLEY_CLUSTER_KEY
  value: /etc/parley/cluster-tls/tls.key
{{- end }}
{{- if and (eq .role "edge") $root.Values.edges.tls.secretName }}
- name: PARLEY_TLS_CERT
  value: /etc/parley/client-tls/tls.crt
- name: PARLEY_TLS_KEY
  value: /etc/parley/client-tls/tls.key
{{- end }}
{{- if $root.Values.cluster.production }}
- name: PARLEY_PRODUCTION
  value: "true"
{{- end }}
{{- if ne .role "meta" }}
- name: PARLEY_APP_CERTIFICATE
  valueFrom:
    secretKeyRef:
      name: {{ include "parley.secretName" $root }}
      key: app-certificate
      optional: true
- name: PARLEY_CUSTOMER_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ include "parley.secretName" $root }}
      key: customer-keys
      optional: true
- name: PARLEY_WEBHOOK_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "parley.secretName" $root }}
      key: webhook-secret
      optional: true
{{- end }}
{{- if eq .role "owner" }}
{{- if and (not $root.Values.redis.enabled) $root.Values.externalRedis.existingSecret }}
- name: PARLEY_STORE
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.externalRedis.existingSecret }}
      key: {{ $root.Values.externalRedis.existingSecretKey }}
{{- else }}
- name: PARLEY_STORE
  value: {{ include "parley.redisUrl" $root | quote }}
{{- end }}
{{- end }}
{{- with $root.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* envFrom of a Parley container: (dict "root" $ "role" "meta"). */}}
{{- define "parley.envFrom" -}}
- configMapRef:
    name: {{ include "parley.fullname" .root }}-config
{{- if ne .role "meta" }}
- configMapRef:
    name: {{ include "parley.fullname" .root }}-data-config
{{- end }}
{{- end -}}

{{/* Volumes every Parley pod mounts, besides its data dir. */}}
{{- define "parley.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* The TLS Secrets a Parley container mounts: (dict "root" $ "role" "edge"). */}}
{{- define "parley.tlsVolumeMounts" -}}
{{- if .root.Values.cluster.tls.secretName }}
- name: cluster-tls
  mountPath: /etc/parley/cluster-tls
  readOnly: true
{{- end }}
{{- if and (eq .role "edge") .root.Values.edges.tls.secretName }}
- name: client-tls
  mountPath: /etc/parley/client-tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* The volumes behind parley.tlsVolumeMounts (readable by the pod's group, fsGroup). */}}
{{- define "parley.tlsVolumes" -}}
{{- with .root.Values.cluster.tls.secretName }}
- name: cluster-tls
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end }}
{{- if eq .role "edge" }}
{{- with .root.Values.edges.tls.secretName }}
- name: client-tls
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end }}
{{- end }}
{{- end -}}
