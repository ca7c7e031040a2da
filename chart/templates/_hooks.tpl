{{/*
dynamo-hooks: the pre-install/pre-upgrade Job and the worker's resolve sidecar that resolve etcd and
NATS, verify them and 3FS mgmtd, and find the model. Every helper takes the root context unless it
says otherwise.
*/}}

{{/*
The hooks image; an empty tag means the chart's version.
*/}}
{{- define "dynamo-offloading.hooks.image" -}}
{{- $image := deepCopy .Values.hooks.image }}
{{- $_ := set $image "tag" ($image.tag | default .Chart.Version) }}
{{- include "dynamo-offloading.image" $image }}
{{- end }}

{{- define "dynamo-offloading.hooks.preInstall.fullname" -}}
{{- include "dynamo-offloading.component.fullname" (dict "root" . "component" "pre-install") }}
{{- end }}

{{/*
The ConfigMap that records the etcd/NATS pod IPs last resolved (worker/configmap-endpoints.yaml).
*/}}
{{- define "dynamo-offloading.hooks.recordName" -}}
{{- include "dynamo-offloading.component.fullname" (dict "root" . "component" "endpoints") }}
{{- end }}

{{/*
Namespaces whose EndpointSlices must be read: those of the Services a hostNetwork worker resolves to
pod IPs. A JSON list, empty when nothing is resolved.
*/}}
{{- define "dynamo-offloading.hooks.discoveryNamespaces" -}}
{{- $namespaces := list }}
{{- if .Values.worker.hostNetwork }}
{{- range $name := include "dynamo-offloading.dynamo.peers" . | fromJsonArray }}
{{- $source := include "dynamo-offloading.peer.source" (dict "root" $ "name" $name "dns" false) | fromJson }}
{{- with $source.namespace }}
{{- $namespaces = append $namespaces . }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson ($namespaces | uniq) }}
{{- end }}

{{/*
dynamo-hooks arguments that say where etcd and NATS are and how to check them, shared by the hook
Job and the resolve sidecar (which waits for a required or warn check, and not for an off one):
for each the Dynamo processes use (dynamo.peers), peer.source as the worker sees it, with its check mode
and the NATS client certificate.
*/}}
{{- define "dynamo-offloading.hooks.peerArgs" -}}
{{- $root := . }}
{{- $dns := not $root.Values.worker.hostNetwork }}
{{- if not $dns }}
- --resolve
{{- end }}
{{- range $name := include "dynamo-offloading.dynamo.peers" $root | fromJsonArray }}
{{- $peer := include "dynamo-offloading.peer.source" (dict "root" $root "name" $name "dns" $dns) | fromJson }}
{{- $_ := set $peer "check" (index $root.Values.hooks.preInstall.checks $name) }}
{{- if and (eq $name "nats") $root.Values.nats.tls.enabled }}
{{- $_ := set $peer "cert" (printf "/etc/dynamo/nats-tls/%s" $root.Values.nats.tls.certKey) }}
{{- $_ := set $peer "key" (printf "/etc/dynamo/nats-tls/%s" $root.Values.nats.tls.keyKey) }}
{{- end }}
- {{ printf "--%s=%s" $name (toJson $peer) | quote }}
{{- end }}
- --timeout={{ $root.Values.hooks.timeoutSeconds }}
{{- end }}

{{/*
Hook annotations. Context: (dict "hook" "pre-install" "weight" "-5"); hook is pre-install (which
also runs before upgrades) or post-delete. Post-delete hooks go when they fail too: no later
install would replace them, and Helm shows a failed Job's log before deleting it.
*/}}
{{- define "dynamo-offloading.hooks.annotations" -}}
{{- if eq .hook "pre-install" }}
helm.sh/hook: pre-install,pre-upgrade
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{{- else }}
helm.sh/hook: {{ .hook }}
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded,hook-failed
{{- end }}
helm.sh/hook-weight: {{ .weight | quote }}
{{- end }}

{{/*
Labels of a pod that runs dynamo-hooks in a Job: its component's selector labels and hooks.podLabels.
Context: (dict "root" $ "component" "pre-install").
*/}}
{{- define "dynamo-offloading.hooks.podLabels" -}}
{{ include "dynamo-offloading.selectorLabels" . }}
{{- with .root.Values.hooks.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The container settings dynamo-hooks runs with wherever it runs: image, environment (with `peers`, the
etcd/NATS credentials and certificates as the worker gets them), resources, a restricted non-root
context with a read-only root filesystem, and its volume mounts: a writable /tmp (client certificates
given as PEM content are written there for the TLS library), with `peers` the NATS certificates, then
`mounts`. Context: (dict "root" $ "peers" true "dns" bool "mounts" "yaml list or empty").
*/}}
{{- define "dynamo-offloading.hooks.container" -}}
image: {{ include "dynamo-offloading.hooks.image" .root | quote }}
imagePullPolicy: {{ .root.Values.hooks.image.pullPolicy }}
env:
  {{- include "dynamo-offloading.podIdentity.env" .root | trim | nindent 2 }}
  {{- if .peers }}
  {{- include "dynamo-offloading.connection.env" . | trim | nindent 2 }}
  {{- end }}
resources:
  {{- toYaml .root.Values.hooks.resources | nindent 2 }}
