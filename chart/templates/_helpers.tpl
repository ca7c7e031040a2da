{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "dynamo-offloading.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Release-qualified name used as the prefix of every object.
*/}}
{{- define "dynamo-offloading.fullname" -}}
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
Name of one component's objects. Context: (dict "root" $ "component" "worker").
*/}}
{{- define "dynamo-offloading.component.fullname" -}}
{{- printf "%s-%s" (include "dynamo-offloading.fullname" .root | trunc (int (sub 62 (len .component)))) .component | trimSuffix "-" }}
{{- end }}

{{- define "dynamo-offloading.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels every object carries. Context: (dict "root" $ "component" "worker").
*/}}
{{- define "dynamo-offloading.labels" -}}
helm.sh/chart: {{ include "dynamo-offloading.chart" .root }}
{{ include "dynamo-offloading.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: {{ include "dynamo-offloading.name" .root }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels of one component. Context: (dict "root" $ "component" "worker").
*/}}
{{- define "dynamo-offloading.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dynamo-offloading.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Metadata block (name, namespace, labels) of one component's object.
Context: (dict "root" $ "component" "worker" "name" "optional-name-override" "namespace" "optional").
*/}}
{{- define "dynamo-offloading.metadata" -}}
name: {{ .name | default (include "dynamo-offloading.component.fullname" .) }}
namespace: {{ .namespace | default .root.Release.Namespace }}
labels:
  {{- include "dynamo-offloading.labels" . | trim | nindent 2 }}
{{- end }}

{{/*
Image reference from {registry (optional), repository, tag, digest}: the digest wins over the tag.
*/}}
{{- define "dynamo-offloading.image" -}}
{{- $repository := ternary (printf "%s/%s" .registry .repository) .repository (not (empty .registry)) }}
{{- if .digest }}
{{- printf "%s@%s" $repository .digest }}
{{- else }}
{{- printf "%s:%s" $repository (toString .tag) }}
{{- end }}
{{- end }}

{{/*
Pod-level settings every pod of the chart shares. Context: (dict "root" $ "serviceAccountName" "optional-override").
*/}}
{{- define "dynamo-offloading.podDefaults" -}}
serviceAccountName: {{ .serviceAccountName | default (include "dynamo-offloading.serviceAccountName" .root) }}
automountServiceAccountToken: {{ .automountToken | default false }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
A pod's identity from the downward API, and the API server's address when hooks.apiServer names one (for
host-network pods that cannot reach the kubernetes Service's ClusterIP): what an in-cluster client of the API
reads. Context: the root.
*/}}
{{- define "dynamo-offloading.podIdentity.env" -}}
{{- range $var, $field := dict "POD_NAMESPACE" "metadata.namespace" "POD_NAME" "metadata.name" "POD_UID" "metadata.uid" }}
- name: {{ $var }}
  valueFrom:
    fieldRef:
      fieldPath: {{ $field }}
{{- end }}
{{- with .Values.hooks.apiServer }}
# The in-cluster configuration of a Kubernetes client reads the API server's address from these.
- name: KUBERNETES_SERVICE_HOST
  value: {{ splitList ":" . | first | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ splitList ":" . | last | quote }}
{{- end }}
{{- end }}

{{/*
The ServiceAccount token, CA and namespace where in-cluster clients look for them, projected by the chart in
pods that do not automount a token, for the one container that calls the API: the volume, and its mount.
*/}}
{{- define "dynamo-offloading.kubeApiAccess.volume" -}}
- name: kube-api-access
  projected:
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: 3607
      - configMap:
          name: kube-root-ca.crt
          items:
            - key: ca.crt
              path: ca.crt
      - downwardAPI:
          items:
            - path: namespace
              fieldRef:
                fieldPath: metadata.namespace
{{- end }}

{{- define "dynamo-offloading.kubeApiAccess.mount" -}}
- name: kube-api-access
  mountPath: /var/run/secrets/kubernetes.io/serviceaccount
  readOnly: true
{{- end }}

{{- define "dynamo-offloading.serviceAccountName" -}}
{{- include "dynamo-offloading.fullname" . }}
{{- end }}

{{/*
Scheduling fields from a values block with nodeSelector, affinity and tolerations.
*/}}
{{- define "dynamo-offloading.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Security context of a container that needs no privilege: the values block merged over
the restricted baseline, so a values file can loosen only what it names.
*/}}
{{- define "dynamo-offloading.restrictedSecurityContext" -}}
{{- $baseline := dict "allowPrivilegeEscalation" false "capabilities" (dict "drop" (list "ALL")) "seccompProfile" (dict "type" "RuntimeDefault") }}
{{- toYaml (mustMergeOverwrite $baseline (deepCopy (default (dict) .))) }}
{{- end }}

{{/*
Value paths that still hold a PLACEHOLDER, one per line. Context: (dict "path" "" "value" .Values).
*/}}
{{- define "dynamo-offloading.placeholders" -}}
{{- $path := .path }}
{{- if kindIs "map" .value }}
{{- range $k, $v := .value }}
{{- include "dynamo-offloading.placeholders" (dict "path" (printf "%s%s." $path $k) "value" $v) }}
{{- end }}
{{- else if kindIs "slice" .value }}
{{- range $i, $v := .value }}
{{- include "dynamo-offloading.placeholders" (dict "path" (printf "%s%d." $path $i) "value" $v) }}
{{- end }}
{{- else if and (kindIs "string" .value) (contains "PLACEHOLDER" .value) }}
{{- printf "%s=%s\n" ($path | trimSuffix ".") .value }}
{{- end }}
{{- end }}

{{/*
"true" when a path is the directory or below it. Context: (list path dir).
*/}}
{{- define "dynamo-offloading.pathUnder" -}}
{{- $path := index . 0 | trimSuffix "/" }}
{{- $dir := index . 1 | trimSuffix "/" }}
{{- if or (eq $path $dir) (hasPrefix (printf "%s/" $dir) $path) }}true{{ end }}
{{- end }}

{{/*
Bytes of a Kubernetes quantity (64Gi, 500M, 1e9), as a float.
*/}}
{{- define "dynamo-offloading.quantityBytes" -}}
{{- $q := toString . }}
{{- $number := regexFind "^[0-9.]+" $q | float64 }}
{{- $suffix := trimPrefix (regexFind "^[0-9.]+" $q) $q }}
{{- $factors := dict "" 1.0 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 "m" 0.001 }}
{{- if regexMatch "^[eE][0-9]+$" $suffix }}
{{- range until (substr 1 (len $suffix) $suffix | int) }}{{ $number = mulf $number 10.0 }}{{ end }}
{{- $number }}
{{- else }}
{{- mulf $number (get $factors $suffix | float64) }}
{{- end }}
{{- end }}

{{/*
periodSeconds and failureThreshold of a probe that must allow `seconds` before it gives up: the
threshold rounds up, so period x threshold is never below the budget. Context: (dict "seconds" 300 "period" 5).
*/}}
{{- define "dynamo-offloading.probeBudget" -}}
periodSeconds: {{ int .period }}
failureThreshold: {{ max 1 (ceil (divf (float64 .seconds) (float64 .period)) | int) }}
{{- end }}

{{/*
A value as one shell word that the shell takes literally, whatever it holds: single-quoted, each ' in it
written as '\''. Every value inserted into a shell script goes through it (double quotes would still run
$(...) and backticks).
*/}}
{{- define "dynamo-offloading.shellWord" -}}
{{- printf "'%s'" (replace "'" "'\\''" (toString .)) }}
{{- end }}
