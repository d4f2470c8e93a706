{{/*
Expand the name of the chart.
*/}}
{{- define "ponder.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "ponder.fullname" -}}
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
Create chart name and version as used by the chart label.
*/}}
{{- define "ponder.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "ponder.labels" -}}
helm.sh/chart: {{ include "ponder.chart" . }}
{{ include "ponder.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ponder
{{- end }}

{{/*
Selector labels
*/}}
{{- define "ponder.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ponder.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Selector labels of the operator pods.
*/}}
{{- define "ponder.operator.selectorLabels" -}}
{{ include "ponder.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Selector labels of the NATS pod.
*/}}
{{- define "ponder.nats.selectorLabels" -}}
{{ include "ponder.selectorLabels" . }}
app.kubernetes.io/component: nats
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "ponder.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ponder.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The Ponder image, tagged with the chart's appVersion unless image.tag says otherwise.
*/}}
{{- define "ponder.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Name of the NATS StatefulSet and of its headless Service.
*/}}
{{- define "ponder.nats.fullname" -}}
{{- printf "%s-nats" (include "ponder.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- /* The Secret with the NATS trust (the operator's, seeds included) when nats.auth.enabled;
its "-server" companion holds what the NATS server includes. */}}
{{- define "ponder.nats.trustSecret" -}}
{{- printf "%s-trust" (include "ponder.nats.fullname" .) }}
{{- end }}

{{- /* The Secret with the NATS server's certificate and key, and the CA (ca.crt), when
nats.tls.enabled. */}}
{{- define "ponder.nats.tlsSecret" -}}
{{- printf "%s-tls" (include "ponder.nats.fullname" .) }}
{{- end }}

{{- /* The DNS names the NATS server's certificate holds: its Service and its pods. */}}
{{- define "ponder.nats.dnsNames" -}}
{{- $nats := include "ponder.nats.fullname" . }}
{{- $namespace := .Release.Namespace }}
- {{ $nats }}
- {{ $nats }}.{{ $namespace }}
- {{ $nats }}.{{ $namespace }}.svc
- {{ $nats }}.{{ $namespace }}.svc.cluster.local
- "*.{{ $nats }}.{{ $namespace }}.svc"
- "*.{{ $nats }}.{{ $namespace }}.svc.cluster.local"
{{- end }}

{{/*
The NATS URL the operator (and, through it, every scheduler and worker) connects to.
*/}}
{{- define "ponder.natsUrl" -}}
{{- if .Values.nats.enabled }}
{{- printf "%s://%s.%s.svc:%d" (ternary "tls" "nats" .Values.nats.tls.enabled) (include "ponder.nats.fullname" .) .Release.Namespace (int .Values.nats.clientPort) }}
{{- else }}
{{- required "nats.externalUrl is required when nats.enabled is false (e.g. nats://nats.messaging.svc:4222)" .Values.nats.externalUrl }}
{{- end }}
{{- end }}

{{/*
The namespaceSelector of the PodMonitors: monitoring.podMonitors.namespaces, else the namespaces
the operator watches, else every namespace.
*/}}
{{- define "ponder.podMonitors.namespaceSelector" -}}
{{- $namespaces := .Values.monitoring.podMonitors.namespaces | default .Values.operator.watchNamespaces }}
{{- if $namespaces -}}
matchNames:
  {{- toYaml $namespaces | nindent 2 }}
{{- else -}}
any: true
{{- end }}
{{- end }}

{{/*
Selector labels of the pods the operator renders for component `.component` (scheduler, worker);
ponder.operator.render's selector_labels and MANAGED_BY.
*/}}
{{- define "ponder.renderedPodSelector" -}}
app.kubernetes.io/name: ponder
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/managed-by: ponder-operator
{{- end }}

{{- /* nats.conf of the chart's NATS with nats.tls.enabled (mounted at /etc/nats, with the
certificate and, with nats.auth.enabled, the trust beside it). */}}
{{- define "ponder.nats.config" -}}
tls {
  cert_file: "/etc/nats/tls.crt"
  key_file: "/etc/nats/tls.key"
  timeout: 5
}
{{- if .Values.nats.auth.enabled }}
# Operator mode: only users whose JWT the operator's trust signed may connect.
include "trust.conf"
{{- end }}
{{- end }}
