{{/*
etcd and NATS: where the frontend and the worker find them, with their auth and TLS, and
shared pieces of the embedded StatefulSets.
*/}}

{{/*
Where one of etcd/NATS is found: decided here once, for the worker's environment and for the hooks.
Context: (dict "root" $ "name" "etcd" "dns" bool); dns false for a hostNetwork worker, which cannot
use cluster DNS. Explicit addresses win when DNS is out or there is no Service; else the embedded
server; else the values' Service. Returns JSON {explicit: [addresses]} or {namespace, service, port,
portName, embedded}, or {} when nothing is configured.
*/}}
{{- define "dynamo-offloading.peer.source" -}}
{{- $v := index .root.Values .name }}
{{- $explicit := index $v (include "dynamo-offloading.peer.explicitKey" .name) | default list }}
{{- $explicit = ternary $explicit (compact (list $explicit)) (kindIs "slice" $explicit) }}
{{- $service := or $v.embedded.enabled (and $v.service.name $v.service.namespace) }}
{{- if and $explicit (or (not .dns) (not $service)) }}
{{- toJson (dict "explicit" $explicit) }}
{{- else if $v.embedded.enabled }}
{{- toJson (dict "namespace" .root.Release.Namespace "service" (include "dynamo-offloading.component.fullname" (dict "root" .root "component" .name)) "port" (int $v.embedded.clientPort) "portName" "client" "embedded" true) }}
{{- else if $service }}
{{- toJson (dict "namespace" $v.service.namespace "service" $v.service.name "port" (int $v.service.port) "portName" $v.service.portName "embedded" false) }}
{{- else }}
{{- toJson dict }}
{{- end }}
{{- end }}

{{/*
The value holding a peer's explicit addresses: etcd.endpoints (a list), nats.url (one URL). Context: the name.
*/}}
{{- define "dynamo-offloading.peer.explicitKey" -}}
{{- ternary "endpoints" "url" (eq . "etcd") }}
{{- end }}

{{/*
ETCD_ENDPOINTS (every address) or NATS_SERVER (one), from peer.source: the explicit addresses, else
the Service's DNS name. Context: as for peer.source. For a hostNetwork worker the resolve sidecar
replaces the value with the pod IPs it resolves.
*/}}
{{- define "dynamo-offloading.peer.address" -}}
{{- $source := include "dynamo-offloading.peer.source" . | fromJson }}
{{- if $source.explicit }}
{{- ternary (join "," $source.explicit) (first $source.explicit) (eq .name "etcd") }}
{{- else if $source.service }}
{{- /* Dynamo accepts only nats:// URLs; TLS to NATS is negotiated by the server's settings. */}}
{{- $scheme := ternary (ternary "https" "http" .root.Values.etcd.tls.enabled) "nats" (eq .name "etcd") }}
{{- printf "%s://%s.%s.svc:%d" $scheme $source.service $source.namespace (int $source.port) }}
{{- end }}
{{- end }}

{{/*
Environment that points a Dynamo process (and the hooks, which check for it) at etcd and NATS as far as it uses
them (dynamo.peers), with credentials from Secrets and TLS files from dynamo-offloading.connection.volumeMounts.
Context: (dict "root" $ "dns" bool).
*/}}
{{- define "dynamo-offloading.connection.env" -}}
{{- $etcd := .root.Values.etcd }}
{{- $nats := .root.Values.nats }}
{{- $peers := include "dynamo-offloading.dynamo.peers" .root | fromJsonArray }}
{{- if has "etcd" $peers }}
- name: ETCD_ENDPOINTS
  value: {{ include "dynamo-offloading.peer.address" (dict "root" .root "name" "etcd" "dns" .dns) | quote }}
{{- with $etcd.auth.existingSecret }}
- name: ETCD_AUTH_USERNAME
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: {{ $etcd.auth.usernameKey }}}
- name: ETCD_AUTH_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: {{ $etcd.auth.passwordKey }}}
{{- end }}
{{- if $etcd.tls.enabled }}
{{- /* Dynamo reads these as PEM content, not as file paths. */}}
- name: ETCD_AUTH_CA
  valueFrom:
    secretKeyRef: {name: {{ $etcd.tls.existingSecret }}, key: {{ $etcd.tls.caKey }}}
- name: ETCD_AUTH_CLIENT_CERT
  valueFrom:
    secretKeyRef: {name: {{ $etcd.tls.existingSecret }}, key: {{ $etcd.tls.certKey }}}
- name: ETCD_AUTH_CLIENT_KEY
  valueFrom:
    secretKeyRef: {name: {{ $etcd.tls.existingSecret }}, key: {{ $etcd.tls.keyKey }}}
{{- end }}
{{- end }}
{{- if has "nats" $peers }}
{{- /* NATS_SERVER only where NATS is used: a 1.x process connects to NATS whenever it is set. */}}
- name: NATS_SERVER
  value: {{ include "dynamo-offloading.peer.address" (dict "root" .root "name" "nats" "dns" .dns) | quote }}
{{- if $nats.tls.enabled }}
# The hooks' NATS check reads it, and Dynamo 1.x; Dynamo 0.9.0 has no NATS TLS settings.
- name: NATS_TLS_CA_CERT_PATH
  value: /etc/dynamo/nats-tls/{{ $nats.tls.caKey }}
{{- end }}
{{- with $nats.auth.existingSecret }}
- name: NATS_AUTH_USERNAME
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: {{ $nats.auth.usernameKey }}}
- name: NATS_AUTH_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: {{ $nats.auth.passwordKey }}}
{{- end }}
{{- end }}
{{- end }}

{{/*
"true" when the Dynamo processes and the hooks reach NATS over TLS: NATS is used and nats.tls enabled, else "".
*/}}
{{- define "dynamo-offloading.connection.natsTls" -}}
{{- if and .Values.nats.tls.enabled (has "nats" (include "dynamo-offloading.dynamo.peers" . | fromJsonArray)) }}true{{ end }}
{{- end }}

{{/*
The NATS TLS Secret, mounted where dynamo-offloading.connection.env points (etcd's certificates
go in as environment values).
*/}}
{{- define "dynamo-offloading.connection.volumeMounts" -}}
{{- if include "dynamo-offloading.connection.natsTls" . }}
- name: nats-tls
  mountPath: /etc/dynamo/nats-tls
  readOnly: true
{{- end }}
{{- end }}

{{- define "dynamo-offloading.connection.volumes" -}}
{{- if include "dynamo-offloading.connection.natsTls" . }}
- name: nats-tls
  secret:
    secretName: {{ .Values.nats.tls.existingSecret }}
{{- end }}
{{- end }}

{{/*
Pod security context of the embedded etcd and NATS: non-root, with the data volume group-owned.
*/}}
{{- define "dynamo-offloading.infra.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile: {type: RuntimeDefault}
{{- end }}

{{/*
The data volume claim of an embedded server, from its persistence block, and what happens to it when the
StatefulSet goes: deleted with the release unless keepOnUninstall (the StatefulSet controller never
deletes claims by itself), kept when scaled down.
*/}}
{{- define "dynamo-offloading.infra.volumeClaims" -}}
persistentVolumeClaimRetentionPolicy:
  whenDeleted: {{ ternary "Retain" "Delete" .keepOnUninstall }}
  whenScaled: Retain
volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      {{- with .storageClass }}
      storageClassName: {{ . }}
      {{- end }}
      resources:
        requests:
          storage: {{ .size }}
{{- end }}
