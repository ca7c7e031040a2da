{{/*
The Dynamo release lines the chart runs, in one table: the runtime image's tag of each, the worker's flags that
changed between them, and which discovery backends and event planes each can use. Read in the released code:
0.9.0 (the seed's; ai-dynamo 0.9.0, dynamo/trtllm/utils/trtllm_utils.py) and 1.6.1 (dynamo/trtllm/args.py,
backend_args.py; lib/runtime 0d9c24a8). Image tags checked to exist: tensorrtllm-runtime 0.9.0 and 1.6.0 (no
1.6.1 image was found; the 1.6.0 image carries the 1.6 runtime).
- modelFlag: --model-path (0.9), --model (1.x; --model-path stays an obsolete alias).
- kvEventFlags: 0.9's --publish-events-and-metrics became --publish-kv-events and --publish-metrics (1.5, 1.6;
  the old flag is a deprecated alias).
- selfHostsModelFiles: from 1.4 the worker serves the model's config and tokenizer on its system port
  (DYN_SELF_HOST_METADATA, on by default), so the frontend needs no copy of them.
- natsAlways: 0.9's frontend and worker connect to NATS whatever the event plane; 1.x only when the event plane
  (or the request plane) is NATS, or NATS_SERVER is set.
- natsTls: 0.9 has no NATS TLS settings and takes only nats:// URLs; 1.x reads NATS_TLS_CA_CERT_PATH.
- discoveryEnv: where the discovery backend is chosen: DYN_STORE_KV (0.9's --store-kv), DYN_DISCOVERY_BACKEND (1.x).
*/}}
{{- define "dynamo-offloading.dynamo.lines" -}}
{{- toJson (dict
  "0.9" (dict "imageTag" "0.9.0" "modelFlag" "--model-path" "kvEventFlags" (list "--publish-events-and-metrics")
              "discovery" (list "etcd") "eventPlane" (list "nats") "selfHostsModelFiles" false "natsAlways" true
              "natsTls" false "discoveryEnv" "DYN_STORE_KV")
  "1.6" (dict "imageTag" "1.6.0" "modelFlag" "--model" "kvEventFlags" (list "--publish-kv-events" "--publish-metrics")
              "discovery" (list "etcd") "eventPlane" (list "nats" "zmq") "selfHostsModelFiles" true
              "natsAlways" false "natsTls" true "discoveryEnv" "DYN_DISCOVERY_BACKEND")) }}
{{- end }}

{{/*
The line of dynamo.release, from dynamo.lines. A JSON map.
*/}}
{{- define "dynamo-offloading.dynamo.line" -}}
{{- get (include "dynamo-offloading.dynamo.lines" . | fromJson) .Values.dynamo.release | toJson }}
{{- end }}

{{/*
The Dynamo runtime image of the frontend, the worker and the model downloader: image.tag, else the line's tag.
*/}}
{{- define "dynamo-offloading.dynamo.image" -}}
{{- $line := include "dynamo-offloading.dynamo.line" . | fromJson }}
{{- include "dynamo-offloading.image" (merge (dict "tag" (.Values.image.tag | default $line.imageTag)) .Values.image) }}
{{- end }}

{{/*
The peers the Dynamo processes use, a JSON list of "etcd" and "nats": etcd for etcd discovery, NATS for the
NATS event plane (and always on 0.9). The rest of the chart (the embedded servers, the processes'
environment, the hooks' checks, the resolve sidecar) follows this list.
*/}}
{{- define "dynamo-offloading.dynamo.peers" -}}
{{- $line := include "dynamo-offloading.dynamo.line" . | fromJson }}
{{- $peers := list }}
{{- if eq .Values.dynamo.discovery "etcd" }}{{ $peers = append $peers "etcd" }}{{ end }}
{{- if or $line.natsAlways (eq .Values.dynamo.eventPlane "nats") }}{{ $peers = append $peers "nats" }}{{ end }}
{{- toJson $peers }}
{{- end }}

{{/*
"true" when the release runs its own server of a peer: the Dynamo processes use it and its embedded server is
enabled, else "". Context: (dict "root" $ "name" "etcd").
*/}}
{{- define "dynamo-offloading.dynamo.embedded" -}}
{{- if and (get (index .root.Values .name) "embedded").enabled (has .name (include "dynamo-offloading.dynamo.peers" .root | fromJsonArray)) }}true{{ end }}
{{- end }}

{{/*
The environment every Dynamo process gets, whatever it finds peers with: its discovery backend and its event
plane, always explicit, then etcd and NATS (connection.env). Context: (dict "root" $ "dns" bool).
*/}}
{{- define "dynamo-offloading.dynamo.env" -}}
{{- $line := include "dynamo-offloading.dynamo.line" .root | fromJson -}}
- name: {{ $line.discoveryEnv }}
  value: {{ .root.Values.dynamo.discovery }}
- name: DYN_EVENT_PLANE
  value: {{ .root.Values.dynamo.eventPlane }}
{{ include "dynamo-offloading.connection.env" . | trim }}
{{- end }}
