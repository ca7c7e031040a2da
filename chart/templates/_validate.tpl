{{/*
Cross-field rules a JSON Schema cannot say, in one home: the generator's check applies them to the
environments in values/ by rendering the chart. Every problem is collected, then one fail reports them all.
The rules of one worker group run for each group, and a group's messages start with its name.
*/}}
{{- define "dynamo-offloading.validateValues" -}}
{{- $messages := list }}
{{- range $rule := list "podSecurity" "releaseLine" "lineChange" "persistence" "hooksImage" "threefs" "connections" "dynamoClients" "dns" "portPlan" "networkPolicy" "alerts" "infraNames" "endpoints" }}
{{- $messages = concat $messages (include (printf "dynamo-offloading.validateValues.%s" $rule) $ | splitList "\n" | compact) }}
{{- end }}
{{- range $name := include "dynamo-offloading.worker.groupNames" . | fromJsonArray }}
{{- $g := dict }}
{{- include "dynamo-offloading.worker.groupContext" (dict "root" $ "name" $name "into" $g) }}
{{- range $rule := list "workerName" "snapshot" "kvbmTiers" "diskWithoutGDS" "diskOnThreefs" "workerNodes" "ports" "startup" "memory" "parallelism" "kvBlockSize" "startPolicy" }}
{{- range include (printf "dynamo-offloading.validateValues.%s" $rule) $g | splitList "\n" | compact }}
{{- $messages = append $messages (ternary (printf "worker.groups.%s: %s" $name .) . (ne $name "")) }}
{{- end }}
{{- end }}
{{- end }}
{{- if $messages }}
{{- fail (printf "\nVALUES VALIDATION:\n%s" (join "\n" $messages)) }}
{{- end }}
{{- end }}

{{/*
The release namespace's PodSecurity level, read from the cluster at install (nothing under helm template):
the worker mounts host paths and, in most setups, uses the host network and a privileged FUSE sidecar,
which only the privileged level admits. Failing here beats a hook Job that can never start.
*/}}
{{- define "dynamo-offloading.validateValues.podSecurity" -}}
{{- $ns := lookup "v1" "Namespace" "" .Release.Namespace | default dict }}
{{- $level := dig "metadata" "labels" "pod-security.kubernetes.io/enforce" "" $ns }}
{{- if and $level (ne $level "privileged") }}
namespace {{ .Release.Namespace }}: its label pod-security.kubernetes.io/enforce={{ $level }} rejects the worker pods (host paths{{ if .Values.worker.hostNetwork }}, host network{{ end }}{{ if .Values.threefs.enabled }}, a privileged FUSE sidecar{{ end }}); kubectl label namespace {{ .Release.Namespace }} pod-security.kubernetes.io/enforce=privileged --overwrite
{{- end }}
{{- end }}

{{/*
The embedded etcd and NATS StatefulSets already in the cluster (read at upgrade, nothing under helm
template): their volumeClaimTemplates cannot change, so a new persistence setting would fail the upgrade
half-way instead.
*/}}
{{- define "dynamo-offloading.validateValues.persistence" -}}
{{- range $name := include "dynamo-offloading.dynamo.peers" . | fromJsonArray }}
{{- $embedded := get (get $.Values $name) "embedded" }}
{{- $sts := include "dynamo-offloading.component.fullname" (dict "root" $ "component" $name) }}
{{- $live := lookup "apps/v1" "StatefulSet" $.Release.Namespace $sts | default dict }}
{{- if and $embedded.enabled $live }}
{{- $claim := first (dig "spec" "volumeClaimTemplates" list $live) | default dict }}
{{- $size := dig "spec" "resources" "requests" "storage" "0" $claim }}
{{- $class := dig "spec" "storageClassName" "" $claim }}
{{- $p := $embedded.persistence }}
{{- $sameSize := eq (include "dynamo-offloading.quantityBytes" $size) (include "dynamo-offloading.quantityBytes" $p.size) }}
{{- if not (ternary (and $claim $sameSize (eq $class $p.storageClass)) (not $claim) $p.enabled) }}
{{ $name }}.embedded.persistence: the StatefulSet {{ $sts }} has {{ if $claim }}a data claim of {{ $size }}{{ with $class }} of StorageClass {{ . }}{{ end }}{{ else }}no data claim{{ end }}, and a StatefulSet's volumeClaimTemplates cannot change; keep the values that made it, or delete it but not its pods and claims (kubectl -n {{ $.Release.Namespace }} delete statefulset {{ $sts }} --cascade=orphan) and upgrade again
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The StatefulSet controller labels each pod with <StatefulSet>-<10-character hash>, and a label value holds 63
characters: a longer name would leave the StatefulSet without pods. Context: (dict "name" "..." "shorten" "...").
*/}}
{{- define "dynamo-offloading.validate.statefulSetName" -}}
{{- if gt (len .name) 52 }}
StatefulSet {{ .name }}: {{ len .name }} characters, and a StatefulSet's pods need a name of at most 52; shorten {{ .shorten }}
{{- end }}
{{- end }}

