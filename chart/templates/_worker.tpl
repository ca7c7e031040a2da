{{/*
The worker: model path, engine config, resources and probes. Every helper takes the root context.
*/}}

{{/*
Where the node's Hugging Face cache (HF_HOME) is mounted in the worker: the same path as on the host.
*/}}
{{- define "dynamo-offloading.worker.hfHome" -}}
{{- .Values.worker.model.cacheHostPath | trimSuffix "/" }}
{{- end }}

{{/*
The worker's network and DNS, shared by the pods that must stand where it stands (the pre-install Job).
*/}}
{{- define "dynamo-offloading.worker.network" -}}
hostNetwork: {{ .Values.worker.hostNetwork }}
dnsPolicy: {{ .Values.worker.dnsPolicy }}
{{- with .Values.worker.dnsConfig }}
dnsConfig:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The nodes the worker runs on, as far as the values say: worker.nodes, else the node worker.nodeSelector
pins it to by kubernetes.io/hostname. A JSON list, empty when they are not known.
*/}}
{{- define "dynamo-offloading.worker.nodes" -}}
{{- $nodes := .Values.worker.nodes | default list }}
{{- $pinned := get (.Values.worker.nodeSelector | default dict) "kubernetes.io/hostname" }}
{{- if and (not $nodes) $pinned }}
{{- $nodes = list $pinned }}
{{- end }}
{{- toJson $nodes }}
{{- end }}

{{/*
worker.affinity, with a node affinity to worker.nodes when it has none of its own: YAML of an Affinity,
shared by the worker pods and the pre-install Job that stands where they stand.
*/}}
{{- define "dynamo-offloading.worker.nodeAffinity" -}}
{{- $affinity := deepCopy (.Values.worker.affinity | default dict) }}
{{- if and .Values.worker.nodes (not (hasKey $affinity "nodeAffinity")) }}
{{- $term := dict "matchExpressions" (list (dict "key" "kubernetes.io/hostname" "operator" "In" "values" .Values.worker.nodes)) }}
{{- $_ := set $affinity "nodeAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (dict "nodeSelectorTerms" (list $term))) }}
{{- end }}
{{- if $affinity }}{{ toYaml $affinity }}{{ end }}
{{- end }}

{{/*
The nodes a group's workers may run on, for the post-delete cleanup: worker.nodes (or the hostname
nodeSelector), else the nodes that match worker.nodeSelector when the release is installed or upgraded
(a lookup: a node added later is covered from the next upgrade on; none under helm template). A JSON list.
*/}}
{{- define "dynamo-offloading.worker.placementNodes" -}}
{{- $nodes := include "dynamo-offloading.worker.nodes" . | fromJsonArray }}
{{- if not $nodes }}
{{- $selector := .Values.worker.nodeSelector | default dict }}
{{- range $node := (lookup "v1" "Node" "" "").items | default list }}
{{- $labels := $node.metadata.labels | default dict }}
{{- $matches := true }}
{{- range $key, $value := $selector }}
{{- if ne (get $labels $key) (toString $value) }}{{ $matches = false }}{{ end }}
{{- end }}
{{- if $matches }}{{ $nodes = append $nodes $node.metadata.name }}{{ end }}
{{- end }}
{{- end }}
{{- toJson $nodes }}
{{- end }}

{{/*
"true" when the worker publishes KV events (the line's kvEventFlags), else "": the KV router
(frontend.routerMode kv) routes by them. KVBM's consolidator then runs too, binding two more ports.
*/}}
{{- define "dynamo-offloading.worker.publishesKvEvents" -}}
{{- if eq .Values.frontend.routerMode "kv" }}true{{ end }}
{{- end }}

{{- define "dynamo-offloading.worker.servedModelName" -}}
{{- .Values.worker.model.servedModelName | default .Values.worker.model.repoId }}
{{- end }}

{{/*
The Dynamo endpoint the workers serving a model serve on, one per served model and named after it: groups
serving different models never share one (1.x refuses a second model on an endpoint, and 0.9 would send a
model's requests to the other model's workers too), and groups serving the same model make one pool.
Context: the served model name.
*/}}
{{- define "dynamo-offloading.worker.endpoint" -}}
dyn://dynamo.{{ include "dynamo-offloading.worker.endpointComponent" . }}.generate
{{- end }}

{{/*
The Dynamo component named after a served model: lower case, each run of characters Dynamo refuses in a
name (all but a-z, 0-9, - and _) made one -, without a leading or trailing - or _ (a leading _ is reserved).
Context: the served model name.
*/}}
{{- define "dynamo-offloading.worker.endpointComponent" -}}
{{- regexReplaceAll "[^a-z0-9_-]+" (lower .) "-" | trimAll "-_" }}
{{- end }}

{{/*
The names every worker group serves its model under, once each: what the frontend offers. A JSON list.
*/}}
{{- define "dynamo-offloading.worker.servedModelNames" -}}
{{- $names := list }}
{{- range $name := include "dynamo-offloading.worker.groupNames" . | fromJsonArray }}
{{- $g := dict }}
{{- include "dynamo-offloading.worker.groupContext" (dict "root" $ "name" $name "into" $g) }}
{{- $names = append $names (include "dynamo-offloading.worker.servedModelName" $g) }}
{{- end }}
{{- toJson ($names | uniq) }}
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
The engine's KV block size: kv_cache_config.tokens_per_block of the engine config, else TensorRT-LLM's default
(32, KvCacheConfig in tensorrt_llm/llmapi/llm_args.py). dynamo.trtllm registers and publishes KV events with its
own --kv-block-size (default 32) and drops every cached block of another size (dynamo/trtllm/publisher.py
_handle_kv_event), which would leave the KV router blind; the worker passes this one.
*/}}
{{- define "dynamo-offloading.worker.kvBlockSize" -}}
{{- $engine := include "dynamo-offloading.worker.engineConfig" . | fromYaml }}
{{- int (dig "kv_cache_config" "tokens_per_block" 32 $engine) }}
{{- end }}

