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
"true" when KVBM without GPUDirect Storage reads the disk tier back into the GPU as stale KV, else "": measured
(make kvbm-gpu) on Dynamo 0.9 wherever the tier is, and on 1.6 on a local filesystem but not on FUSE.
*/}}
{{- define "dynamo-offloading.kvbm.diskReadsStale" -}}
{{- if include "dynamo-offloading.kvbm.tierOn" .Values.kvbm.diskCacheGB }}
{{- if or (eq (toString .Values.dynamo.release) "0.9") (include "dynamo-offloading.kvbm.diskOnLocalDisk" .) }}true{{ end }}
{{- end }}
{{- end }}

{{/*
Effective value of a presence-tested KVBM switch: the value when set, else on when the disk
tier is on 3FS (FUSE has no working O_DIRECT path for KVBM).
Context: (dict "root" $ "value" .Values.kvbm.diskDisableODirect).
*/}}
{{- define "dynamo-offloading.kvbm.switchOn" -}}
{{- if kindIs "invalid" .value }}
{{- include "dynamo-offloading.kvbm.diskOnThreefs" .root }}
{{- else if .value }}true{{ end }}
{{- end }}

{{/*
"true" when KVBM writes its disk-tier file whole at each start, else "": kvbm.diskAllocation zerofill with
the tier on 3FS, which has no fallocate (elsewhere fallocate reserves the space at once in either mode).
*/}}
{{- define "dynamo-offloading.kvbm.zerofill" -}}
{{- if and (eq .Values.kvbm.diskAllocation "zerofill") (include "dynamo-offloading.kvbm.diskOnThreefs" .) }}true{{ end }}
{{- end }}

{{/*
"true" when the disk-tier file is sparse on 3FS (kvbm.diskAllocation sparse), else "": its space is taken
only as blocks are written, so the start checks the room left (kvbm.checkDiskRoom).
*/}}
{{- define "dynamo-offloading.kvbm.sparse" -}}
{{- if and (eq .Values.kvbm.diskAllocation "sparse") (include "dynamo-offloading.kvbm.diskOnThreefs" .) }}true{{ end }}
{{- end }}

{{/*
Seconds KVBM needs to allocate the disk tier at a start: GB / (GB per minute), rounded up, when it
zero-fills the file; 0 otherwise (fallocate or a sparse file take seconds).
*/}}
{{- define "dynamo-offloading.kvbm.allocationSeconds" -}}
{{- if include "dynamo-offloading.kvbm.zerofill" . }}
{{- $gb := include "dynamo-offloading.kvbm.gb" .Values.kvbm.diskCacheGB | float64 }}
{{- ceil (divf (mulf $gb 60.0) (float64 .Values.worker.startup.diskWriteGBPerMinute)) | int }}
{{- else -}}
0
{{- end }}
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
"true" when any worker group serves KVBM's metrics, else "": the Service and the PodMonitor name the port then.
*/}}
{{- define "dynamo-offloading.kvbm.anyMetrics" -}}
{{- range $name := include "dynamo-offloading.worker.groupNames" . | fromJsonArray }}
{{- $g := dict }}
{{- include "dynamo-offloading.worker.groupContext" (dict "root" $ "name" $name "into" $g) }}
{{- if $g.Values.kvbm.metrics.enabled }}true{{ end }}
{{- end }}
{{- end }}

{{/*
Bytes of disk tier that the release's workers on 3FS hold once their files are written: every group's
replicas x kvbm.diskCacheGB. They share one filesystem, whatever node they run on.
*/}}
{{- define "dynamo-offloading.kvbm.sharedDiskBytes" -}}
{{- $root := .Group.root }}
{{- $bytes := 0.0 }}
{{- range $name := include "dynamo-offloading.worker.groupNames" $root | fromJsonArray }}
{{- $g := dict }}
{{- include "dynamo-offloading.worker.groupContext" (dict "root" $root "name" $name "into" $g) }}
{{- if include "dynamo-offloading.kvbm.diskOnThreefs" $g }}
{{- $bytes = addf $bytes (mulf (float64 $g.Values.worker.replicas) (include "dynamo-offloading.kvbm.gb" $g.Values.kvbm.diskCacheGB | float64) 1e9) }}
{{- end }}
{{- end }}
{{- printf "%.0f" $bytes }}
{{- end }}