{{- define "dynamo-offloading.validateValues.workerName" -}}
{{- $shorten := printf "the release name or fullnameOverride%s" (ternary "" (printf ", or the group name %s" .Group.name) (eq .Group.name "")) }}
{{- include "dynamo-offloading.validate.statefulSetName" (dict "name" (include "dynamo-offloading.worker.fullname" .) "shorten" $shorten) }}
{{- end }}

{{/*
A snapshot hash belongs to one repo: a group that serves another model than worker.model.repoId must not
inherit worker.model.snapshot.
*/}}
{{- define "dynamo-offloading.validateValues.snapshot" -}}
{{- $root := .Group.root.Values.worker.model }}
{{- $own := dig "model" dict (get (.Group.root.Values.worker.groups | default dict) .Group.name | default dict) }}
{{- if and $root.snapshot (ne .Values.worker.model.repoId $root.repoId) (not (hasKey $own "snapshot")) }}
worker.model.snapshot: {{ $root.snapshot }} is a snapshot of {{ $root.repoId }}, not of {{ .Values.worker.model.repoId }}; set worker.groups.{{ .Group.name }}.model.snapshot (or "" to resolve its revision on the node)
{{- end }}
{{- end }}

{{- define "dynamo-offloading.validateValues.infraNames" -}}
{{- range $name := include "dynamo-offloading.dynamo.peers" . | fromJsonArray }}
{{- if (get (get $.Values $name) "embedded").enabled }}
{{ include "dynamo-offloading.validate.statefulSetName" (dict "name" (include "dynamo-offloading.component.fullname" (dict "root" $ "component" $name)) "shorten" "the release name or fullnameOverride") }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The group's StatefulSet already in the cluster (read at upgrade, nothing under helm template): its
podManagementPolicy cannot change, so a new one would fail the upgrade half-way instead.
*/}}
{{- define "dynamo-offloading.validateValues.startPolicy" -}}
{{- $sts := include "dynamo-offloading.worker.fullname" . }}
{{- $live := lookup "apps/v1" "StatefulSet" .Release.Namespace $sts | default dict }}
{{- $policy := dig "spec" "podManagementPolicy" "" $live }}
{{- if and $policy (ne $policy .Values.worker.podManagementPolicy) }}
worker.podManagementPolicy: the StatefulSet {{ $sts }} starts its workers {{ $policy }}, and a StatefulSet's podManagementPolicy cannot change; keep {{ $policy }}, or delete it (kubectl -n {{ .Release.Namespace }} delete statefulset {{ $sts }}: its workers stop) and upgrade again
{{- end }}
{{- end }}

{{/*
Host-network workers stream their responses back to the frontend, and with the pre-install Job beside them
reach an embedded etcd or NATS, from their nodes' addresses, which only networkPolicy.nodeCIDRs can admit.
*/}}
{{- define "dynamo-offloading.validateValues.networkPolicy" -}}
{{- if and .Values.networkPolicy.enabled .Values.worker.hostNetwork (not .Values.networkPolicy.nodeCIDRs) }}
networkPolicy.nodeCIDRs: required with networkPolicy.enabled and worker.hostNetwork: host-network pods are not matched by pod selectors, and the workers connect to the frontend (and to an embedded etcd and NATS) from their nodes' addresses; list them, e.g. --set networkPolicy.nodeCIDRs={10.0.0.0/16}
{{- end }}
{{- end }}

