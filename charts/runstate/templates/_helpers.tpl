{{/* Chart name, overridable by nameOverride. */}}
{{- define "runstate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name for the release's objects (63 characters at most: label values and DNS names).
The release name alone when it already contains the chart name.
*/}}
{{- define "runstate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "runstate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "runstate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "runstate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "runstate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "runstate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "runstate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "runstate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The Secret and key holding the Redis URL; empty when the store is in memory.
*/}}
{{- define "runstate.redisSecretName" -}}
{{- if and .Values.redis.url .Values.redis.existingSecret }}
{{- fail "set redis.url or redis.existingSecret, not both" }}
{{- end }}
{{- if .Values.redis.existingSecret }}
{{- .Values.redis.existingSecret }}
{{- else if .Values.redis.url }}
{{- printf "%s-redis" (include "runstate.fullname" .) }}
{{- end }}
{{- end }}

{{- define "runstate.redisSecretKey" -}}
{{- if .Values.redis.existingSecret }}
{{- .Values.redis.existingSecretKey }}
{{- else }}
{{- "redis-url" }}
{{- end }}
{{- end }}

{{/*
Rules on namespaced resources: in the ClusterRole when watching all namespaces, else in a Role
per watched namespace (with kopf's namespaced peering). Exactly what the operator (runstate.kube.client) and kopf under it call,
nothing more: tests/packaging/test_chart_rbac.py derives the same set from the code.
*/}}
{{- define "runstate.namespacedRules" -}}
# kopf lists and watches both kinds (its indexes are the operator's cache). A Run is read
# fresh before a status write, patched to add/remove its finalizer and to cancel it; Runbook
# triggers (onChange, schedule) create Runs and spec.history deletes the finished ones.
- apiGroups: ["runstate.dev"]
  resources: ["runs"]
  verbs: ["get", "list", "watch", "patch", "create", "delete"]
- apiGroups: ["runstate.dev"]
  resources: ["runbooks"]
  verbs: ["list", "watch"]
# Status is merge-patched through the status subresource, never replaced.
- apiGroups: ["runstate.dev"]
  resources: ["runs/status", "runbooks/status"]
  verbs: ["patch"]
# Pods carry an ownerReference to their Run, and triggered Runs one to their Runbook, with
# blockOwnerDeletion, which needs update on the owner's finalizers.
- apiGroups: ["runstate.dev"]
  resources: ["runs/finalizers", "runbooks/finalizers"]
  verbs: ["update"]
# Work pods: created, watched, and deleted one by one or (pod retention) in one call.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "create", "delete", "deletecollection"]
# Events: runstate's state transitions and kopf's warnings (core/v1, create only).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* Rules on cluster-scoped resources. */}}
{{- define "runstate.clusterRules" -}}
# kopf discovers the CRDs it serves and follows changes to them.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
# Runbooks with inventory.nodeSelector: the matching Nodes are listed when a run starts.
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["list"]
{{- if .Values.watchNamespaces }}
# Watching some namespaces: kopf lists and watches namespaces to follow them.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- else }}
{{- include "runstate.namespacedRules" . | nindent 0 }}
# kopf's cluster-wide peering.
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["list", "watch", "patch"]
{{- end }}
{{- end }}

{{/*
"true" when the replicas run as active/standby peers (replicaCount > 1), else empty.
Same priority means every replica stands by (kopf's rule), so each draws its own at start
(RUNSTATE_PEERING_PRIORITY=random). The hand-over is safe only with a store the replicas
share: its compare-and-set fences the state a replica that has not paused yet may still
write; with the in-memory store each replica would keep its own, so it is refused.
*/}}
{{- define "runstate.peered" -}}
{{- if gt (int .Values.replicaCount) 1 }}
{{- if .Values.operator.standalone }}
{{- fail "replicaCount > 1 needs kopf peering: operator.standalone must be false (standalone replicas all act)" }}
{{- end }}
{{- if not (include "runstate.redisSecretName" .) }}
{{- fail "replicaCount > 1 needs a state store the replicas share: set redis.url or redis.existingSecret (the in-memory store is per replica)" }}
{{- end }}
{{- "true" }}
{{- end }}
{{- end }}

{{/* The kopf peering object the replicas share: operator.peering, else the release's name. */}}
{{- define "runstate.peeringName" -}}
{{- default (include "runstate.fullname" .) .Values.operator.peering }}
{{- end }}
