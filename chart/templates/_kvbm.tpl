{{/*
KVBM tiers, switches and the startup budget they imply. Every helper takes the root context.
*/}}

{{/*
A tier's size in GB as a float; null counts as 0. Context: the value.
*/}}
{{- define "dynamo-offloading.kvbm.gb" -}}
{{- float64 (. | default 0) }}
{{- end }}

{{/*
"true" when a tier is on (above 0 GB), else "". Context: the value.
*/}}
{{- define "dynamo-offloading.kvbm.tierOn" -}}
{{- if gt (include "dynamo-offloading.kvbm.gb" . | float64) 0.0 }}true{{ end }}
{{- end }}

{{/*
"true" when the disk tier's directory is on the 3FS FUSE mount, else "".
*/}}
{{- define "dynamo-offloading.kvbm.diskOnThreefs" -}}
{{- $onMount := include "dynamo-offloading.pathUnder" (list .Values.kvbm.diskCacheDir (include "dynamo-offloading.threefs.mountpoint" .)) }}
{{- if and .Values.threefs.enabled (include "dynamo-offloading.kvbm.tierOn" .Values.kvbm.diskCacheGB) $onMount }}true{{ end }}
{{- end }}

{{/*
"true" when the disk tier is on and backed by a host directory instead of 3FS, else "".
*/}}
{{- define "dynamo-offloading.kvbm.diskOnLocalDisk" -}}
{{- if and (include "dynamo-offloading.kvbm.tierOn" .Values.kvbm.diskCacheGB) (not (include "dynamo-offloading.kvbm.diskOnThreefs" .)) }}true{{ end }}
{{- end }}

{{/*
Effective value of a presence-tested KVBM switch: the value when set, else on when the disk
tier is on 3FS (FUSE has neither fallocate nor a working O_DIRECT path for KVBM).
Context: (dict "root" $ "value" .Values.kvbm.diskDisableODirect).
*/}}
{{- define "dynamo-offloading.kvbm.switchOn" -}}
{{- if kindIs "invalid" .value }}
{{- include "dynamo-offloading.kvbm.diskOnThreefs" .root }}
{{- else if .value }}true{{ end }}
{{- end }}

{{/*
Seconds KVBM needs to allocate the disk tier: GB / (GB per minute), rounded up.
*/}}
{{- define "dynamo-offloading.kvbm.allocationSeconds" -}}
{{- $gb := include "dynamo-offloading.kvbm.gb" .Values.kvbm.diskCacheGB | float64 }}
{{- ceil (divf (mulf $gb 60.0) (float64 .Values.worker.startup.diskWriteGBPerMinute)) | int }}
{{- end }}

{{/*
The worker's startup budget in seconds: model load + disk-tier allocation + margin.
*/}}
{{- define "dynamo-offloading.worker.startupBudgetSeconds" -}}
{{- $s := .Values.worker.startup }}
{{- add (int $s.modelLoadSeconds) (include "dynamo-offloading.kvbm.allocationSeconds" . | int) (int $s.marginSeconds) }}
{{- end }}

{{/*
DYN_KVBM_LEADER_WORKER_INIT_TIMEOUT_SECS: the value when set, else allocation + margin,
never below KVBM's own default of 1800 s.
*/}}
{{- define "dynamo-offloading.kvbm.initTimeoutSeconds" -}}
{{- if kindIs "invalid" .Values.kvbm.leaderWorkerInitTimeoutSeconds }}
{{- max 1800 (add (include "dynamo-offloading.kvbm.allocationSeconds" . | int) (int .Values.worker.startup.marginSeconds)) }}
{{- else }}
{{- int .Values.kvbm.leaderWorkerInitTimeoutSeconds }}
{{- end }}
{{- end }}

{{/*
Pinned CPU tier in GiB, rounded up (the tier is given in decimal GB).
*/}}
{{- define "dynamo-offloading.kvbm.cpuTierGi" -}}
{{- ceil (divf (mulf (include "dynamo-offloading.kvbm.gb" .Values.kvbm.cpuCacheGB | float64) 1000000000.0) 1073741824.0) | int }}
{{- end }}

{{/*
The disk tier's directory of one worker: its own below kvbm.diskCacheDir, since 3FS is shared by
every worker (and release). The kubelet expands $(POD_NAMESPACE) and $(POD_NAME).
*/}}
{{- define "dynamo-offloading.kvbm.workerCacheDir" -}}
{{- printf "%s/$(POD_NAMESPACE)/$(POD_NAME)" (.Values.kvbm.diskCacheDir | trimSuffix "/") }}
{{- end }}

{{/*
Shell lines the worker runs before KVBM starts: create its own cache directory and clear the cache
files a worker killed mid-allocation left there (KVBM unlinks its file only after registering it,
and allocates a new one at every start). Another worker's directory is never touched.
*/}}
{{- define "dynamo-offloading.kvbm.prepareDiskDir" -}}
mkdir -p "$DYN_KVBM_DISK_CACHE_DIR"
rm -f "$DYN_KVBM_DISK_CACHE_DIR"/dynamo-kvbm-disk-cache-*
{{- end }}

{{/*
The worker's KVBM environment. Presence-tested switches appear only when on.
*/}}
{{- define "dynamo-offloading.kvbm.env" -}}
{{- $k := .Values.kvbm -}}
{{- if include "dynamo-offloading.kvbm.tierOn" $k.cpuCacheGB }}
- name: DYN_KVBM_CPU_CACHE_GB
  value: {{ toString $k.cpuCacheGB | quote }}
{{- end }}
{{- if include "dynamo-offloading.kvbm.tierOn" $k.diskCacheGB }}
- name: DYN_KVBM_DISK_CACHE_GB
  value: {{ toString $k.diskCacheGB | quote }}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: DYN_KVBM_DISK_CACHE_DIR
  value: {{ include "dynamo-offloading.kvbm.workerCacheDir" . | quote }}
{{- end }}
{{- if include "dynamo-offloading.kvbm.switchOn" (dict "root" . "value" $k.diskDisableODirect) }}
- name: DYN_KVBM_DISK_DISABLE_O_DIRECT
  value: "true"
{{- end }}
{{- if include "dynamo-offloading.kvbm.switchOn" (dict "root" . "value" $k.diskZerofillFallback) }}
- name: DYN_KVBM_DISK_ZEROFILL_FALLBACK
  value: "true"
{{- end }}
{{- if $k.metrics.enabled }}
- name: DYN_KVBM_METRICS
  value: "true"
- name: DYN_KVBM_METRICS_PORT
  value: {{ $k.metrics.port | quote }}
{{- end }}
- name: DYN_KVBM_LEADER_ZMQ_PUB_PORT
  value: {{ $k.leaderZmqPubPort | quote }}
- name: DYN_KVBM_LEADER_ZMQ_ACK_PORT
  value: {{ $k.leaderZmqAckPort | quote }}
- name: DYN_KVBM_LEADER_WORKER_INIT_TIMEOUT_SECS
  value: {{ include "dynamo-offloading.kvbm.initTimeoutSeconds" . | quote }}
{{- with $k.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
