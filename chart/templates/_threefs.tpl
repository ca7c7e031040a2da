{{/*
The 3FS FUSE mount: paths, launcher config, token Secret and the native sidecar.
Every helper takes the root context.
*/}}

{{/*
Where the sidecar mounts 3FS, inside the pods: <mountRoot.mountPath>/<mountSubPath>.
*/}}
{{- define "dynamo-offloading.threefs.mountpoint" -}}
{{- printf "%s/%s" (.Values.threefs.mountRoot.mountPath | trimSuffix "/") (.Values.threefs.mountSubPath | trimAll "/") }}
{{- end }}

{{/*
"true" when each worker pod runs its own FUSE client (threefs.mode sidecar), else "".
*/}}
{{- define "dynamo-offloading.threefs.sidecarOn" -}}
{{- if and .Values.threefs.enabled (eq .Values.threefs.mode "sidecar") }}true{{ end }}
{{- end }}

{{/*
"true" when the release runs a FUSE client, in the worker pods or as a DaemonSet, else "": its launcher
config, token and the post-delete cleanup of its mounts come with it.
*/}}
{{- define "dynamo-offloading.threefs.runsClient" -}}
{{- if and .Values.threefs.enabled (ne .Values.threefs.mode "host") }}true{{ end }}
{{- end }}

{{- define "dynamo-offloading.threefs.daemonsetName" -}}
{{- include "dynamo-offloading.component.fullname" (dict "root" . "component" "fuse") }}
{{- end }}

{{/*
The node directory mounted at mountRoot.mountPath: the FUSE client's own below the staging root (a
sidecar's per StatefulSet, the DaemonSet's per release), so that no other client on the node detaches or
stacks on its mount; in host mode the staging root itself. Context: a group, or the root for the DaemonSet.
*/}}
{{- define "dynamo-offloading.threefs.hostDir" -}}
{{- $root := .Values.threefs.mountRoot.hostPath | trimSuffix "/" }}
{{- if eq .Values.threefs.mode "host" }}
{{- $root }}
{{- else if eq .Values.threefs.mode "daemonset" }}
{{- printf "%s/%s/%s" $root .Release.Namespace (include "dynamo-offloading.threefs.daemonsetName" .) }}
{{- else }}
{{- printf "%s/%s/%s" $root .Release.Namespace (include "dynamo-offloading.worker.fullname" .) }}
{{- end }}
{{- end }}

{{- define "dynamo-offloading.threefs.tokenSecretName" -}}
{{- .Values.threefs.existingSecret | default (include "dynamo-offloading.component.fullname" (dict "root" . "component" "threefs-token")) }}
{{- end }}

{{- define "dynamo-offloading.threefs.tokenSecretKey" -}}
{{- if .Values.threefs.existingSecret }}{{ .Values.threefs.existingSecretKey }}{{ else }}token{{ end }}
{{- end }}

{{/*
hf3fs_fuse_main launcher TOML, with upstream key names (3FS rejects unknown keys).
*/}}
{{- define "dynamo-offloading.threefs.launcherToml" -}}
{{- $t := .Values.threefs -}}
allow_other = {{ $t.fuse.allowOther }}
cluster_id = {{ $t.clusterId | quote }}
mountpoint = {{ include "dynamo-offloading.threefs.mountpoint" . | quote }}
token_file = "/etc/3fs-token/token"

[client]
force_use_tcp = {{ eq $t.transport "tcp" }}

[ib_devices]
device_filter = [{{ range $i, $d := $t.ibDevices.deviceFilter }}{{ if $i }}, {{ end }}{{ $d | quote }}{{ end }}]
default_pkey_index = {{ int $t.ibDevices.defaultPkeyIndex }}

[mgmtd_client]
mgmtd_server_addresses = [{{ range $i, $a := $t.mgmtdAddresses }}{{ if $i }}, {{ end }}{{ $a | quote }}{{ end }}]
{{- end }}

