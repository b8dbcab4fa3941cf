{{- define "coalition.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "coalition.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "coalition.labels" -}}
{{ include "coalition.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: coalition
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "coalition.image" -}}
{{ printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) | quote }}
{{- end -}}

{{- /* Non-root (the distroless "nonroot" user), nothing writable but /tmp, no new privileges. */ -}}
{{- define "coalition.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile: { type: RuntimeDefault }
{{- end -}}

{{- define "coalition.containerSecurityContext" -}}
runAsNonRoot: true
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities: { drop: [ALL] }
{{- end -}}

{{- define "coalition.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef: { name: {{ .secret | quote }}, key: {{ .key | quote }} }
{{- end -}}

{{- /*
Most pods at once: the replica count (or the HPA's maximum) plus the one extra pod of a
rolling update (maxSurge 1). Each may open database.maxConnections; the migration Job
opens 2. Render nothing but fail when that exceeds what PostgreSQL admits.
*/ -}}
{{- define "coalition.checkConnectionBudget" -}}
{{- $pods := ternary .Values.autoscaling.maxReplicas .Values.replicaCount .Values.autoscaling.enabled | int -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail "autoscaling.minReplicas is above autoscaling.maxReplicas" -}}
{{- end -}}
{{- if and (not .Values.existingSecret.redisUrlKey) (or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1)) -}}
{{- fail "existingSecret.redisUrlKey is empty: without Redis every pod caches balances and counts failed logins on its own, which suits one replica only (replicaCount 1, autoscaling off)" -}}
{{- end -}}
{{- $needed := add (mul (add $pods 1) .Values.database.maxConnections) 2 -}}
{{- $available := sub .Values.database.postgresMaxConnections .Values.database.reservedConnections -}}
{{- if gt (int $needed) (int $available) -}}
{{- fail (printf "database connections: %d pods at most (with a rolling update's extra one) × database.maxConnections %d + 2 for migrating = %d, more than PostgreSQL admits (database.postgresMaxConnections %d − database.reservedConnections %d = %d). Lower database.maxConnections or the replica count, or raise max_connections." (add $pods 1) (int .Values.database.maxConnections) (int $needed) (int .Values.database.postgresMaxConnections) (int .Values.database.reservedConnections) (int $available)) -}}
{{- end -}}
{{- end -}}
