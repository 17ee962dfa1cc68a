{{- define "tokenyard.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels every object carries; deploy/monitoring/prometheus-kubernetes.yml selects pods by them. */}}
{{- define "tokenyard.labels" -}}
app.kubernetes.io/name: tokenyard
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tokenyard.selector" -}}
app.kubernetes.io/name: tokenyard
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tokenyard.secretName" -}}
{{- .Values.secret.existingSecret | default (printf "%s-secrets" (include "tokenyard.fullname" .)) -}}
{{- end -}}

{{- define "tokenyard.controllerUrl" -}}
http://{{ include "tokenyard.fullname" . }}-controller:21001
{{- end -}}

{{- define "tokenyard.image" -}}
{{- $image := .image | default dict -}}
{{ $image.repository | default .root.Values.image.repository }}:{{ $image.tag | default .root.Values.image.tag }}
{{- end -}}

{{/* The cluster token, which every tokenyard process needs. */}}
{{- define "tokenyard.clusterTokenEnv" -}}
- name: TOKENYARD_CLUSTER__TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "tokenyard.secretName" . }}
      key: cluster-token
{{- end -}}

{{/* The store and shared state: gateways and the migration job. */}}
{{- define "tokenyard.storeEnv" -}}
- name: TOKENYARD_DATABASE__URL
  valueFrom:
    secretKeyRef:
      name: {{ include "tokenyard.secretName" . }}
      key: database-url
- name: TOKENYARD_REDIS__URL
  valueFrom:
    secretKeyRef:
      name: {{ include "tokenyard.secretName" . }}
      key: redis-url
      optional: true
{{- end -}}

{{- define "tokenyard.podSecurity" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
