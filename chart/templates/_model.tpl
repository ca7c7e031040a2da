{{/*
The model's files on the nodes and in the pods: the downloader Jobs and the frontend's copy of the files
the worker registers.
*/}}

{{/*
The files of a snapshot the frontend reads through the worker's model card (Dynamo 0.9.0
lib/llm/src/model_card.rs): the config, the generation config, the tokenizer and its config, and a
chat template. A JSON list of hub file patterns.
*/}}
{{- define "dynamo-offloading.model.cardFiles" -}}
{{- toJson (list "config.json" "generation_config.json" "tokenizer*" "*.jinja") }}
{{- end }}

{{/*
The model downloader's pod on one worker node: snapshot_download of the revision the worker serves into
the node's Hugging Face cache. Context: (dict "root" $ "node" "p02-r02-cp17").
*/}}
{{- define "dynamo-offloading.modelDownloader.podTemplate" -}}
{{- $d := .root.Values.modelDownloader }}
{{- $hfHome := include "dynamo-offloading.worker.hfHome" .root -}}
metadata:
  labels:
    {{- include "dynamo-offloading.selectorLabels" (dict "root" .root "component" "model-downloader") | trim | nindent 4 }}
spec:
  {{- include "dynamo-offloading.podDefaults" (dict "root" .root) | trim | nindent 2 }}
  restartPolicy: Never
  hostNetwork: {{ $d.hostNetwork }}
  dnsPolicy: {{ $d.dnsPolicy }}
  nodeSelector:
    kubernetes.io/hostname: {{ .node }}
  {{- with .root.Values.worker.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    seccompProfile: {type: RuntimeDefault}
  containers:
    - name: downloader
      image: {{ include "dynamo-offloading.dynamo.image" .root | quote }}
      imagePullPolicy: {{ .root.Values.image.pullPolicy }}
      {{- include "dynamo-offloading.model.download" (dict "root" .root "env" (list (dict "name" "HOME" "value" "/tmp"))) | trim | nindent 6 }}
      resources:
        {{- toYaml $d.resources | nindent 8 }}
      # Root: the node's cache is root's, as the worker that reads it runs as root.
      securityContext:
        {{- include "dynamo-offloading.restrictedSecurityContext" (dict "runAsUser" 0 "readOnlyRootFilesystem" true) | trim | nindent 8 }}
      volumeMounts:
        - name: hf-cache
          mountPath: {{ $hfHome }}
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: hf-cache
      hostPath:
        path: {{ $hfHome }}
        type: DirectoryOrCreate
    - name: tmp
      emptyDir: {}
{{- end }}

{{/*
Command and environment of a container that downloads the model into HF_HOME (the worker's cache path):
the snapshot the worker is pinned to, else the revision it resolves on the node; with `files`, a list of
patterns, only those files; `env`, more EnvVars. Context: (dict "root" $ "files" (list "config.json") "env" list).
*/}}
{{- define "dynamo-offloading.model.download" -}}
{{- $m := .root.Values.worker.model -}}
command: ["python3", "-c"]
args:
  - |
    import os
    from huggingface_hub import snapshot_download
    files = os.environ.get("MODEL_FILES")
    path = snapshot_download(os.environ["MODEL_REPO_ID"], revision=os.environ["MODEL_REVISION"],
                             allow_patterns=files.split(",") if files else None)
    print("downloaded to", path)
env:
  - name: HF_HOME
    value: {{ include "dynamo-offloading.worker.hfHome" .root | quote }}
  - name: MODEL_REPO_ID
    value: {{ $m.repoId | quote }}
  - name: MODEL_REVISION
    value: {{ $m.snapshot | default $m.revision | quote }}
  {{- with .files }}
  - name: MODEL_FILES
    value: {{ join "," . | quote }}
  {{- end }}
  {{- with .env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/*
The Hugging Face caches the frontend reads model files from: each group's worker.model.cacheHostPath,
once. A JSON list.
*/}}
{{- define "dynamo-offloading.frontend.hfHomes" -}}
{{- $homes := list }}
{{- range $name := include "dynamo-offloading.worker.groupNames" . | fromJsonArray }}
{{- $g := dict }}
{{- include "dynamo-offloading.worker.groupContext" (dict "root" $ "name" $name "into" $g) }}
{{- $homes = append $homes (include "dynamo-offloading.worker.hfHome" $g) }}
{{- end }}
{{- toJson ($homes | uniq) }}
{{- end }}

{{/*
The frontend volume that one of them is mounted from: the one volume the files are downloaded to, or a
host path each. Context: (list .Values.frontend.modelFiles index).
*/}}
{{- define "dynamo-offloading.frontend.hfCacheVolume" -}}
{{- $i := index . 1 }}
{{- if or (eq (index . 0).source "download") (eq $i 0) }}hf-cache{{ else }}hf-cache-{{ $i }}{{ end }}
{{- end }}
