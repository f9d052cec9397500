{{/* "router" for a release named router (so `deploy/router` in the runbooks), else RELEASE-router. */}}
{{- define "router.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "router.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "router.labels" -}}
{{ include "router.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The router's config: the values' config, with the admin listener's
certificates where the Deployment mounts them. */}}
{{- define "router.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- if .Values.admin.enabled -}}
{{- $listeners := get $config "listeners" | default dict -}}
{{- $_ := set $listeners "admin" (dict "host" "0.0.0.0" "port" .Values.admin.port "cert_file" "/etc/router-admin-tls/tls.crt" "key_file" "/etc/router-admin-tls/tls.key" "ca_file" "/etc/router-admin-tls/ca.crt") -}}
{{- $_ := set $config "listeners" $listeners -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}
