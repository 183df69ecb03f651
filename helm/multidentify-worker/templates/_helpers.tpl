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

{{/*
A number from `config`, or the worker's default when the setting is not given (null or absent). The defaults are
the worker's own (worker/config/); tests/helm/test_chart.py fails when they drift apart.
*/}}
{{- define "mdw.configNumber" -}}
{{- $v := index .config .name }}
{{- if kindIs "invalid" $v }}{{ .default }}{{ else }}{{ $v }}{{ end }}
{{- end }}

{{/*
The waits of a stopping worker, in seconds (a dict rendered as YAML): the drain, then the API call that may still
be in flight (connect + read timeout), rounded up; the grace period adds terminationGraceMarginSeconds for the
producer flushes, the final commits and the consumer close.
*/}}
{{- define "mdw.stopBudget" -}}
{{- $c := .Values.config | default dict }}
{{- $connect := float64 (include "mdw.configNumber" (dict "config" $c "name" "connect_timeout_s" "default" 3.0)) }}
{{- $read := float64 (include "mdw.configNumber" (dict "config" $c "name" "read_timeout_s" "default" 10.0)) }}
{{- $drain := float64 .Values.drainTimeoutSeconds }}
{{- $waits := ceil (addf $drain $connect $read) | int }}
drain: {{ $drain }}
connect: {{ $connect }}
read: {{ $read }}
required: {{ add $waits (int .Values.terminationGraceMarginSeconds) }}
{{- end }}

{{/*
terminationGracePeriodSeconds: derived from the stop budget, or the value given, which must not be shorter (else the
kubelet kills a worker before its final commit and every drained event is processed again).
*/}}
{{- define "mdw.terminationGracePeriodSeconds" -}}
{{- $b := include "mdw.stopBudget" . | fromYaml }}
{{- $required := int $b.required }}
{{- $given := .Values.terminationGracePeriodSeconds }}
{{- if kindIs "invalid" $given }}
{{- $required }}
{{- else if lt (int $given) $required }}
{{- fail (printf "terminationGracePeriodSeconds (%d) is shorter than the worker's worst-case stop (%d s = drainTimeoutSeconds %v + config.connect_timeout_s %v + config.read_timeout_s %v, rounded up, + terminationGraceMarginSeconds %d); leave it unset to derive it, or lower those" (int $given) $required $b.drain $b.connect $b.read (int .Values.terminationGraceMarginSeconds)) }}
{{- else }}
{{- int $given }}
{{- end }}
{{- end }}

{{/*
A Kubernetes memory quantity in MiB (float), or "" when the chart cannot read it (then it is not checked).
*/}}
{{- define "mdw.mebibytes" -}}
{{- $q := toString . }}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $q }}
{{- $unit := trimPrefix $number $q }}
{{- $perUnit := dict "" (divf 1 1048576) "Ki" (divf 1 1024) "Mi" 1 "Gi" 1024 "Ti" 1048576 "k" (divf 1000 1048576) "M" (divf 1000000 1048576) "G" (divf 1000000000 1048576) "T" (divf 1000000000000 1048576) }}
{{- if and $number (hasKey $perUnit $unit) }}{{ mulf (float64 $number) (get $perUnit $unit) }}{{ end }}
{{- end }}

{{/*
Container resources: the given ones, with the memory request and limit derived where not given. The worker's
baseline is a 256Mi request and a 512Mi limit; fetch mode adds config.fetch_memory_mb MiB of image bytes to both.
An explicit fetch-mode limit below 256Mi + fetch_memory_mb is refused: the worker would be OOM-killed under load.
*/}}
{{- define "mdw.resources" -}}
{{- $r := deepCopy (.Values.resources | default dict) }}
{{- $c := .Values.config | default dict }}
{{- $fetch := eq (toString (include "mdw.configNumber" (dict "config" $c "name" "image_mode" "default" "url"))) "fetch" }}
{{- $images := 0 }}
{{- if $fetch }}
{{- $images = int (include "mdw.configNumber" (dict "config" $c "name" "fetch_memory_mb" "default" 128)) }}
{{- end }}
{{- $requests := $r.requests | default dict }}
{{- $limits := $r.limits | default dict }}
{{- if not (hasKey $requests "memory") }}
{{- $_ := set $requests "memory" (printf "%dMi" (add 256 $images)) }}
{{- end }}
{{- if not (hasKey $limits "memory") }}
{{- $_ := set $limits "memory" (printf "%dMi" (add 512 $images)) }}
{{- else if $fetch }}
{{- $limitMi := include "mdw.mebibytes" $limits.memory }}
{{- if and $limitMi (lt (float64 $limitMi) (float64 (add 256 $images))) }}
{{- fail (printf "resources.limits.memory (%v) is below 256Mi + config.fetch_memory_mb (%d) = %dMi that a fetch-mode worker may hold; raise the limit or lower config.fetch_memory_mb" $limits.memory $images (add 256 $images)) }}
{{- end }}
{{- end }}
{{- $_ := set $r "requests" $requests }}
{{- $_ = set $r "limits" $limits }}
{{- toYaml $r }}
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

