{{/* Names, labels and the few derived values the templates share. */}}

{{- define "mdw.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mdw.fullname" -}}
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

{{- define "mdw.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mdw.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mdw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mdw.labels" -}}
helm.sh/chart: {{ include "mdw.chart" . }}
{{ include "mdw.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: worker
app.kubernetes.io/part-of: multidentify-worker
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "mdw.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mdw.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository:tag@digest when a digest is pinned. */}}
{{- define "mdw.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag | toString }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Drain budget rounded up to whole seconds, plus the margin: always above the worker's drain timeout. */}}
{{- define "mdw.terminationGracePeriodSeconds" -}}
{{- add (ceil .Values.drainTimeoutSeconds | int) (int .Values.terminationGraceMarginSeconds) }}
{{- end }}

{{/*
A setting value as the worker parses it: lists comma-joined, whole numbers without exponent (Helm reads YAML
numbers as float64, and 1400000 would otherwise print as 1.4e+06), everything else as text.
*/}}
{{- define "mdw.settingValue" -}}
{{- $v := . }}
{{- if kindIs "slice" $v }}
{{- join "," $v }}
{{- else if or (kindIs "float64" $v) (kindIs "int64" $v) (kindIs "int" $v) }}
{{- if eq (float64 (int64 $v)) (float64 $v) }}{{ int64 $v }}{{ else }}{{ $v }}{{ end }}
{{- else }}
{{- $v | toString }}
{{- end }}
{{- end }}

{{/* Fail early on combinations the schema cannot express well, or when schema validation was skipped. */}}
{{- define "mdw.validate" -}}
{{- /* `required` (not `fail`) so that `helm lint` with the default values only warns. */}}
{{- $_ := required "credentials.existingSecret is required: a Secret holding the Tencent SecretId and SecretKey" .Values.credentials.existingSecret }}
{{- $_ = required "config.bootstrap_servers is required (Kafka host:port,…)" .Values.config.bootstrap_servers }}
{{- $_ = required "config.appid is required (Tencent AppID)" .Values.config.appid }}
{{- $_ = required "config.group_ids is required (groups searched when an event names none)" (join "," (.Values.config.group_ids | default list)) }}
{{- if and .Values.keda.enabled .Values.autoscaling.enabled }}
{{- fail "keda.enabled and autoscaling.enabled are mutually exclusive: choose one autoscaler" }}
{{- end }}
{{- if and .Values.keda.enabled .Values.keda.kafka.allowIdleConsumers .Values.keda.kafka.limitToPartitionsWithLag }}
{{- fail "keda.kafka.allowIdleConsumers and keda.kafka.limitToPartitionsWithLag cannot both be true" }}
{{- end }}
{{- if and .Values.keda.enabled (gt (int .Values.keda.minReplicaCount) (int .Values.keda.maxReplicaCount)) }}
{{- fail "keda.minReplicaCount must not exceed keda.maxReplicaCount" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.service.enabled) }}
{{- fail "serviceMonitor.enabled needs service.enabled" }}
{{- end }}
{{- range $name := list "secret_id" "secret_key" "sasl_password" }}
{{- if hasKey $.Values.config $name }}
{{- fail (printf "config.%s is a secret: put it in the Secret named by credentials.existingSecret" $name) }}
{{- end }}
{{- end }}
{{- range $name := list "drain_timeout_s" "metrics_port" }}
{{- if hasKey $.Values.config $name }}
{{- fail (printf "config.%s is set by the chart: use drainTimeoutSeconds / metrics.port" $name) }}
{{- end }}
{{- end }}
{{- end }}