{{/*
The alerts select the series of the chart's own ServiceMonitor and PodMonitor by their jobs.
*/}}
{{- define "dynamo-offloading.validateValues.alerts" -}}
{{- $m := .Values.metrics }}
{{- if and $m.prometheusRule.enabled (not (and $m.serviceMonitor.enabled $m.podMonitor.enabled)) }}
metrics.prometheusRule.enabled: its alerts select the series that the chart's ServiceMonitor and PodMonitor scrape (their jobs); set metrics.serviceMonitor.enabled=true and metrics.podMonitor.enabled=true too
{{- end }}
{{- end }}

{{- define "dynamo-offloading.validateValues.hooksImage" -}}
{{- $image := .Values.hooks.image }}
{{- if and (not $image.registry) (not (contains "/" $image.repository)) }}
hooks.image.registry: required, the registry the hooks image was pushed to (make push REGISTRY=host:port); --set hooks.image.registry=host:port, or name the registry in hooks.image.repository
{{- end }}
{{- end }}

{{- define "dynamo-offloading.validateValues.kvbmTiers" -}}
{{- $cpu := include "dynamo-offloading.kvbm.gb" .Values.kvbm.cpuCacheGB | float64 }}
{{- $disk := include "dynamo-offloading.kvbm.gb" .Values.kvbm.diskCacheGB | float64 }}
{{- if and (le $cpu 0.0) (le $disk 0.0) }}
kvbm.cpuCacheGB, kvbm.diskCacheGB: KVBM needs at least one tier; set --set kvbm.cpuCacheGB=20 and/or --set kvbm.diskCacheGB=50
{{- else if and (gt $disk 0.0) (lt $disk $cpu) }}
kvbm.diskCacheGB: the disk tier ({{ .Values.kvbm.diskCacheGB }} GB) is smaller than the CPU tier ({{ .Values.kvbm.cpuCacheGB }} GB); KVBM is write-through, so set kvbm.diskCacheGB >= kvbm.cpuCacheGB
{{- end }}
{{- end }}

{{/*
Where KVBM, without GPUDirect Storage, reads its disk tier back into the GPU as stale KV (kvbm.diskReadsStale).
*/}}
{{- define "dynamo-offloading.validateValues.diskWithoutGDS" -}}
{{- $k := .Values.kvbm }}
{{- if and (include "dynamo-offloading.kvbm.diskReadsStale" .) (not $k.allowDiskTierWithoutGDS) }}
{{- $ways := printf "set --set kvbm.diskCacheGB=0, or --set kvbm.allowDiskTierWithoutGDS=true where the nodes have GPUDirect Storage for %s or to accept stale disk hits" $k.diskCacheDir }}
{{- if eq (toString .Values.dynamo.release) "0.9" }}
kvbm.diskCacheGB: Dynamo 0.9's KVBM reads its disk tier back into the GPU only through GPUDirect Storage, which 3FS's FUSE mount lacks; without it every disk hit runs the request on stale KV (measured: the chart README's KVBM section, ai-dynamo/dynamo#15079); {{ $ways }}
{{- else }}
kvbm.diskCacheDir: {{ $k.diskCacheDir }} is a local disk tier, and Dynamo 1.6's KVBM, without GPUDirect Storage, read a disk tier on a local filesystem back into the GPU as stale KV (its GPUDirect Storage file registration failed; measured: the chart README's KVBM section), while on a FUSE mount as 3FS's it read right; put the disk tier on 3FS (threefs.enabled, kvbm.diskCacheDir under its mountpoint), or {{ $ways }}
{{- end }}
{{- end }}
{{- end }}

