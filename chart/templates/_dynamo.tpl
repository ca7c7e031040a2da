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
              "discovery" (list "etcd" "kubernetes") "eventPlane" (list "nats" "zmq") "selfHostsModelFiles" true
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
"true" with Kubernetes discovery, else "".
*/}}
{{- define "dynamo-offloading.dynamo.kubernetesDiscovery" -}}
{{- if eq .Values.dynamo.discovery "kubernetes" }}true{{ end }}
{{- end }}

{{/*
The environment every Dynamo process gets after its pod's identity (podIdentity.env, which Kubernetes discovery
reads: the DynamoWorkerMetadata a worker writes is named after and owned by its pod): plain-text log lines
(Dynamo colours them by default, even into a pipe, which leaves escape codes in `kubectl logs` and collectors);
its discovery backend and its event plane, always explicit; with the ZMQ plane on the host network, the address
its publishers advertise (the pod's, the node's); then etcd and NATS (connection.env).
Context: (dict "root" $ "dns" bool "hostNetwork" bool).
*/}}
{{- define "dynamo-offloading.dynamo.env" -}}
{{- $line := include "dynamo-offloading.dynamo.line" .root | fromJson -}}
- name: DYN_SDK_DISABLE_ANSI_LOGGING
  value: "1"
- name: {{ $line.discoveryEnv }}
  value: {{ .root.Values.dynamo.discovery }}
- name: DYN_EVENT_PLANE
  value: {{ .root.Values.dynamo.eventPlane }}
{{- if and .hostNetwork (eq .root.Values.dynamo.eventPlane "zmq") }}
- name: DYN_EVENT_PLANE_HOST
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- end }}
{{- with include "dynamo-offloading.connection.env" . | trim }}
{{ . }}
{{- end }}
{{- end }}

{{/*
The Role of a component's Dynamo process with Kubernetes discovery, in the release namespace: it reads the
EndpointSlices (a worker counts while its pod is ready in a labelled Service's slice) and the
DynamoWorkerMetadata objects; a worker writes its own by server-side apply. The RoleBinding gives it to the
component's ServiceAccount. Context: (dict "root" $ "component" "worker" "serviceAccount" "..." "writes" bool).
*/}}
{{- define "dynamo-offloading.dynamo.discoveryRole" -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  {{- include "dynamo-offloading.metadata" (dict "root" .root "component" .component "name" (include "dynamo-offloading.dynamo.discoveryRoleName" .)) | trim | nindent 2 }}
rules:
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
  - apiGroups: [nvidia.com]
    resources: [dynamoworkermetadatas]
    verbs: [{{ ternary "list, watch, create, patch" "list, watch" .writes }}]
{{- end }}

{{- define "dynamo-offloading.dynamo.discoveryRoleBinding" -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  {{- include "dynamo-offloading.metadata" (dict "root" .root "component" .component "name" (include "dynamo-offloading.dynamo.discoveryRoleName" .)) | trim | nindent 2 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ include "dynamo-offloading.dynamo.discoveryRoleName" . }}
subjects:
  - kind: ServiceAccount
    name: {{ .serviceAccount }}
    namespace: {{ .root.Release.Namespace }}
{{- end }}

{{- define "dynamo-offloading.dynamo.discoveryRoleName" -}}
{{- include "dynamo-offloading.component.fullname" (dict "root" .root "component" (printf "%s-dynamo-discovery" .component)) }}
{{- end }}

{{/*
Labels of the Service whose EndpointSlices Dynamo's Kubernetes discovery reads (it selects slices by the
second; both are set as Dynamo's operator sets them).
*/}}
{{- define "dynamo-offloading.dynamo.discoveryLabels" -}}
nvidia.com/dynamo-discovery-backend: kubernetes
nvidia.com/dynamo-discovery-enabled: "true"
{{- end }}

{{/*
The resource Kubernetes discovery writes, which the pre-install hook requires before anything is created:
dynamo-hooks' --require description, naming where its CRD comes from.
*/}}
{{- define "dynamo-offloading.dynamo.discoveryResource" -}}
{{- toJson (dict "resource" "nvidia.com/v1alpha1/dynamoworkermetadatas" "kind" "DynamoWorkerMetadata"
  "from" "Dynamo's platform chart (ai-dynamo/dynamo deploy/helm/charts/platform, the CRDs of its operator); install it, or that CRD alone (nvidia.com_dynamoworkermetadatas.yaml), before this release") }}
{{- end }}