securityContext:
  {{- include "dynamo-offloading.restrictedSecurityContext" (dict "runAsNonRoot" true "runAsUser" 65532 "runAsGroup" 65532 "readOnlyRootFilesystem" true) | trim | nindent 2 }}
volumeMounts:
  - name: hooks-tmp
    mountPath: /tmp
  {{- with and .peers (include "dynamo-offloading.connection.volumeMounts" .root | trim) }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- with .mounts }}
  {{- . | trim | nindent 2 }}
  {{- end }}
{{- end }}

{{/*
The pod volumes dynamo-hooks's container needs besides those its caller adds.
*/}}
{{- define "dynamo-offloading.hooks.volumes" -}}
- name: hooks-tmp
  emptyDir:
    medium: Memory
    sizeLimit: 16Mi
{{- end }}

{{/*
Name of a Role or RoleBinding that reads another namespace's Services: the release namespace is part
of it, so releases of the same name in two namespaces do not collide there.
Context: (dict "root" $ "component" "pre-install").
*/}}
{{- define "dynamo-offloading.hooks.discoveryName" -}}
{{- printf "%s-%s-discovery" (include "dynamo-offloading.component.fullname" .) .root.Release.Namespace | trunc 253 | trimSuffix "-" }}
{{- end }}


{{/*
Metadata of an object in a namespace the Services live in (not always the release's), with hook
annotations when weight is set. Context: (dict "root" $ "component" "pre-install" "namespace" "baseten" "weight" "-5").
*/}}
{{- define "dynamo-offloading.hooks.discoveryMetadata" -}}
name: {{ include "dynamo-offloading.hooks.discoveryName" . }}
namespace: {{ .namespace }}
labels:
  {{- include "dynamo-offloading.labels" . | trim | nindent 2 }}
{{- with .weight }}
annotations:
  {{- include "dynamo-offloading.hooks.annotations" (dict "hook" "pre-install" "weight" .) | trim | nindent 2 }}
{{- end }}
{{- end }}

{{/*
A Role reading Services and EndpointSlices in one namespace. Context as for discoveryMetadata.
*/}}
{{- define "dynamo-offloading.hooks.discoveryRole" -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  {{- include "dynamo-offloading.hooks.discoveryMetadata" . | trim | nindent 2 }}
rules:
  - apiGroups: [""]
    resources: [services]
    verbs: [get]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list]
{{- end }}

{{/*
Its RoleBinding, to the component's ServiceAccount in the release namespace. Context as for discoveryMetadata.
*/}}
{{- define "dynamo-offloading.hooks.discoveryRoleBinding" -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  {{- include "dynamo-offloading.hooks.discoveryMetadata" . | trim | nindent 2 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ include "dynamo-offloading.hooks.discoveryName" . }}
subjects:
  - kind: ServiceAccount
    name: {{ include "dynamo-offloading.component.fullname" . }}
    namespace: {{ .root.Release.Namespace }}
{{- end }}

{{/*
The nodes the post-delete cleanup visits: every node of every worker group (worker.placementNodes), sorted.
A JSON list, empty when there is nothing to clean (no 3FS, or cleanup off).
*/}}
{{- define "dynamo-offloading.hooks.cleanupNodes" -}}
{{- $nodes := list }}
{{- if and (include "dynamo-offloading.threefs.runsClient" .) .Values.hooks.postDelete.enabled }}
{{- range $name := include "dynamo-offloading.worker.groupNames" . | fromJsonArray }}
{{- $g := dict }}
{{- include "dynamo-offloading.worker.groupContext" (dict "root" $ "name" $name "into" $g) }}
{{- $nodes = concat $nodes (include "dynamo-offloading.worker.placementNodes" $g | fromJsonArray) }}
{{- end }}
{{- end }}
{{- toJson ($nodes | uniq | sortAlpha) }}
{{- end }}

{{/*
A Role that patches the record ConfigMap, and nothing else: it is created by the chart, so no create.
Context: (dict "root" $ "component" "worker" "weight" "-5"); weight makes it a pre-install hook.
*/}}
{{- define "dynamo-offloading.hooks.recordRole" -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  {{- include "dynamo-offloading.hooks.recordMetadata" . | trim | nindent 2 }}
rules:
  - apiGroups: [""]
    resources: [configmaps]
    resourceNames: [{{ include "dynamo-offloading.hooks.recordName" .root }}]
    verbs: [patch]
{{- end }}

{{/*
Its RoleBinding, to the component's ServiceAccount. Context as for recordRole.
*/}}
{{- define "dynamo-offloading.hooks.recordRoleBinding" -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  {{- include "dynamo-offloading.hooks.recordMetadata" . | trim | nindent 2 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ include "dynamo-offloading.component.fullname" . }}-record
subjects:
  - kind: ServiceAccount
    name: {{ include "dynamo-offloading.component.fullname" . }}
    namespace: {{ .root.Release.Namespace }}
{{- end }}

{{- define "dynamo-offloading.hooks.recordMetadata" -}}
{{- include "dynamo-offloading.metadata" (dict "root" .root "component" .component "name" (printf "%s-record" (include "dynamo-offloading.component.fullname" .))) }}
{{- with .weight }}
annotations:
  {{- include "dynamo-offloading.hooks.annotations" (dict "hook" "pre-install" "weight" .) | trim | nindent 2 }}
{{- end }}
{{- end }}
