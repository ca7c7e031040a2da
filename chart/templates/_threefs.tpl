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
The node directory a group's pods see at mountRoot.mountPath: their own below the staging root, so that
pods of other groups or releases on the node never detach or stack on their mount. Context: a group.
*/}}
{{- define "dynamo-offloading.threefs.hostDir" -}}
{{- printf "%s/%s/%s" (.Values.threefs.mountRoot.hostPath | trimSuffix "/") .Release.Namespace (include "dynamo-offloading.worker.fullname" .) }}
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
grep -E '{{ include "dynamo-offloading.threefs.mountinfoPattern" . }}' /proc/self/mountinfo | tail -n 1 | grep -q ' - fuse\.hf3fs ' && stat {{ $mp | quote }} >/dev/null
{{- end }}

{{/*
Shell lines that lazily detach every mount at the mountpoint, stacked ones included. The sidecar
runs them when it starts, since a restart after a crash finds the previous daemon's mount dead
("Transport endpoint is not connected") and could not mount over it, and when it stops.
*/}}
{{- define "dynamo-offloading.threefs.detachMount" -}}
{{- $mp := include "dynamo-offloading.threefs.mountpoint" . -}}
while grep -Eq '{{ include "dynamo-offloading.threefs.mountinfoPattern" . }}' /proc/self/mountinfo; do
  echo "detaching the mount at {{ $mp }}"
  umount -l {{ $mp | quote }} || fusermount3 -uz {{ $mp | quote }} || break
done
{{- end }}

{{/*
The FUSE sidecar: a native sidecar (init container, restartPolicy Always) whose startup probe
gates the worker until 3FS is mounted. Privileged: it mounts FUSE and propagates the mount to
the host (Bidirectional needs privileged).
*/}}
{{- define "dynamo-offloading.threefs.sidecar" -}}
{{- $t := .Values.threefs }}
{{- $mp := include "dynamo-offloading.threefs.mountpoint" . -}}
- name: fuse-sidecar
  image: {{ include "dynamo-offloading.image" $t.fuse.image | quote }}
  imagePullPolicy: {{ $t.fuse.image.pullPolicy }}
  restartPolicy: Always
  command:
    - /bin/sh
    - -ec
    - |
      {{- if eq $t.transport "rdma" }}
      ulimit -l unlimited
      {{- end }}
      {{- include "dynamo-offloading.threefs.detachMount" . | nindent 6 }}
      mkdir -p {{ $mp | quote }}
      exec {{ $t.fuse.binary }} --launcher_cfg /etc/3fs/launcher.toml
  securityContext:
    privileged: true
    runAsUser: 0
  resources:
    {{- toYaml $t.fuse.resources | nindent 4 }}
  startupProbe:
    exec:
      command:
        - /bin/sh
        - -c
        - {{ include "dynamo-offloading.threefs.mountIsLive" . | quote }}
    timeoutSeconds: 5
    {{- include "dynamo-offloading.probeBudget" (dict "seconds" $t.fuse.mountTimeoutSeconds "period" 5) | nindent 4 }}
  livenessProbe:
    exec:
      command:
        - /bin/sh
        - -c
        - {{ include "dynamo-offloading.threefs.mountIsLive" . | quote }}
    periodSeconds: 10
    timeoutSeconds: 5
    failureThreshold: 3
  lifecycle:
    preStop:
      exec:
        command: ["/bin/sh", "-c", {{ include "dynamo-offloading.threefs.detachMount" . | quote }}]
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
Volumes the sidecar and the worker use for 3FS. Context: a group.
*/}}
{{- define "dynamo-offloading.threefs.volumes" -}}
{{- $t := .Values.threefs -}}
- name: threefs-mount-root
  hostPath:
    path: {{ include "dynamo-offloading.threefs.hostDir" . }}
    type: DirectoryOrCreate
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
