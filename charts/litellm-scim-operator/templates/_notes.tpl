{{- /* The text NOTES.txt prints after install/upgrade; a define so tests can render it too. */ -}}
{{- define "lso.notes" -}}
{{- $ns := .Release.Namespace -}}
{{- $base := include "lso.scimBaseUrl" . -}}
litellm-scim-operator {{ .Chart.AppVersion }} is installed in namespace {{ $ns }}.

1. SCIM tenant URL (Entra ID "Tenant URL", Okta "SCIM connector base URL"):
{{- if $base }}

     {{ $base }}
{{- else }}

     (no ingress enabled) inside the cluster:
     http://{{ include "lso.endpoint.fullname" . }}.{{ $ns }}.svc:{{ .Values.endpoint.service.port }}/scim/v2

   Your identity provider needs a public HTTPS URL: set endpoint.ingress.enabled=true and
   endpoint.ingress.host, or expose the Service another way. To try it locally:
     kubectl -n {{ $ns }} port-forward svc/{{ include "lso.endpoint.fullname" . }} 8080:{{ .Values.endpoint.service.port }}
     # then http://127.0.0.1:8080/scim/v2
{{- end }}

2. Secret token (Entra ID "Secret Token", Okta "API token" as HTTP header "Authorization: Bearer ..."):
{{- if .Values.scimTokens.create }}

   The SCIM endpoint issues the first token, "{{ .Values.scimTokens.initialTokenName }}", into Secret {{ .Values.scimTokens.secretName }} within
   seconds of starting (tokens are never part of the Helm release). Read it with:

     kubectl -n {{ $ns }} get secret {{ .Values.scimTokens.secretName }} -o jsonpath='{.data.{{ .Values.scimTokens.initialTokenName }}}' | base64 -d; echo

   Nothing printed yet? Wait for the endpoint: kubectl -n {{ $ns }} rollout status deploy/{{ include "lso.endpoint.fullname" . }}
{{- else }}

   scimTokens.create is false: create the Secret and a token yourself, e.g.
     litellm-scim token create {{ .Values.scimTokens.initialTokenName }} --namespace {{ $ns }} --token-secret {{ .Values.scimTokens.secretName }}
{{- end }}

   Rotate without downtime: add a token, paste it into the IdP, then revoke the old one; the
   endpoint picks up both changes without a restart:
     litellm-scim token create <name> --namespace {{ $ns }} --token-secret {{ .Values.scimTokens.secretName }}
     litellm-scim token revoke {{ .Values.scimTokens.initialTokenName }} --namespace {{ $ns }} --token-secret {{ .Values.scimTokens.secretName }}

3. Watch provisioning:

     kubectl -n {{ $ns }} get scim
     kubectl -n {{ $ns }} logs deploy/{{ include "lso.operator.fullname" . }}
{{- end -}}