{{- define "dynamo-offloading.validateValues.diskOnThreefs" -}}
{{- $k := .Values.kvbm }}
{{- $t := .Values.threefs }}
{{- $disk := include "dynamo-offloading.kvbm.tierOn" $k.diskCacheGB }}
{{- $mp := include "dynamo-offloading.threefs.mountpoint" . }}
{{- $inRoot := include "dynamo-offloading.pathUnder" (list $k.diskCacheDir $t.mountRoot.mountPath) }}
{{- if and $disk (not $t.enabled) $inRoot }}
kvbm.diskCacheDir: {{ $k.diskCacheDir }} is under the 3FS mount root {{ $t.mountRoot.mountPath }} but threefs.enabled is false, so the cache would land in the node's staging directory; set --set threefs.enabled=true or point kvbm.diskCacheDir elsewhere
{{- end }}
{{- if and $t.enabled $disk $inRoot (not (include "dynamo-offloading.pathUnder" (list $k.diskCacheDir $mp))) }}
kvbm.diskCacheDir: {{ $k.diskCacheDir }} is in the staging directory beside the 3FS mountpoint {{ $mp }}, not on 3FS; put it under {{ $mp }}
{{- end }}
{{- end }}

{{/*
What the FUSE client needs, when the release runs one; a host mount needs none of it (mgmtd addresses, when
given, are still checked before the install).
*/}}
{{- define "dynamo-offloading.validateValues.threefs" -}}
{{- $t := .Values.threefs }}
{{- if include "dynamo-offloading.threefs.runsClient" . }}
{{- if not $t.mgmtdAddresses }}
threefs.mgmtdAddresses: required when threefs.enabled, e.g. --set threefs.mgmtdAddresses={RDMA://10.0.0.1:8000}
{{- end }}
{{- if not $t.clusterId }}
threefs.clusterId: required when threefs.enabled (the 3FS cluster id)
{{- end }}
{{- if eq (not $t.token) (not $t.existingSecret) }}
threefs.token, threefs.existingSecret: set exactly one when threefs.enabled (prefer existingSecret: kubectl create secret generic threefs-token --from-literal=token=...)
{{- end }}
{{- if and (eq $t.transport "rdma") (not $t.ibDevices.deviceFilter) }}
threefs.ibDevices.deviceFilter: required with threefs.transport=rdma, e.g. [mlx5_0]
{{- end }}
{{- if or (not $t.fuse.image.repository) (not (or $t.fuse.image.tag $t.fuse.image.digest)) }}
threefs.fuse.image: repository and tag (or digest) are required when threefs.enabled; no public 3FS FUSE image exists, so set your own
{{- end }}
{{- else if and $t.enabled $t.mgmtdAddresses (not $t.clusterId) }}
threefs.clusterId: required with threefs.mgmtdAddresses, which the pre-install check asks for that cluster's primary mgmtd; or unset threefs.mgmtdAddresses to check nothing
{{- end }}
{{- end }}

{{/*
One of etcd/NATS. Context: (dict "root" $ "name" "etcd").
*/}}
{{- define "dynamo-offloading.validate.connection" -}}
{{- $name := .name }}
{{- $v := index .root.Values $name }}
{{- $explicitKey := include "dynamo-offloading.peer.explicitKey" $name }}
{{- $explicit := not (empty (index $v $explicitKey)) }}
{{- $service := or (not (empty $v.service.name)) (not (empty $v.service.namespace)) }}
{{- if and $service (not (and $v.service.name $v.service.namespace)) }}
{{ $name }}.service.name, {{ $name }}.service.namespace: set both to refer to an existing Service
{{- end }}
{{- if and $v.embedded.enabled (or $explicit $service) }}
{{- $others := list }}
{{- if $explicit }}{{ $others = append $others (printf "%s.%s" $name $explicitKey) }}{{ end }}
{{- if $service }}{{ $others = append $others (printf "%s.service" $name) }}{{ end }}
{{ $name }}.embedded.enabled, {{ join ", " $others }}: the worker's {{ $name }} comes from exactly one source; unset {{ join ", " $others }} to use the embedded server, or turn {{ $name }}.embedded.enabled off
{{- end }}
{{- if and $v.tls.enabled (not $v.tls.existingSecret) }}
{{ $name }}.tls.existingSecret: required with {{ $name }}.tls.enabled, a Secret holding {{ $v.tls.caKey }}, {{ $v.tls.certKey }} and {{ $v.tls.keyKey }}
{{- end }}
{{- if not (or $v.embedded.enabled $explicit $service) }}
{{ $name }}.embedded.enabled, {{ $name }}.{{ $explicitKey }}, {{ $name }}.service: no {{ $name }} is configured; set --set {{ $name }}.embedded.enabled=true, or {{ $name }}.service.namespace and {{ $name }}.service.name
{{- end }}
{{- end }}

{{- define "dynamo-offloading.validateValues.connections" -}}
{{- range $name := include "dynamo-offloading.dynamo.peers" . | fromJsonArray }}
{{ include "dynamo-offloading.validate.connection" (dict "root" $ "name" $name) }}
{{- end }}
{{- end }}

{{/*
A discovery backend or an event plane the release line has not (dynamo.lines).
*/}}
{{- define "dynamo-offloading.validateValues.releaseLine" -}}
{{- $lines := include "dynamo-offloading.dynamo.lines" . | fromJson }}
{{- $line := get $lines .Values.dynamo.release }}
{{- range $setting := list "discovery" "eventPlane" }}
{{- $chosen := get $.Values.dynamo $setting }}
{{- if not (has $chosen (get $line $setting)) }}
{{- $fixes := list }}
{{- range $name, $other := $lines }}
{{- if has $chosen (get $other $setting) }}{{ $fixes = append $fixes (printf "--set dynamo.release=%s" $name) }}{{ end }}
{{- end }}
{{- $fixes = append $fixes (printf "--set dynamo.%s=%s" $setting (first (get $line $setting))) }}
dynamo.{{ $setting }}: {{ $chosen }} is not available with dynamo.release {{ $.Values.dynamo.release }}, which has {{ join " or " (get $line $setting) }}; {{ join ", or " $fixes }}
{{- end }}
{{- end }}
{{- end }}

{{/*
An upgrade to another release line (read from the live frontend Deployment; nothing under helm template): Dynamo
1.4 made its event subjects endpoint-scoped with no fallback (its deprecation ledger, #11841), so a 0.9 frontend
cannot serve 1.x workers nor the reverse, and a rolling upgrade would leave a mixed fleet failing requests. A
frontend of a chart that predates the lines ran 0.9.
*/}}
{{- define "dynamo-offloading.validateValues.lineChange" -}}
{{- $frontend := lookup "apps/v1" "Deployment" .Release.Namespace (include "dynamo-offloading.component.fullname" (dict "root" . "component" "frontend")) | default dict }}
{{- $live := dig "metadata" "annotations" "dynamo-offloading/release-line" (ternary "" "0.9" (empty $frontend)) $frontend }}
{{- if and $live (ne $live .Values.dynamo.release) }}
dynamo.release: the release runs Dynamo {{ $live }}, and a rolling upgrade to {{ .Values.dynamo.release }} would mix the lines, whose event subjects differ with no fallback (Dynamo 1.4), so requests would fail until the last pod is replaced; replace it whole: helm uninstall {{ .Release.Name }} -n {{ .Release.Namespace }}, then helm install with the new values (or install the new line as another release and move the traffic to it)
{{- end }}
{{- end }}

{{/*
Settings the schema accepts but Dynamo 0.9.0's etcd and NATS clients cannot use.
*/}}
{{- define "dynamo-offloading.validateValues.dynamoClients" -}}
{{- $line := include "dynamo-offloading.dynamo.line" . | fromJson }}
{{- $peers := include "dynamo-offloading.dynamo.peers" . | fromJsonArray }}
{{- if and (has "etcd" $peers) .Values.etcd.auth.existingSecret .Values.etcd.tls.enabled }}
etcd.auth.existingSecret, etcd.tls.enabled: Dynamo 0.9.0's etcd client uses the password and then connects without TLS, dropping the client certificate; use one of them: --set etcd.auth.existingSecret= or --set etcd.tls.enabled=false
{{- end }}
{{- if and (has "nats" $peers) (not $line.natsTls) .Values.nats.embedded.enabled .Values.nats.tls.enabled }}
nats.tls.enabled, nats.embedded.enabled: Dynamo {{ .Values.dynamo.release }} has no NATS TLS client settings, so no worker or frontend could connect to an embedded NATS that requires TLS; --set nats.tls.enabled=false, or --set dynamo.release=1.6
{{- end }}
{{- end }}

{{- define "dynamo-offloading.validateValues.dns" -}}
{{- if and (eq .Values.worker.dnsPolicy "None") (not (.Values.worker.dnsConfig | default dict).nameservers) }}
worker.dnsPolicy, worker.dnsConfig.nameservers: dnsPolicy None takes every DNS setting from dnsConfig, and the API server refuses such a pod without a nameserver; set worker.dnsConfig.nameservers, e.g. --set worker.dnsConfig.nameservers={10.0.0.10}
{{- end }}
{{- end }}

{{- define "dynamo-offloading.validateValues.workerNodes" -}}
{{- if and .Values.modelDownloader.enabled (not (include "dynamo-offloading.worker.nodes" . | fromJsonArray)) }}
modelDownloader.enabled, worker.nodes: the downloader fills the Hugging Face cache of each worker node, and no node is known; list them in worker.nodes, e.g. --set worker.nodes={gpu-node-1}, or pin the worker with worker.nodeSelector kubernetes.io/hostname
{{- end }}
{{- end }}

{{/*
The ports of one group's plan, which share one network (the node's with hostNetwork).
*/}}
{{- define "dynamo-offloading.validateValues.ports" -}}
{{- $byPort := dict }}
{{- range $port, $entry := include "dynamo-offloading.worker.portPlan" . | fromJson }}
{{- if gt (first $entry | int) 65535 }}
{{ last $entry }}: gives port {{ first $entry | int }} with worker.portOffset {{ $.Values.worker.portOffset }}, above 65535; lower it or the offset
{{- end }}
{{- $key := toString (first $entry | int) }}
{{- $_ := set $byPort $key (append (get $byPort $key | default list) (last $entry)) }}
{{- end }}
{{- range $number, $values := $byPort }}
{{- if gt (len $values) 1 }}
{{ join ", " $values }}: all give port {{ $number }} (+ worker.portOffset); the worker's ports share one network (the node's with hostNetwork), so give each its own port
{{- end }}
{{- end }}
{{- end }}