{{/*
Extended regex matching the mountinfo lines of mounts at the mountpoint (mount points sit in field 5).
*/}}
{{- define "dynamo-offloading.threefs.mountinfoPattern" -}}
{{- printf "^([^ ]+ ){4}%s " (include "dynamo-offloading.threefs.mountpoint" . | regexQuoteMeta) }}
{{- end }}

{{/*
Shell test that passes only when the mountpoint is a live fuse.hf3fs mount: the topmost mount there (the
last mountinfo line for it: a mount stacked on a dead one hides it) is of that type and answers stat (a
dead FUSE daemon gives ENOTCONN).
*/}}
{{- define "dynamo-offloading.threefs.mountIsLive" -}}
{{- $mp := include "dynamo-offloading.threefs.mountpoint" . -}}
grep -E {{ include "dynamo-offloading.threefs.mountinfoPattern" . | include "dynamo-offloading.shellWord" }} /proc/self/mountinfo | tail -n 1 | grep -q ' - fuse\.hf3fs ' && stat {{ include "dynamo-offloading.shellWord" $mp }} >/dev/null
{{- end }}

{{/*
Shell lines that lazily detach every mount at the mountpoint, stacked ones included. The sidecar
runs them when it starts, since a restart after a crash finds the previous daemon's mount dead
("Transport endpoint is not connected") and could not mount over it, and when it stops.
*/}}
{{- define "dynamo-offloading.threefs.detachMount" -}}
{{- $mp := include "dynamo-offloading.threefs.mountpoint" . -}}
{{- $word := include "dynamo-offloading.shellWord" $mp -}}
while grep -Eq {{ include "dynamo-offloading.threefs.mountinfoPattern" . | include "dynamo-offloading.shellWord" }} /proc/self/mountinfo; do
  printf 'detaching the mount at %s\n' {{ $word }}
  umount -l {{ $word }} || fusermount3 -uz {{ $word }} || break
done
{{- end }}

{{/*
The FUSE client container: it detaches what a dead client left at the mountpoint, mounts 3FS there, and
propagates the mount to the node (Bidirectional needs privileged); its startup probe waits for the mount,
and its readiness and liveness follow it. In the worker pod it is a native sidecar (an init container with
restartPolicy Always) whose startup probe gates the worker. Context: (dict "root" $ "sidecar" true).
*/}}
{{- define "dynamo-offloading.threefs.fuseContainer" -}}
{{- $t := .root.Values.threefs }}
{{- $mp := include "dynamo-offloading.threefs.mountpoint" .root -}}
- name: {{ ternary "fuse-sidecar" "fuse" .sidecar }}
  image: {{ include "dynamo-offloading.image" $t.fuse.image | quote }}
  imagePullPolicy: {{ $t.fuse.image.pullPolicy }}
  {{- if .sidecar }}
  restartPolicy: Always
  {{- end }}
  command:
    - /bin/sh
    - -ec
    - |
      {{- if eq $t.transport "rdma" }}
      ulimit -l unlimited
      {{- end }}
      {{- include "dynamo-offloading.threefs.detachMount" .root | nindent 6 }}
      mkdir -p {{ include "dynamo-offloading.shellWord" $mp }}
      exec {{ include "dynamo-offloading.shellWord" $t.fuse.binary }} --launcher_cfg /etc/3fs/launcher.toml
  securityContext:
    privileged: true
    runAsUser: 0
  resources:
    {{- toYaml $t.fuse.resources | nindent 4 }}
  {{- $check := dict "exec" (dict "command" (list "/bin/sh" "-c" (include "dynamo-offloading.threefs.mountIsLive" .root))) }}
  startupProbe:
    {{- toYaml $check | nindent 4 }}
    timeoutSeconds: 5
    {{- include "dynamo-offloading.probeBudget" (dict "seconds" $t.fuse.mountTimeoutSeconds "period" 5) | nindent 4 }}
  livenessProbe:
    {{- toYaml $check | nindent 4 }}
    periodSeconds: 10
    timeoutSeconds: 5
    failureThreshold: 3
  readinessProbe:
    {{- toYaml $check | nindent 4 }}
    periodSeconds: 10
    timeoutSeconds: 5
  lifecycle:
    preStop:
      exec:
        command: ["/bin/sh", "-c", {{ include "dynamo-offloading.threefs.detachMount" .root | quote }}]
  volumeMounts:
    - name: threefs-mount-root
      mountPath: {{ $t.mountRoot.mountPath }}
      mountPropagation: Bidirectional
    - name: fuse-launcher
      mountPath: /etc/3fs
      readOnly: true
    - name: threefs-token
      mountPath: /etc/3fs-token
      readOnly: true
    - name: dev-fuse
      mountPath: /dev/fuse
    {{- if $t.fdbClusterFile }}
    - name: fdb-cluster
      mountPath: /etc/foundationdb
      readOnly: true
    {{- end }}
    {{- if eq $t.transport "rdma" }}
    - name: dev-infiniband
      mountPath: /dev/infiniband
    {{- end }}
{{- end }}