{{/*
The worker's /dev/shm in GiB, rounded up: a memory volume, charged to the pod's memory.
*/}}
{{- define "dynamo-offloading.worker.shmGi" -}}
{{- if .Values.worker.shmSize }}
{{- ceil (divf (include "dynamo-offloading.quantityBytes" .Values.worker.shmSize | float64) 1073741824.0) | int }}
{{- else -}}
0
{{- end }}
{{- end }}

{{/*
Worker resources: GPUs, and a memory limit that leaves room for the pinned CPU tier and /dev/shm
unless the values set one.
*/}}
{{- define "dynamo-offloading.worker.resources" -}}
{{- $res := deepCopy .Values.worker.resources }}
{{- $limits := $res.limits | default (dict) }}
{{- $requests := $res.requests | default (dict) }}
{{- if not (hasKey $limits "memory") }}
{{- $memory := printf "%dGi" (add (include "dynamo-offloading.kvbm.cpuTierGi" . | int) (include "dynamo-offloading.worker.shmGi" . | int) (int .Values.worker.memoryHeadroomGi)) }}
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
The worker's liveness. With the disk tier on 3FS it also fails when the mountpoint is no longer a
live fuse.hf3fs mount (the sidecar probe's own test) or holds another mount than at start: KVBM's
open cache file is then unusable and only a restart recovers.
*/}}
{{- define "dynamo-offloading.worker.livenessProbe" -}}
{{- if include "dynamo-offloading.kvbm.diskOnThreefs" . }}
{{- $mp := include "dynamo-offloading.threefs.mountpoint" . -}}
exec:
  command:
    - /bin/sh
    - -c
    - >-
      { {{ include "dynamo-offloading.threefs.mountIsLive" . }}
      && [ "$(stat -c %d {{ include "dynamo-offloading.shellWord" $mp }})" = "$(cat /run/dynamo-offloading/mount-device)" ]; }
      || { printf '3FS mount %s is dead or was replaced\n' {{ include "dynamo-offloading.shellWord" $mp }}; exit 1; };
      curl -fsS -m 5 -o /dev/null http://127.0.0.1:{{ include "dynamo-offloading.worker.port" (list . "system") }}/live
{{- else -}}
httpGet:
  path: /live
  port: system
{{- end }}
{{- toYaml .Values.worker.livenessProbe | nindent 0 }}
{{- end }}