{{/*
Host-network groups whose pods can share a node must not share a port: the scheduler would keep such pods
apart, leaving them Pending. Groups cannot share a node when both name their nodes (worker.nodes, or a
hostname nodeSelector) and no node is in both, or when their nodeSelectors differ on a label.
*/}}
{{- define "dynamo-offloading.validateValues.portPlan" -}}
{{- if .Values.worker.hostNetwork }}
{{- $groups := list }}
{{- range $name := include "dynamo-offloading.worker.groupNames" . | fromJsonArray }}
{{- $g := dict }}
{{- include "dynamo-offloading.worker.groupContext" (dict "root" $ "name" $name "into" $g) }}
{{- $groups = append $groups $g }}
{{- end }}
{{- range $i, $a := $groups }}
{{- range $b := slice $groups (add1 $i) }}
{{- if include "dynamo-offloading.worker.canShareNode" (list $a $b) }}
{{- $aPorts := include "dynamo-offloading.worker.ports" $a | fromJson }}
{{- $shared := list }}
{{- range $port, $number := include "dynamo-offloading.worker.ports" $b | fromJson }}
{{- range $other, $n := $aPorts }}
{{- if eq (int $n) (int $number) }}{{ $shared = append $shared (printf "%d (%s, %s)" (int $n) $other $port) }}{{ end }}
{{- end }}
{{- end }}
{{- if $shared }}
worker.groups.{{ $a.Group.name }}, worker.groups.{{ $b.Group.name }}: their workers can share a node and both bind port {{ join ", " $shared }} on it; give one of them another worker.portOffset, e.g. --set worker.groups.{{ $b.Group.name }}.portOffset={{ add (int $a.Values.worker.portOffset) 10 }}, or keep them on different nodes
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "dynamo-offloading.validateValues.startup" -}}
{{- $timeout := .Values.kvbm.leaderWorkerInitTimeoutSeconds }}
{{- $allocation := include "dynamo-offloading.kvbm.allocationSeconds" . | int }}
{{- if and (not (kindIs "invalid" $timeout)) (include "dynamo-offloading.kvbm.tierOn" .Values.kvbm.diskCacheGB) (lt (int $timeout) $allocation) }}
kvbm.leaderWorkerInitTimeoutSeconds: {{ $timeout }} s is less than the estimated disk-tier allocation of {{ $allocation }} s (kvbm.diskCacheGB / worker.startup.diskWriteGBPerMinute); raise it, or leave it null to derive it
{{- end }}
{{- end }}

