{{/*
The worker: model path, engine config, resources and probes. Every helper takes the root context.
*/}}

{{- define "dynamo-offloading.worker.fullname" -}}
{{- include "dynamo-offloading.component.fullname" (dict "root" . "component" "worker") }}
{{- end }}

{{/*
Where the node's Hugging Face cache (HF_HOME) is mounted in the worker: the same path as on the host.
*/}}
{{- define "dynamo-offloading.worker.hfHome" -}}
{{- .Values.worker.model.cacheHostPath | trimSuffix "/" }}
{{- end }}

{{/*
--model-path: the full local snapshot, so the worker never asks the Hub (hostNetwork pods may
not resolve huggingface.co).
*/}}
{{- define "dynamo-offloading.worker.modelPath" -}}
{{- $m := .Values.worker.model }}
{{- printf "%s/hub/models--%s/snapshots/%s" (include "dynamo-offloading.worker.hfHome" .) ($m.repoId | replace "/" "--") $m.snapshot }}
{{- end }}

{{- define "dynamo-offloading.worker.servedModelName" -}}
{{- .Values.worker.model.servedModelName | default .Values.worker.model.repoId }}
{{- end }}

{{/*
TRT-LLM engine config: the seed's engine settings, the KVBM connector, then extraEngineArgs.
*/}}
{{- define "dynamo-offloading.worker.engineConfig" -}}
{{- $connector := dict
      "connector_module" "kvbm.trtllm_integration.connector"
      "connector_scheduler_class" "DynamoKVBMConnectorLeader"
      "connector_worker_class" "DynamoKVBMConnectorWorker" }}
{{- $kvbm := dict "kv_connector_config" $connector "kv_cache_config" (dict "enable_partial_reuse" false) }}
{{- toYaml (mustMergeOverwrite (deepCopy .Values.worker.engine) $kvbm (deepCopy .Values.worker.extraEngineArgs)) }}
{{- end }}

{{/*
Worker resources: GPUs, and a memory limit that leaves room for the pinned CPU tier unless
the values set one.
*/}}
{{- define "dynamo-offloading.worker.resources" -}}
{{- $res := deepCopy .Values.worker.resources }}
{{- $limits := $res.limits | default (dict) }}
{{- $requests := $res.requests | default (dict) }}
{{- if not (hasKey $limits "memory") }}
{{- $memory := printf "%dGi" (add (include "dynamo-offloading.kvbm.cpuTierGi" . | int) (int .Values.worker.memoryHeadroomGi)) }}
{{- $_ := set $limits "memory" $memory }}
{{- if not (hasKey $requests "memory") }}
{{- $_ := set $requests "memory" $memory }}
{{- end }}
{{- end }}
{{- if .Values.worker.gpus }}
{{- $_ := set $limits "nvidia.com/gpu" (int .Values.worker.gpus) }}
{{- end }}
{{- toYaml (dict "limits" $limits "requests" $requests) }}
{{- end }}

{{/*
The worker's liveness. With the disk tier on 3FS it also fails when the mount under the cache
dir is dead (stat fails) or replaced (another device than at start): KVBM's open cache file is
then unusable and only a restart recovers.
*/}}
{{- define "dynamo-offloading.worker.livenessProbe" -}}
{{- if include "dynamo-offloading.kvbm.diskOnThreefs" . }}
{{- $mp := include "dynamo-offloading.threefs.mountpoint" . -}}
exec:
  command:
    - /bin/sh
    - -c
    - >-
      [ "$(stat -c %d {{ $mp | quote }})" = "$(cat /run/dynamo-offloading/mount-device)" ]
      || { echo "3FS mount {{ $mp }} is dead or was replaced"; exit 1; };
      curl -fsS -m 5 -o /dev/null http://127.0.0.1:{{ .Values.worker.systemPort }}/live
{{- else -}}
httpGet:
  path: /live
  port: system
{{- end }}
{{- toYaml .Values.worker.livenessProbe | nindent 0 }}
{{- end }}

{{/*
The worker's start: record the 3FS mount's device for the liveness probe, then run dynamo.trtllm
with the container's args.
*/}}
{{- define "dynamo-offloading.worker.startScript" -}}
{{- if include "dynamo-offloading.kvbm.diskOnThreefs" . -}}
stat -c %d {{ include "dynamo-offloading.threefs.mountpoint" . | quote }} > /run/dynamo-offloading/mount-device
mkdir -p {{ .Values.kvbm.diskCacheDir | quote }}
{{- end }}
exec python3 -m dynamo.trtllm "$@"
{{- end }}