{{/*
Shell lines that fail the start when the filesystem under the disk tier lacks room for the sparse files
of every worker sharing it. KVBM unlinks its file once registered, so the others' files cannot be
measured: the space used on the filesystem counts as theirs, up to their tiers (exact on a filesystem
that holds only the caches, optimistic on one shared with other data).
*/}}
{{- define "dynamo-offloading.kvbm.checkDiskRoom" -}}
{{- $own := printf "%.0f" (mulf (include "dynamo-offloading.kvbm.gb" .Values.kvbm.diskCacheGB | float64) 1e9) }}
room="$(stat -f -c '%S %b %f %a' "$DYN_KVBM_DISK_CACHE_DIR")"
printf '%s\n' "$room" | awk -v own={{ $own }} -v all={{ include "dynamo-offloading.kvbm.sharedDiskBytes" . }} -v dir="$DYN_KVBM_DISK_CACHE_DIR" '{
  used = ($2 - $3) * $1; others = all - own; held = (used < others) ? used : others
  need = all - held; avail = $4 * $1
  if (avail < need) {
    printf "kvbm.diskAllocation sparse: %s has %.1f GB free, but the disk tiers of the workers sharing it (%.1f GB in all, %.1f GB of it possibly written) may still take %.1f GB; lower kvbm.diskCacheGB or the replicas, make room, or use kvbm.diskAllocation zerofill, which reserves the space at each start\n", dir, avail / 1e9, all / 1e9, held / 1e9, need / 1e9 > "/dev/stderr"
    exit 1
  }
}'
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
{{- /* $(POD_NAMESPACE) and $(POD_NAME): set first in the worker's environment (podIdentity.env). */}}
- name: DYN_KVBM_DISK_CACHE_DIR
  value: {{ include "dynamo-offloading.kvbm.workerCacheDir" . | quote }}
{{- end }}
{{- if include "dynamo-offloading.kvbm.switchOn" (dict "root" . "value" $k.diskDisableODirect) }}
- name: DYN_KVBM_DISK_DISABLE_O_DIRECT
  value: "true"
{{- end }}
{{- if include "dynamo-offloading.kvbm.zerofill" . }}
- name: DYN_KVBM_DISK_ZEROFILL_FALLBACK
  value: "true"
{{- end }}
{{- if and (include "dynamo-offloading.kvbm.tierOn" $k.diskCacheGB) (not $k.diskOffloadFilter) }}
- name: DYN_KVBM_DISABLE_DISK_OFFLOAD_FILTER
  value: "true"
{{- end }}
{{- if $k.metrics.enabled }}
- name: DYN_KVBM_METRICS
  value: "true"
- name: DYN_KVBM_METRICS_PORT
  value: {{ include "dynamo-offloading.worker.port" (list . "kvbm-metrics") | quote }}
{{- end }}
- name: DYN_KVBM_LEADER_ZMQ_PUB_PORT
  value: {{ include "dynamo-offloading.worker.port" (list . "kvbm-zmq-pub") | quote }}
- name: DYN_KVBM_LEADER_ZMQ_ACK_PORT
  value: {{ include "dynamo-offloading.worker.port" (list . "kvbm-zmq-ack") | quote }}
{{- if include "dynamo-offloading.worker.publishesKvEvents" . }}
- name: DYN_KVBM_TRTLLM_ZMQ_PORT
  value: {{ include "dynamo-offloading.worker.port" (list . "trtllm-events") | quote }}
{{- end }}
- name: DYN_KVBM_LEADER_WORKER_INIT_TIMEOUT_SECS
  value: {{ include "dynamo-offloading.kvbm.initTimeoutSeconds" . | quote }}
{{- with $k.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
