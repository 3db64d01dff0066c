{{/* Names, labels, the shared environment and the secret files of every AI-Chat pod. */}}

{{- define "aichat.fullname" -}}
{{- if contains "aichat" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-aichat" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "aichat.labels" -}}
app.kubernetes.io/name: aichat
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* selector labels of one component: (dict "root" $ "component" "answer") */}}
{{- define "aichat.selector" -}}
app.kubernetes.io/name: aichat
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "aichat.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "aichat.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "aichat.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{- define "aichat.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "aichat.fullname" .) -}}
{{- end -}}

{{/* partitions of one topic: (dict "root" $ "topic" "answers") */}}
{{- define "aichat.partitions" -}}
{{- $kafka := .root.Values.kafka -}}
{{- index $kafka.partitions .topic | default $kafka.topicPartitions | int -}}
{{- end -}}

{{/* the largest partition count among a worker's topics: more replicas than that get no work */}}
{{- define "aichat.partitionBound" -}}
{{- $root := .root -}}
{{- $bound := 0 -}}
{{- range .topics -}}
{{- $n := include "aichat.partitions" (dict "root" $root "topic" .) | int -}}
{{- if gt $n $bound }}{{ $bound = $n }}{{ end -}}
{{- end -}}
{{- $bound -}}
{{- end -}}

{{/* the worker serving answers, for the gateway's "model" readiness check */}}
{{- define "aichat.answerWorker" -}}
{{- if .Values.workers.answer.enabled -}}answer
{{- else if .Values.workers.pipeline.enabled -}}pipeline
{{- else -}}{{ fail "gateway.enabled needs workers.answer or workers.pipeline: nobody would answer" }}
{{- end -}}
{{- end -}}

{{/* environment of every process: addresses and settings (no secret values) */}}
{{- define "aichat.env" -}}
- name: AICHAT_KAFKA_BOOTSTRAP
  value: {{ .Values.kafka.bootstrap | quote }}
- name: AICHAT_TOPIC_PREFIX
  value: {{ .Values.kafka.topicPrefix | quote }}
- name: AICHAT_TOPIC_PARTITIONS
  value: {{ .Values.kafka.topicPartitions | quote }}
- name: AICHAT_WEAVIATE_SCHEME
  value: {{ .Values.weaviate.scheme | quote }}
- name: AICHAT_WEAVIATE_HOST
  value: {{ .Values.weaviate.host | quote }}
- name: AICHAT_WEAVIATE_HTTP_PORT
  value: {{ .Values.weaviate.httpPort | quote }}
- name: AICHAT_WEAVIATE_GRPC_PORT
  value: {{ .Values.weaviate.grpcPort | quote }}
- name: AICHAT_WEAVIATE_COLLECTION
  value: {{ .Values.weaviate.collection | quote }}
{{- if .Values.weaviate.caSecret }}
- name: AICHAT_WEAVIATE_CA_FILE
  value: /run/secrets/aichat-ca/weaviate/ca.crt
{{- end }}
- name: AICHAT_ELASTIC_URL
  value: {{ .Values.elasticsearch.url | quote }}
- name: AICHAT_ELASTIC_INDEX_PREFIX
  value: {{ .Values.elasticsearch.indexPrefix | quote }}
{{- if .Values.elasticsearch.caSecret }}
- name: AICHAT_ELASTIC_CA_FILE
  value: /run/secrets/aichat-ca/elasticsearch/ca.crt
{{- end }}
{{- range $name, $value := .Values.config }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* AICHAT_<SETTING>_FILE for the settings a process reads: (dict "root" $ "settings" (list …)) */}}
{{- define "aichat.secretEnv" -}}
{{- $keys := .root.Values.secrets.keys -}}
{{- range .settings }}
{{- $key := index $keys . | default "" }}
{{- if $key }}
- name: {{ printf "AICHAT_%s_FILE" (upper .) }}
  value: {{ printf "/run/secrets/aichat/%s" $key | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* the volumes of those files and of the CA certificates */}}
{{- define "aichat.secretVolumes" -}}
{{- $root := .root -}}
{{- $keys := $root.Values.secrets.keys -}}
{{- $items := list -}}
{{- range .settings }}{{ $key := index $keys . | default "" }}{{ if $key }}{{ $items = append $items $key }}{{ end }}{{ end -}}
{{- if $items }}
- name: secrets
  secret:
    secretName: {{ include "aichat.secretName" $root }}
    defaultMode: 0440
    items:
    {{- range $items }}
      - key: {{ . }}
        path: {{ . }}
    {{- end }}
{{- end }}
{{- if $root.Values.weaviate.caSecret }}
- name: weaviate-ca
  secret:
    secretName: {{ $root.Values.weaviate.caSecret }}
    defaultMode: 0444
    items: [{key: ca.crt, path: ca.crt}]
{{- end }}
{{- if $root.Values.elasticsearch.caSecret }}
- name: elasticsearch-ca
  secret:
    secretName: {{ $root.Values.elasticsearch.caSecret }}
    defaultMode: 0444
    items: [{key: ca.crt, path: ca.crt}]
{{- end }}
- name: home
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "aichat.secretMounts" -}}
{{- $root := .root -}}
{{- $keys := $root.Values.secrets.keys -}}
{{- $used := false -}}
{{- range .settings }}{{ if index $keys . }}{{ $used = true }}{{ end }}{{ end -}}
{{- if $used }}
- name: secrets
  mountPath: /run/secrets/aichat
  readOnly: true
{{- end }}
{{- if $root.Values.weaviate.caSecret }}
- name: weaviate-ca
  mountPath: /run/secrets/aichat-ca/weaviate
  readOnly: true
{{- end }}
{{- if $root.Values.elasticsearch.caSecret }}
- name: elasticsearch-ca
  mountPath: /run/secrets/aichat-ca/elasticsearch
  readOnly: true
{{- end }}
# the root filesystem is read-only: worker state (AICHAT_WORKER_DATA_DIR), HOME and /tmp
- name: home
  mountPath: /home/aichat
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "aichat.podSpecCommon" -}}
serviceAccountName: {{ include "aichat.serviceAccountName" . }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* NetworkPolicy egress rules: (dict "rule" .Values.networkPolicy.egress.kafka) */}}
{{- define "aichat.egressRule" -}}
- ports:
  {{- range .rule.ports }}
    - {protocol: TCP, port: {{ . }}}
  {{- end }}
  {{- with .rule.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
{{- define "aichat.dnsRule" -}}
- ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end -}}