{{/*
The worker's start: ask the resolve sidecar for fresh addresses and take them with the model path,
wait for a live 3FS mount and record its device for the liveness probe, prepare the disk-tier
directory and, with a sparse tier, check the room on it, then run dynamo.trtllm with the container's args.
*/}}
{{- define "dynamo-offloading.worker.startScript" -}}
{{ include "dynamo-offloading.worker.requestAddresses" . }}
. /run/dynamo-offloading/worker.env
{{- if include "dynamo-offloading.kvbm.diskOnThreefs" . }}
{{ include "dynamo-offloading.worker.waitForMount" . }}
stat -c %d {{ include "dynamo-offloading.threefs.mountpoint" . | include "dynamo-offloading.shellWord" }} > /run/dynamo-offloading/mount-device
{{- end }}
{{- if include "dynamo-offloading.kvbm.tierOn" .Values.kvbm.diskCacheGB }}
{{ include "dynamo-offloading.kvbm.prepareDiskDir" . }}
{{- end }}
{{- if include "dynamo-offloading.kvbm.sparse" . }}
{{ include "dynamo-offloading.kvbm.checkDiskRoom" . }}
{{- end }}
exec python3 -m dynamo.trtllm {{ (include "dynamo-offloading.dynamo.line" . | fromJson).modelFlag }}="$MODEL_PATH" "$@"
{{- end }}

{{/*
Seconds one handoff of the resolve sidecar may take: the wait for etcd and NATS, then for each of the two
a last try past it, of two API calls and two protocol exchanges, each bounded by hooks.timeoutSeconds.
*/}}
{{- define "dynamo-offloading.worker.resolveSeconds" -}}
{{- add (int .Values.hooks.workerInit.waitSeconds) (mul 8 (int .Values.hooks.timeoutSeconds)) }}
{{- end }}

{{/*
Shell lines that ask the resolve sidecar to resolve etcd and NATS again, since this start may follow a
restart after their pods moved, and wait for its answer: a failure (a required peer that never answered)
fails the start; no answer in time starts with the addresses it last resolved.
*/}}
{{- define "dynamo-offloading.worker.requestAddresses" -}}
{{- $wait := include "dynamo-offloading.worker.resolveSeconds" . -}}
token="$(cat /proc/sys/kernel/random/uuid)"
echo "$token" > /run/dynamo-offloading/resolve-request
waited=0
until grep -qx "# answer: $token" /run/dynamo-offloading/worker.env; do
  if grep -q "^# failed: $token: " /run/dynamo-offloading/worker.env; then
    sed -n "s/^# failed: $token: //p" /run/dynamo-offloading/worker.env >&2
    exit 1
  fi
  if [ "$waited" -ge {{ $wait }} ]; then
    echo "the resolve sidecar did not answer in {{ $wait }} s; starting with the addresses it last resolved" >&2
    break
  fi
  sleep 1
  waited=$((waited + 1))
done
{{- end }}

{{/*
Shell lines that hold the start until the mountpoint is a live fuse.hf3fs mount, for as long as the
sidecar may take to mount: after a sidecar restart the kubelet restarts the worker at once, and a start
on the bare staging directory would write the disk tier onto the node.
*/}}
{{- define "dynamo-offloading.worker.waitForMount" -}}
{{- $mp := include "dynamo-offloading.threefs.mountpoint" . -}}
{{- $wait := int .Values.threefs.fuse.mountTimeoutSeconds -}}
waited=0
until {{ include "dynamo-offloading.threefs.mountIsLive" . }} 2>/dev/null; do
  if [ "$waited" -ge {{ $wait }} ]; then
    printf '3FS is not mounted at %s after {{ $wait }} s; not starting on the node'"'"'s disk\n' {{ include "dynamo-offloading.shellWord" $mp }} >&2
    exit 1
  fi
  [ "$waited" -gt 0 ] || printf 'waiting for the 3FS mount at %s\n' {{ include "dynamo-offloading.shellWord" $mp }}
  sleep 1
  waited=$((waited + 1))
