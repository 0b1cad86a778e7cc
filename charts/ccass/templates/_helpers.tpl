{{/* Names and labels. */}}
{{- define "ccass.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ccass.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ccass.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "ccass.credentialsSecret" -}}
{{- default (printf "%s-credentials" (include "ccass.fullname" .)) .Values.credentials.existingSecret -}}
{{- end -}}

{{/* One TOML value: strings, numbers, booleans, arrays, and inline tables for maps. */}}
{{- define "ccass.tomlValue" -}}
{{- if kindIs "map" . -}}
{ {{- $first := true -}}{{- range $key, $value := . -}}{{- if not $first }}, {{ end -}}{{- $first = false -}}{{ $key }} = {{ include "ccass.tomlValue" $value }}{{- end -}} }
{{- else if kindIs "float64" . -}}
{{- if eq . (floor .) -}}{{ int64 . }}{{- else -}}{{ . }}{{- end -}}
{{- else -}}
{{- toJson . -}}
{{- end -}}
{{- end -}}

{{/*
A Deployment of one ccass process. Arguments: root (the chart context), component (name),
values (the component's values), args (the ccass subcommand), ports (list of {name, port}).
*/}}
{{- define "ccass.deployment" -}}
{{- $root := .root -}}
{{- $values := .values -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "ccass.fullname" $root }}-{{ .component }}
  labels:
    {{- include "ccass.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  replicas: {{ $values.replicas }}
  selector:
    matchLabels:
      {{- include "ccass.selector" (dict "root" $root "component" .component) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "ccass.selector" (dict "root" $root "component" .component) | nindent 8 }}
        {{- if $values.opsPort }}
        ccass.io/ops-port: "true"
        {{- end }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        {{- if and $values.opsPort $root.Values.metrics.annotations }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ $root.Values.ops.port | quote }}
        prometheus.io/path: /metrics
        {{- end }}
    spec:
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: ccass
          image: "{{ $root.Values.image.repository }}:{{ default $root.Chart.AppVersion $root.Values.image.tag }}"
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            {{- toYaml .args | nindent 12 }}
          env:
            - name: CCASS_CONFIG_DIR
              value: /etc/ccass/config
            - name: CCASS_ENV
              value: {{ $root.Values.environment | quote }}
            - name: CCASS_HOSTDB__PASSWORD
              valueFrom:
                secretKeyRef:
                  name: {{ include "ccass.credentialsSecret" $root }}
                  key: hostdb-password
            - name: CCASS_DIRECTORY__BIND_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: {{ include "ccass.credentialsSecret" $root }}
                  key: directory-bind-password
          ports:
            {{- range .ports }}
            - name: {{ .name }}
              containerPort: {{ .port }}
              protocol: TCP
            {{- end }}
            {{- if $values.opsPort }}
            - name: ops
              containerPort: {{ $root.Values.ops.port }}
              protocol: TCP
            {{- end }}
          {{- $probePort := "ops" -}}
          {{- if not $values.opsPort -}}
          {{- $probePort = "" -}}
          {{- with .ports }}{{ $probePort = (index . 0).name }}{{ end -}}
          {{- end }}
          {{- if $values.opsPort }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: ops
            {{- toYaml $root.Values.probes.readiness | nindent 12 }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: ops
            {{- toYaml $root.Values.probes.liveness | nindent 12 }}
          {{- else if $probePort }}
          readinessProbe:
            tcpSocket:
              port: {{ $probePort }}
            {{- toYaml $root.Values.probes.readiness | nindent 12 }}
          livenessProbe:
            tcpSocket:
              port: {{ $probePort }}
            {{- toYaml $root.Values.probes.liveness | nindent 12 }}
          {{- end }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          resources:
            {{- toYaml $values.resources | nindent 12 }}
          volumeMounts:
            - name: config
              mountPath: /etc/ccass/config
              readOnly: true
            - name: pki
              mountPath: {{ $root.Values.config.pki.dir }}
              readOnly: true
      volumes:
        - name: config
          configMap:
            name: {{ include "ccass.fullname" $root }}-config
        - name: pki
          secret:
            secretName: {{ $root.Values.pki.secretName }}
      {{- with $root.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}
