{{/*
etcd and NATS: where the frontend and the worker find them, with their auth and TLS, and
shared pieces of the embedded StatefulSets.
*/}}

{{/*
A Service reference's DNS address, host:port. Context: (dict "root" $ "component" "etcd").
The embedded server wins; otherwise the values' service block.
*/}}
{{- define "dynamo-offloading.infra.serviceAddress" -}}
{{- $v := index .root.Values .component }}
{{- if $v.embedded.enabled }}
{{- printf "%s.%s.svc:%d" (include "dynamo-offloading.component.fullname" .) .root.Release.Namespace (int $v.embedded.clientPort) }}
{{- else if and $v.service.name $v.service.namespace }}
{{- printf "%s.%s.svc:%d" $v.service.name $v.service.namespace (int $v.service.port) }}
{{- end }}
{{- end }}

{{/*
ETCD_ENDPOINTS. Context: (dict "root" $ "dns" bool). With dns false (a hostNetwork worker that
cannot use cluster DNS), or without a Service, the explicit endpoints win; the pre-install
hook's resolved pod IPs will take their place here.
*/}}
{{- define "dynamo-offloading.etcd.endpoints" -}}
{{- $etcd := .root.Values.etcd }}
{{- $addr := include "dynamo-offloading.infra.serviceAddress" (dict "root" .root "component" "etcd") }}
{{- if and $etcd.endpoints (or (not .dns) (not $addr)) }}
{{- join "," $etcd.endpoints }}
{{- else }}
{{- printf "%s://%s" (ternary "https" "http" $etcd.tls.enabled) $addr }}
{{- end }}
{{- end }}

{{/*
NATS_SERVER. Context: (dict "root" $ "dns" bool), as for etcd.
*/}}
{{- define "dynamo-offloading.nats.server" -}}
{{- $nats := .root.Values.nats }}
{{- $addr := include "dynamo-offloading.infra.serviceAddress" (dict "root" .root "component" "nats") }}
{{- if and $nats.url (or (not .dns) (not $addr)) }}
{{- $nats.url }}
{{- else }}
{{- /* Dynamo accepts only nats:// URLs; TLS is negotiated by the server's settings. */}}
{{- printf "nats://%s" $addr }}
{{- end }}
{{- end }}

{{/*
Environment that points a Dynamo process at etcd and NATS, with credentials from Secrets and
TLS files from dynamo-offloading.connection.volumeMounts. Context: (dict "root" $ "dns" bool).
*/}}
{{- define "dynamo-offloading.connection.env" -}}
{{- $etcd := .root.Values.etcd }}
{{- $nats := .root.Values.nats -}}
- name: ETCD_ENDPOINTS
  value: {{ include "dynamo-offloading.etcd.endpoints" . | quote }}
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
- name: NATS_SERVER
  value: {{ include "dynamo-offloading.nats.server" . | quote }}
{{- if $nats.tls.enabled }}
# Read by Dynamo releases with NATS TLS support; Dynamo 0.9.0 has none.
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

{{/*
The NATS TLS Secret, mounted where dynamo-offloading.connection.env points (etcd's certificates
go in as environment values).
*/}}
{{- define "dynamo-offloading.connection.volumeMounts" -}}
{{- if .Values.nats.tls.enabled }}
- name: nats-tls
  mountPath: /etc/dynamo/nats-tls
  readOnly: true
{{- end }}
{{- end }}

{{- define "dynamo-offloading.connection.volumes" -}}
{{- if .Values.nats.tls.enabled }}
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