done
{{- end }}

{{/*
The resolve sidecar (a native sidecar, so it starts before the worker and runs beside it): it resolves
etcd and NATS (their pod IPs change when their pods restart) and waits for them, finds the model's
snapshot in the node's cache, and hands both to the worker in /run/dynamo-offloading/worker.env; its
startup probe holds the worker until then. It does so again for each start of the worker container,
which writes a request token to /run/dynamo-offloading/resolve-request (worker.requestAddresses).
*/}}
{{- define "dynamo-offloading.worker.resolveContainer" -}}
{{- $m := .Values.worker.model -}}
{{- $resolves := include "dynamo-offloading.hooks.discoveryNamespaces" . | fromJsonArray -}}
{{- $mounts := list (dict "name" "handoff" "mountPath" "/run/dynamo-offloading") (dict "name" "hf-cache" "mountPath" (include "dynamo-offloading.worker.hfHome" .) "readOnly" true) }}
{{- if $resolves }}
{{- $mounts = concat $mounts (list (dict "name" "endpoints-record" "mountPath" "/etc/dynamo-offloading/record" "readOnly" true) (dict "name" "kube-api-access" "mountPath" "/var/run/secrets/kubernetes.io/serviceaccount" "readOnly" true)) }}
{{- end -}}
- name: resolve
  {{- include "dynamo-offloading.hooks.container" (dict "root" $ "peers" true "dns" (not .Values.worker.hostNetwork) "mounts" (toYaml $mounts)) | trim | nindent 2 }}
  restartPolicy: Always
  startupProbe:
    exec:
      command: [test, -s, /run/dynamo-offloading/worker.env]
    {{- include "dynamo-offloading.probeBudget" (dict "seconds" (include "dynamo-offloading.worker.resolveSeconds" .) "period" 2) | nindent 4 }}
  args:
    - worker-init
    {{- include "dynamo-offloading.hooks.peerArgs" . | trim | nindent 4 }}
    - --wait={{ .Values.hooks.workerInit.waitSeconds }}
    - --hf-home={{ include "dynamo-offloading.worker.hfHome" . }}
    - --model-repo={{ $m.repoId }}
    - --model-revision={{ $m.revision }}
    {{- with $m.snapshot }}
    - --model-snapshot={{ . }}
    {{- end }}
    {{- if $resolves }}
    - --record-dir=/etc/dynamo-offloading/record
    - --record-name={{ include "dynamo-offloading.hooks.recordName" . }}
    {{- end }}
    - --output=/run/dynamo-offloading/worker.env
    - --serve=/run/dynamo-offloading/resolve-request
{{- end }}

{{/*
Volumes of the resolve sidecar: the hook's record (optional: absent after --no-hooks) and the
API token, projected here because the pod does not automount it (the worker container mounts it too for
Kubernetes discovery).
*/}}
{{- define "dynamo-offloading.worker.resolveVolumes" -}}
{{- include "dynamo-offloading.hooks.volumes" . }}
{{- if include "dynamo-offloading.hooks.discoveryNamespaces" . | fromJsonArray }}
- name: endpoints-record
  configMap:
    name: {{ include "dynamo-offloading.hooks.recordName" . }}
    optional: true
{{- end }}
{{- if or (include "dynamo-offloading.hooks.discoveryNamespaces" . | fromJsonArray) (include "dynamo-offloading.dynamo.kubernetesDiscovery" .) }}
{{ include "dynamo-offloading.kubeApiAccess.volume" . }}
{{- end }}
{{- end }}
