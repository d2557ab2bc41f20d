{{/*
The chart name, truncated to 63 characters (a DNS label).
*/}}
{{- define "floodgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The fully qualified name: the release name, then the chart name unless the
release name already contains it; 63 characters at most.
*/}}
{{- define "floodgate.fullname" -}}
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
{{- define "floodgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The namespace of every object.
*/}}
{{- define "floodgate.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride }}
{{- end }}

{{/*
Selector labels: stable across upgrades (no chart version).
*/}}
{{- define "floodgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "floodgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "floodgate.labels" -}}
helm.sh/chart: {{ include "floodgate.chart" . }}
{{ include "floodgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: rate-limiter
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The service account's name.
*/}}
{{- define "floodgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "floodgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference: a digest wins over a tag; the tag defaults to the
chart's appVersion.
*/}}
{{- define "floodgate.image" -}}
{{- $registry := .Values.image.registry }}
{{- $repository := .Values.image.repository }}
{{- $ref := ternary $repository (printf "%s/%s" $registry $repository) (empty $registry) }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $ref .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $ref (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
The ConfigMap holding the rules: an existing one, or the chart's.
*/}}
{{- define "floodgate.rulesConfigMap" -}}
{{- default (printf "%s-rules" (include "floodgate.fullname" .)) .Values.rules.existingConfigMap }}
{{- end }}

{{/*
How long the pod may take to stop: the server's shutdown delay and grace,
plus a margin, so that Kubernetes never kills a draining server.
*/}}
{{- define "floodgate.terminationGracePeriod" -}}
{{- add .Values.shutdown.delaySeconds .Values.shutdown.graceSeconds 10 }}
{{- end }}

{{/*
The Secret a TLS listener's certificate comes from: its own, or the one the
chart's Certificate writes. Called with (dict "root" $ "tls" .Values.tls.<listener>).
*/}}
{{- define "floodgate.tlsSecret" -}}
{{- default (printf "%s-tls" (include "floodgate.fullname" .root)) .tls.secretName }}
{{- end }}

{{/*
"true" when any listener serves TLS (empty otherwise).
*/}}
{{- define "floodgate.tlsAny" -}}
{{- if or .Values.tls.grpc.enabled .Values.tls.http.enabled .Values.tls.admin.enabled }}true{{ end }}
{{- end }}

{{/*
Refuses TLS values that cannot work, with what to do instead. Renders nothing.
*/}}
{{- define "floodgate.tlsValidate" -}}
{{- range $listener := list "grpc" "http" "admin" }}
{{- $t := index $.Values.tls $listener }}
{{- if $t.enabled }}
{{- if not (or $t.secretName $.Values.tls.certificate.create) }}
{{- fail (printf "tls.%s.enabled needs tls.%s.secretName (a Secret with tls.crt and tls.key, as cert-manager writes them) or tls.certificate.create=true" $listener $listener) }}
{{- end }}
{{- if and $t.clientNames (not $t.mtls) }}
{{- fail (printf "tls.%s.clientNames needs tls.%s.mtls=true: without a client CA no client certificate is asked for, so no identity is checked" $listener $listener) }}
{{- end }}
{{- if and $t.clientCaSecretName (not $t.mtls) }}
{{- fail (printf "tls.%s.clientCaSecretName needs tls.%s.mtls=true" $listener $listener) }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.tls.http }}
{{- if and .enabled .mtls (eq .clientAuth "require") }}
{{- fail "tls.http.clientAuth=require is refused: kubelet's probes (which ask the HTTP port once gRPC has TLS) and the chart's test pod present no client certificate. With mTLS on HTTP, set tls.http.clientAuth=optional, or keep HTTP plaintext (tls.http.enabled=false) or TLS without client certificates (tls.http.mtls=false)" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
What a probe asks. Kubelet's gRPC probe speaks no TLS, so with TLS on gRPC
the probes ask GET /healthcheck on the HTTP port (the same verdict as the
gRPC health service: serving until shutdown starts), over HTTPS when HTTP has
TLS; kubelet neither verifies the server's certificate nor presents one.
Called with (dict "root" $ "service" "<gRPC health service name, or empty>").
*/}}
{{- define "floodgate.probe" -}}
{{- if .root.Values.tls.grpc.enabled -}}
httpGet:
  path: /healthcheck
  port: http
  scheme: {{ ternary "HTTPS" "HTTP" .root.Values.tls.http.enabled }}
{{- else -}}
grpc:
  port: 8081
  {{- with .service }}
  service: {{ . }}
  {{- end }}
{{- end }}
{{- end }}