{{/*
The variable of one librdkafka property of a properties setting, as worker.config.property_env() spells it:
MDW_<SETTING>_<NAME> with the name in upper case, '_' written '__', '-' written '___' and '.' written '_'.
*/}}
{{- define "mdw.propertyEnv" -}}
{{- $setting := index . 0 }}
{{- $name := index . 1 | replace "_" "__" | replace "-" "___" | replace "." "_" }}
{{- printf "MDW_%s_%s" $setting $name | upper }}
{{- end }}

{{/* Fail early on combinations the schema cannot express well, or when schema validation was skipped. */}}
{{- define "mdw.validate" -}}
{{- /* `required` (not `fail`) so that `helm lint` with the default values only warns. */}}
{{- $_ := required "credentials.existingSecret is required: a Secret holding the Tencent SecretId and SecretKey" .Values.credentials.existingSecret }}
{{- $_ = required "config.bootstrap_servers is required (Kafka host:port,…)" .Values.config.bootstrap_servers }}
{{- if ne (.Values.config.api | default "v1") "iai" }}
{{- $_ = required "config.appid is required (Tencent AppID; not needed with config.api: iai)" .Values.config.appid }}
{{- end }}
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
{{- /* The same limits as the worker's config.load(): it would refuse to start (a crash loop), so refuse here. */}}
{{- $c := .Values.config | default dict }}
{{- $pollMs := float64 (include "mdw.configNumber" (dict "config" $c "name" "max_poll_interval_ms" "default" 300000)) }}
{{- $sessionMs := float64 (include "mdw.configNumber" (dict "config" $c "name" "session_timeout_ms" "default" 10000)) }}
{{- if lt $pollMs $sessionMs }}
{{- fail (printf "config.max_poll_interval_ms (%v) must not be below config.session_timeout_ms (%v); the Kafka client refuses it" (int64 $pollMs) (int64 $sessionMs)) }}
{{- end }}
{{- $b := include "mdw.stopBudget" . | fromYaml }}
{{- $call := addf $b.connect $b.read }}
{{- $revoke := float64 (include "mdw.configNumber" (dict "config" $c "name" "revoke_timeout_s" "default" 5.0)) }}
{{- range $wait := list (list "config.revoke_timeout_s" $revoke "a revoke") (list "drainTimeoutSeconds" (float64 $b.drain) "the drain on SIGTERM") }}
{{- $need := addf (index $wait 1) $call }}
{{- if ge (mulf $need 1000) $pollMs }}
{{- fail (printf "%s (%v s) + config.connect_timeout_s (%v s) + config.read_timeout_s (%v s) = %v s reaches config.max_poll_interval_ms (%v ms): %s waits that long without polling the consumer, which then leaves the group and cannot commit; raise config.max_poll_interval_ms or lower %s" (index $wait 0) (index $wait 1) $b.connect $b.read $need (int64 $pollMs) (index $wait 2) (index $wait 0)) }}
{{- end }}
{{- end }}
{{- if hasKey $c "group_instance_id" }}
{{- fail "config.group_instance_id is set by the chart: use staticMembership.enabled (each pod's name); one id shared by the replicas would make them fence each other" }}
{{- end }}
{{- if and .Values.staticMembership.enabled (kindIs "invalid" (index $c "session_timeout_ms")) }}
{{- fail "staticMembership.enabled needs config.session_timeout_ms, long enough to cover a container restart (e.g. 60000): a static member does not leave the group, so a stopped pod's partitions wait that long before they move" }}
{{- end }}
{{- /* An output topic read as input: each output would be consumed and written again, without end. */}}
{{- $inputs := list }}
{{- range $t := splitList "," (toString (index $c "input_topic" | default "images")) }}{{ $inputs = append $inputs (trim $t) }}{{ end }}
{{- range $out := list (list "dlq_topic" "face-dlq") (list "results_topic" "face-results") }}
{{- $topic := toString (index $c (index $out 0) | default (index $out 1)) }}
{{- if has $topic $inputs }}
{{- fail (printf "config.input_topic (%s) lists config.%s (%s): an output topic is never an input topic (every output would be consumed and written again, without end)" (index $c "input_topic" | default "images") (index $out 0) $topic) }}
{{- end }}
{{- end }}
{{- range $setting := list "kafka_common" "kafka_consumer" "kafka_producer" }}
{{- range $property, $_ := (index $c $setting | default dict) }}
{{- /* In lower case, as the worker reads the variable back: ssl.key.Password is its ssl.key.password. */}}
{{- if regexMatch "password|secret|passphrase|(^|\\.)key\\.pem$|^(topic\\.)?ssl_key$|^(topic\\.)?sasl\\.oauthbearer\\.config$" (lower $property) }}
{{- fail (printf "config.%s.%s is a secret: the ConfigMap is no place for it; pass it with extraEnv from a Secret (name %s, valueFrom.secretKeyRef)" $setting $property (include "mdw.propertyEnv" (list $setting $property))) }}
{{- end }}
{{- if ne $property (lower $property) }}
{{- fail (printf "config.%s.%s: librdkafka property names are lower case (%s)" $setting $property (lower $property)) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $name := list "drain_timeout_s" "metrics_port" }}
{{- if hasKey $.Values.config $name }}
{{- fail (printf "config.%s is set by the chart: use drainTimeoutSeconds / metrics.port" $name) }}
{{- end }}
{{- end }}
{{- end }}

