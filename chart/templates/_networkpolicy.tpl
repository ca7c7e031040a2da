{{/*
NetworkPolicies (networkPolicy.enabled).
*/}}

{{/*
The NetworkPolicy of an embedded etcd or NATS: its client port open to the release's pods and to the worker
nodes (networkPolicy.nodeCIDRs, for host-network pods), its peer port to its own pods, and egress only to
its peers and cluster DNS (it finds them by name). Context: (dict "root" $ "component" "etcd" "clientPort"
2379 "peerPort" 2380); without peerPort, no egress at all.
*/}}
{{- define "dynamo-offloading.networkPolicy.embedded" -}}
{{- $root := .root }}
{{- $self := include "dynamo-offloading.selectorLabels" (dict "root" $root "component" .component) | fromYaml }}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  {{- include "dynamo-offloading.metadata" (dict "root" $root "component" .component) | trim | nindent 2 }}
spec:
  podSelector:
    matchLabels:
      {{- toYaml $self | nindent 6 }}
  policyTypes: [Ingress, Egress]
  ingress:
    - ports:
        - port: {{ .clientPort }}
          protocol: TCP
      from:
        - podSelector:
            matchLabels:
              app.kubernetes.io/instance: {{ $root.Release.Name }}
        {{- range $root.Values.networkPolicy.nodeCIDRs }}
        - ipBlock:
            cidr: {{ . }}
        {{- end }}
    {{- with .peerPort }}
    - ports:
        - port: {{ . }}
          protocol: TCP
      from:
        - podSelector:
            matchLabels:
              {{- toYaml $self | nindent 14 }}
    {{- end }}
  {{- if .peerPort }}
  egress:
    - ports:
        - port: {{ .peerPort }}
          protocol: TCP
      to:
        - podSelector:
            matchLabels:
              {{- toYaml $self | nindent 14 }}
    - ports:
        - port: 53
          protocol: UDP
        - port: 53
          protocol: TCP
      to:
        - namespaceSelector: {}
          podSelector:
            matchLabels:
              k8s-app: kube-dns
  {{- else }}
  egress: []
  {{- end }}
{{- end }}