{{- define "dynamo-offloading.validateValues.memory" -}}
{{- $limits := .Values.worker.resources.limits | default dict }}
{{- if hasKey $limits "memory" }}
{{- $cpu := include "dynamo-offloading.kvbm.gb" .Values.kvbm.cpuCacheGB | float64 }}
{{- $shm := include "dynamo-offloading.quantityBytes" (.Values.worker.shmSize | default 0) | float64 }}
{{- $needed := addf (mulf $cpu 1e9) $shm (mulf (float64 .Values.worker.memoryHeadroomGi) 1073741824.0) }}
{{- if lt (include "dynamo-offloading.quantityBytes" $limits.memory | float64) $needed }}
worker.resources.limits.memory: {{ $limits.memory }} is below the pinned KVBM CPU tier ({{ .Values.kvbm.cpuCacheGB }} GB) plus worker.shmSize ({{ .Values.worker.shmSize | default 0 }}) plus worker.memoryHeadroomGi ({{ .Values.worker.memoryHeadroomGi }} GiB); raise it to at least {{ ceil (divf $needed 1073741824.0) | int }}Gi or unset it to derive it
{{- end }}
{{- end }}
{{- end }}

{{/*
The worker's --kv-block-size follows the engine's block size (worker.kvBlockSize): one given by hand could
differ, and then no KV event reaches the router.
*/}}
{{- define "dynamo-offloading.validateValues.kvBlockSize" -}}
{{- range .Values.worker.extraArgs }}
{{- if hasPrefix "--kv-block-size" . }}
worker.extraArgs: {{ . }} is set by the chart from the engine's block size; set worker.engine.kv_cache_config.tokens_per_block instead (now {{ include "dynamo-offloading.worker.kvBlockSize" $ }})
{{- end }}
{{- end }}
{{- end }}

