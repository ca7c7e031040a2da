{{/*
Worker groups: each group is one StatefulSet whose values are worker and kvbm with the group's own
overrides (worker.groups.<name>) merged over them. Templates render a group's objects with a group
context, the root context whose Values hold the merged worker and kvbm and whose Group names the group,
so the worker, kvbm and 3FS helpers read the group's values as .Values.worker and .Values.kvbm.
*/}}

{{/*
The group names, sorted: the keys of worker.groups, or [""] when it is empty, for the one group that
worker itself describes (its objects keep the names of a chart without groups). A JSON list.
*/}}
{{- define "dynamo-offloading.worker.groupNames" -}}
{{- $names := keys (.Values.worker.groups | default dict) | sortAlpha }}
{{- toJson (ternary $names (list "") (gt (len $names) 0)) }}
{{- end }}

{{/*
Fills .into with the group context of one group. Context: (dict "root" $ "name" "a100" "into" (dict)).
*/}}
{{- define "dynamo-offloading.worker.groupContext" -}}
{{- range $key, $value := .root }}
{{- $_ := set $.into $key $value }}
{{- end }}
{{- $overrides := deepCopy (get (.root.Values.worker.groups | default dict) .name | default dict) }}
{{- $kvbm := deepCopy .root.Values.kvbm }}
{{- include "dynamo-offloading.mergeInto" (dict "dst" $kvbm "src" (get $overrides "kvbm" | default dict)) }}
{{- $_ := unset $overrides "kvbm" }}
{{- $worker := deepCopy .root.Values.worker }}
{{- include "dynamo-offloading.mergeInto" (dict "dst" $worker "src" $overrides) }}
{{- $values := dict }}
{{- range $key, $value := .root.Values }}
{{- $_ := set $values $key $value }}
{{- end }}
{{- $_ := set $values "worker" $worker }}
{{- $_ := set $values "kvbm" $kvbm }}
{{- $_ := set .into "Values" $values }}
{{- $suffix := ternary "" (printf "-%s" .name) (eq .name "") }}
{{- $_ := set .into "Group" (dict "name" .name "suffix" $suffix "component" (printf "worker%s" $suffix) "root" .root) }}
{{- end }}

{{/*
Deep merge of .src into .dst that, unlike merge and mergeOverwrite, also takes 0, false and "" from src:
a group may turn a tier off. Maps merge key by key, anything else replaces.
*/}}
{{- define "dynamo-offloading.mergeInto" -}}
{{- range $key, $value := .src }}
{{- $current := get $.dst $key }}
{{- if and (kindIs "map" $value) (kindIs "map" $current) }}
{{- include "dynamo-offloading.mergeInto" (dict "dst" $current "src" $value) }}
{{- else }}
{{- $_ := set $.dst $key $value }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The group's StatefulSet (and its pods' hostname prefix).
*/}}
{{- define "dynamo-offloading.worker.fullname" -}}
{{- include "dynamo-offloading.component.fullname" (dict "root" . "component" .Group.component) }}
{{- end }}

{{- define "dynamo-offloading.worker.engineConfigName" -}}
{{- include "dynamo-offloading.component.fullname" (dict "root" . "component" (printf "engine-config%s" .Group.suffix)) }}
{{- end }}

{{/*
Selector labels of the group's pods: the worker's, and the group's name when it has one. Every group's
pods match the worker's labels (its Service, monitoring and the post-delete cleanup find them all).
*/}}
{{- define "dynamo-offloading.worker.selectorLabels" -}}
{{- include "dynamo-offloading.selectorLabels" (dict "root" . "component" "worker") }}
{{- with .Group.name }}
dynamo-offloading/worker-group: {{ . }}
{{- end }}
{{- end }}

{{/*
The group's port plan: each port the worker binds, from its value plus worker.portOffset (the request
plane's TCP port is the kernel's choice, so it never collides). With hostNetwork they are ports of the
node, so groups that share a node need offsets that keep their ports apart. A JSON map from port name to
[number, the value it comes from].
*/}}
{{- define "dynamo-offloading.worker.portPlan" -}}
{{- $offset := int .Values.worker.portOffset }}
{{- $k := .Values.kvbm }}
{{- $plan := dict "system" (list (add .Values.worker.systemPort $offset) "worker.systemPort") }}
{{- $_ := set $plan "kvbm-zmq-pub" (list (add $k.leaderZmqPubPort $offset) "kvbm.leaderZmqPubPort") }}
{{- $_ := set $plan "kvbm-zmq-ack" (list (add $k.leaderZmqAckPort $offset) "kvbm.leaderZmqAckPort") }}
{{- if $k.metrics.enabled }}
{{- $_ := set $plan "kvbm-metrics" (list (add $k.metrics.port $offset) "kvbm.metrics.port") }}
{{- end }}
{{- if include "dynamo-offloading.worker.publishesKvEvents" . }}
{{- $_ := set $plan "trtllm-events" (list (add $k.trtllmEventsPort $offset) "kvbm.trtllmEventsPort") }}
{{- /* KVBM's consolidator binds the leader's publish port + 1000 (kvbm_connector_leader.py). */}}
{{- $_ := set $plan "consolidator" (list (add $k.leaderZmqPubPort 1000 $offset) "kvbm.leaderZmqPubPort + 1000") }}
{{- end }}
{{- toJson $plan }}
{{- end }}

{{/*
The plan's ports by name. A JSON map from port name to number.
*/}}
{{- define "dynamo-offloading.worker.ports" -}}
{{- $ports := dict }}
{{- range $port, $entry := include "dynamo-offloading.worker.portPlan" . | fromJson }}
{{- $_ := set $ports $port (first $entry | int) }}
{{- end }}
{{- toJson $ports }}
{{- end }}

{{/*
One port of the plan. Context: (list $group "system").
*/}}
{{- define "dynamo-offloading.worker.port" -}}
{{- index (include "dynamo-offloading.worker.ports" (index . 0) | fromJson) (index . 1) | int }}
{{- end }}

{{/*
"true" when pods of two groups can land on one node, else "" (see validateValues.portPlan).
Context: (list $groupA $groupB).
*/}}
{{- define "dynamo-offloading.worker.canShareNode" -}}
{{- $a := index . 0 }}
{{- $b := index . 1 }}
{{- $aNodes := include "dynamo-offloading.worker.nodes" $a | fromJsonArray }}
{{- $bNodes := include "dynamo-offloading.worker.nodes" $b | fromJsonArray }}
{{- $apart := false }}
{{- if and $aNodes $bNodes }}
{{- $apart = true }}
{{- range $aNodes }}{{ if has . $bNodes }}{{ $apart = false }}{{ end }}{{ end }}
{{- end }}
{{- $bSelector := $b.Values.worker.nodeSelector | default dict }}
{{- range $key, $value := $a.Values.worker.nodeSelector | default dict }}
{{- if and (hasKey $bSelector $key) (ne (toString $value) (toString (get $bSelector $key))) }}{{ $apart = true }}{{ end }}
{{- end }}
{{- if not $apart }}true{{ end }}
{{- end }}
