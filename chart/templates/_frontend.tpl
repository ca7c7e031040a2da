{{/*
The frontend: its ServiceAccount and what its readiness means.
*/}}

{{/*
The frontend's ServiceAccount: its own with Kubernetes discovery, whose Role lets it read the workers'
discovery objects; else the release's.
*/}}
{{- define "dynamo-offloading.frontend.serviceAccountName" -}}
{{- if include "dynamo-offloading.dynamo.kubernetesDiscovery" . }}
{{- include "dynamo-offloading.component.fullname" (dict "root" . "component" "frontend") }}
{{- else }}
{{- include "dynamo-offloading.serviceAccountName" . }}
{{- end }}
{{- end }}

{{/*
The frontend's readiness: Ready only while its /v1/models lists every model the worker groups serve, i.e.
a worker of each registered and the frontend loaded each model's card (its /health answers 200 with no
worker at all). The probe's message, shown in the pod's events, names the models it cannot serve yet.
*/}}
{{- define "dynamo-offloading.frontend.readinessProbe" -}}
{{- $probe := .Values.frontend.readinessProbe -}}
exec:
  command:
    - python3
    - -c
    - |
      import json, sys, urllib.request
      url, wanted = sys.argv[1], sys.argv[2:]
      opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
      with opener.open(url, timeout={{ max 1 (sub (int $probe.timeoutSeconds) 1) }}) as answer:
          served = {model["id"] for model in json.load(answer).get("data", [])}
      missing = [name for name in wanted if name not in served]
      if missing:
          sys.exit("not serving " + ", ".join(missing) + " yet: no worker registered, or the model files did not load (see the frontend's log)")
    - http://127.0.0.1:{{ .Values.frontend.httpPort }}/v1/models
    {{- range $model := include "dynamo-offloading.worker.servedModelNames" . | fromJsonArray }}
    - {{ $model | quote }}
    {{- end }}
{{ toYaml $probe }}
{{- end }}