{{/*
The node's staging directory of the mount, for the FUSE client and the workers. Context: as threefs.hostDir.
*/}}
{{- define "dynamo-offloading.threefs.mountRootVolume" -}}
- name: threefs-mount-root
  hostPath:
    path: {{ include "dynamo-offloading.threefs.hostDir" . }}
    type: DirectoryOrCreate
{{- end }}

{{/*
The other volumes of the FUSE client: its launcher config, token and devices.
*/}}
{{- define "dynamo-offloading.threefs.clientVolumes" -}}
{{- $t := .Values.threefs -}}
- name: fuse-launcher
  configMap:
    name: {{ include "dynamo-offloading.component.fullname" (dict "root" . "component" "fuse-launcher") }}
- name: threefs-token
  secret:
    secretName: {{ include "dynamo-offloading.threefs.tokenSecretName" . }}
    defaultMode: 0400
    items:
      - key: {{ include "dynamo-offloading.threefs.tokenSecretKey" . }}
        path: token
- name: dev-fuse
  hostPath:
    path: /dev/fuse
    type: CharDevice
{{- if $t.fdbClusterFile }}
- name: fdb-cluster
  configMap:
    name: {{ include "dynamo-offloading.component.fullname" (dict "root" . "component" "fdb") }}
{{- end }}
{{- if eq $t.transport "rdma" }}
- name: dev-infiniband
  hostPath:
    path: /dev/infiniband
    type: Directory
{{- end }}
{{- end }}

{{/*
Where the DaemonSet's clients run: on the nodes of every worker group, a node affinity with one term per
group (terms are ORed) from its nodeSelector and worker.nodes, none when a group may run anywhere; and
every group's tolerations. A JSON map {affinity, tolerations}.
*/}}
{{- define "dynamo-offloading.threefs.daemonsetPlacement" -}}
{{- $terms := list }}
{{- $anywhere := false }}
{{- $tolerations := list }}
{{- range $name := include "dynamo-offloading.worker.groupNames" . | fromJsonArray }}
{{- $g := dict }}
{{- include "dynamo-offloading.worker.groupContext" (dict "root" $ "name" $name "into" $g) }}
{{- $expressions := list }}
{{- range $key, $value := $g.Values.worker.nodeSelector | default dict }}
{{- $expressions = append $expressions (dict "key" $key "operator" "In" "values" (list (toString $value))) }}
{{- end }}
{{- with $g.Values.worker.nodes }}
{{- $expressions = append $expressions (dict "key" "kubernetes.io/hostname" "operator" "In" "values" .) }}
{{- end }}
{{- if $expressions }}
{{- $terms = append $terms (dict "matchExpressions" $expressions) }}
{{- else }}
{{- $anywhere = true }}
{{- end }}
{{- $tolerations = concat $tolerations ($g.Values.worker.tolerations | default list) }}
{{- end }}
{{- $affinity := dict }}
{{- if not $anywhere }}
{{- $affinity = dict "nodeAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (dict "nodeSelectorTerms" ($terms | uniq))) }}
{{- end }}
{{- toJson (dict "affinity" $affinity "tolerations" ($tolerations | uniq)) }}
{{- end }}