{{/*
TRT-LLM runs one rank per GPU: tensor x pipeline x context parallel sizes of the engine config (with
extraEngineArgs) make the worker's GPU count.
*/}}
{{- define "dynamo-offloading.validateValues.parallelism" -}}
{{- $engine := include "dynamo-offloading.worker.engineConfig" . | fromYaml }}
{{- $tp := int (dig "tensor_parallel_size" 1 $engine) }}
{{- $pp := int (dig "pipeline_parallel_size" 1 $engine) }}
{{- $cp := int (dig "context_parallel_size" 1 $engine) }}
{{- $ranks := mul $tp $pp $cp }}
{{- if ne $ranks (int .Values.worker.gpus) }}
worker.gpus, worker.engine.tensor_parallel_size: each worker runs one rank per GPU, tensor_parallel_size {{ $tp }} x pipeline_parallel_size {{ $pp }} x context_parallel_size {{ $cp }} = {{ $ranks }}, but worker.gpus is {{ .Values.worker.gpus }}; set --set worker.gpus={{ $ranks }} or change the parallel sizes
{{- end }}
{{- end }}

{{/*
Each served model has its own Dynamo endpoint, named after it (worker.endpoint): two names that make the same
name there would put two models on one endpoint.
*/}}
{{- define "dynamo-offloading.validateValues.endpoints" -}}
{{- $seen := dict }}
{{- range $model := include "dynamo-offloading.worker.servedModelNames" . | fromJsonArray }}
{{- $component := include "dynamo-offloading.worker.endpointComponent" $model }}
{{- if not $component }}
worker.model.servedModelName: {{ $model }} has no letter or digit to name its Dynamo endpoint after; serve it under another name
{{- end }}
{{- with get $seen $component }}
worker.model.servedModelName: {{ . }} and {{ $model }} both make the Dynamo endpoint {{ include "dynamo-offloading.worker.endpoint" $model }}, where a worker registers its model, and Dynamo serves one model per endpoint; serve one of them under another name (worker.groups.<name>.model.servedModelName)
{{- end }}
{{- $_ := set $seen $component $model }}
{{- end }}
{{- end }}
