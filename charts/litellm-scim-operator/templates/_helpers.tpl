{{/* Names, labels and the pieces both Deployments share. */}}

{{- define "lso.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lso.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-endpoint" / "<fullname>-operator", kept within the 63-character name limit. */}}
{{- define "lso.endpoint.fullname" -}}
{{- printf "%s-endpoint" (include "lso.fullname" . | trunc 54 | trimSuffix "-") -}}
{{- end -}}
{{- define "lso.operator.fullname" -}}
{{- printf "%s-operator" (include "lso.fullname" . | trunc 54 | trimSuffix "-") -}}
{{- end -}}

{{- define "lso.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "lso.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: litellm-scim-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "endpoint"). */}}
{{- define "lso.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lso.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "lso.componentLabels" -}}
{{ include "lso.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "lso.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The public SCIM base URL: explicit, else from the ingress, else empty (taken from each request). */}}
{{- define "lso.scimBaseUrl" -}}
{{- if .Values.endpoint.baseUrl -}}
{{- .Values.endpoint.baseUrl -}}
{{- else if .Values.endpoint.ingress.enabled -}}
{{- printf "%s://%s/scim/v2" (ternary "https" "http" .Values.endpoint.ingress.tls.enabled) .Values.endpoint.ingress.host -}}
{{- end -}}
{{- end -}}

{{- define "lso.prometheusAnnotations" -}}
{{- if and .ctx.Values.metrics.podAnnotations (gt (int .port) 0) }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}