{{/* PromQL label matchers of this release's series: prometheusRule.selector, else the ServiceMonitor's job. */}}
{{- define "mdw.alertSelector" -}}
{{- if .Values.prometheusRule.selector }}
{{- .Values.prometheusRule.selector }}
{{- else }}
{{- printf "namespace=%q, job=%q" .Release.Namespace (include "mdw.fullname" .) }}
{{- end }}
{{- end }}

{{/* An alert's labels and annotations: severity, prometheusRule.additionalLabels; summary, description, runbook. */}}
{{- define "mdw.alertMeta" -}}
labels:
  severity: {{ .alert.severity | quote }}
  {{- with .extraLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with .root.Values.prometheusRule.additionalLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  summary: {{ .summary | quote }}
  description: {{ .description | quote }}
  runbook_url: {{ printf "%s#%s" .root.Values.prometheusRule.runbookBaseUrl (lower .name) | quote }}
{{- end }}

{{/*
The replay Job's pod labels: another app name than the worker's, so that the worker's Service, PodDisruptionBudget
and NetworkPolicy (which select mdw.selectorLabels) never select it.
*/}}
{{- define "mdw.replaySelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-replay" (include "mdw.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mdw.replayLabels" -}}
helm.sh/chart: {{ include "mdw.chart" . }}
{{ include "mdw.replaySelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: replay
app.kubernetes.io/part-of: multidentify-worker
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* `multidentify-worker replay` arguments from .Values.replay (always --json: one summary document on stdout). */}}
{{- define "mdw.replayArgs" -}}
{{- $r := .Values.replay }}
{{- $args := list "replay" "--json" }}
{{- range $r.codes }}{{ $args = concat $args (list "--code" (toString .)) }}{{ end }}
{{- with $r.since }}{{ $args = concat $args (list "--since" (toString .)) }}{{ end }}
{{- with $r.until }}{{ $args = concat $args (list "--until" (toString .)) }}{{ end }}
{{- if not (kindIs "invalid" $r.partition) }}{{ $args = concat $args (list "--partition" (include "mdw.settingValue" $r.partition)) }}{{ end }}
{{- if not (kindIs "invalid" $r.fromOffset) }}{{ $args = concat $args (list "--from-offset" (include "mdw.settingValue" $r.fromOffset)) }}{{ end }}
{{- if not (kindIs "invalid" $r.toOffset) }}{{ $args = concat $args (list "--to-offset" (include "mdw.settingValue" $r.toOffset)) }}{{ end }}
{{- with $r.fromTopic }}{{ $args = concat $args (list "--from-topic" .) }}{{ end }}
{{- if $r.dryRun }}{{ $args = concat $args (list "--dry-run" "--samples" (include "mdw.settingValue" $r.samples)) }}{{ end }}
{{- with $r.targetTopic }}{{ $args = concat $args (list "--to" .) }}{{ end }}
{{- with $r.group }}{{ $args = concat $args (list "--group" .) }}{{ end }}
{{- if $r.restart }}{{ $args = concat $args (list "--restart") }}{{ end }}
{{- $args = concat $args (list "--max-replays" (include "mdw.settingValue" $r.maxReplays) "--rate" (include "mdw.settingValue" $r.rate)) }}
{{- if not (kindIs "invalid" $r.limit) }}{{ $args = concat $args (list "--limit" (include "mdw.settingValue" $r.limit)) }}{{ end }}
{{- $args = concat $args (list "--timeout" (include "mdw.settingValue" $r.timeoutSeconds)) }}
{{- if $r.allowMissingKey }}{{ $args = concat $args (list "--allow-missing-key") }}{{ end }}
{{- $args = concat $args ($r.extraArgs | default list) }}
{{- toYaml $args }}
{{- end }}
