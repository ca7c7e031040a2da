{{/*
Alert rules and dashboards: the release line's generated files (chart/files/, from
generator/observability.yaml) filled in with the release's own series.
*/}}

{{/*
The series each scrape object gives, as the Prometheus Operator labels them: a ServiceMonitor's job is its
Service's name, a PodMonitor's is <namespace>/<name>. A PromQL label matcher list.
*/}}
{{- define "dynamo-offloading.monitoring.frontendSeries" -}}
namespace={{ .Release.Namespace | quote }},job={{ include "dynamo-offloading.component.fullname" (dict "root" . "component" "frontend") | quote }}
{{- end }}

{{- define "dynamo-offloading.monitoring.workerSeries" -}}
namespace={{ .Release.Namespace | quote }},job={{ printf "%s/%s" .Release.Namespace (include "dynamo-offloading.component.fullname" (dict "root" . "component" "worker")) | quote }}
{{- end }}

{{/*
"true" when an alert's `when` holds. Context: (dict "when" "kvbmDisk" "values" <a group's or the release's Values>).
*/}}
{{- define "dynamo-offloading.monitoring.applies" -}}
{{- $v := .values }}
{{- $on := true }}
{{- if eq (.when | default "") "threefs" }}
{{- $on = and $v.threefs.enabled (ne $v.threefs.mode "host") }}
{{- else if eq (.when | default "") "kvbmMetrics" }}
{{- $on = $v.kvbm.metrics.enabled }}
{{- else if eq (.when | default "") "kvbmDisk" }}
{{- $on = and $v.kvbm.metrics.enabled (include "dynamo-offloading.kvbm.tierOn" $v.kvbm.diskCacheGB) }}
{{- else if .when }}
{{- fail (printf "chart/files/rules: unknown when %q" .when) }}
{{- end }}
{{- if $on }}true{{ end }}
{{- end }}

{{/*
One alert of the rules file, its placeholders filled in. Context: (dict "root" $ "rule" <the file's entry>
"fields" (dict "$pods" ...) "labels" (dict ...)).
*/}}
{{- define "dynamo-offloading.monitoring.rule" -}}
{{- $p := .root.Values.metrics.prometheusRule }}
{{- $alert := get $p.alerts .rule.key }}
{{- $fields := merge (dict
  "$frontend" (include "dynamo-offloading.monitoring.frontendSeries" .root)
  "$worker" (include "dynamo-offloading.monitoring.workerSeries" .root)
  "$namespace" .root.Release.Namespace
  "$threshold" (toString ($alert.threshold | default 0))) .fields }}
{{- $expr := .rule.expr }}
{{- $annotations := deepCopy .rule.annotations }}
{{- range $field, $value := $fields }}
{{- $expr = replace $field $value $expr }}
{{- range $name, $text := $annotations }}
{{- $_ := set $annotations $name (replace $field $value $text) }}
{{- end }}
{{- end }}
- alert: {{ .rule.alert }}
  expr: {{ $expr | quote }}
  for: {{ $alert.for }}
  labels:
    severity: {{ $alert.severity }}
    {{- with .labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    {{- toYaml $annotations | nindent 4 }}
    {{- with $p.runbookUrl }}
    runbook_url: {{ printf "%s#%s" . (lower $.rule.alert) | quote }}
    {{- end }}
{{- end }}

{{/*
A dashboard's ConfigMap, for Grafana's sidecar. Context: (dict "root" $ "name" "serving").
*/}}
{{- define "dynamo-offloading.monitoring.dashboard" -}}
{{- $d := .root.Values.metrics.dashboards }}
{{- $file := printf "files/dashboards/%s-%s.json" .name .root.Values.dynamo.release }}
apiVersion: v1
kind: ConfigMap
metadata:
  {{- include "dynamo-offloading.metadata" (dict "root" .root "component" (printf "dashboard-%s" .name) "namespace" $d.namespace) | trim | nindent 2 }}
    {{ $d.label }}: {{ $d.labelValue | quote }}
  {{- with $d.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
data:
  {{ base $file }}: |-
    {{- .root.Files.Get $file | nindent 4 }}
{{- end }}
