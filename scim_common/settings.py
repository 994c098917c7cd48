"""Configuration of every process, by flag or environment variable (flags win).

Each field of a settings class is one flag (``--token-secret``) and one environment variable
(``LITELLM_SCIM_TOKEN_SECRET``); ``cli.py`` builds the flags from these classes, so the Helm chart,
the README and ``--help`` all read the same names and defaults from here."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LITELLM_SCIM_", extra="ignore")

    namespace: str = Field("default", description="Namespace holding the ScimUser/ScimGroup resources")
    kubeconfig: str | None = Field(
        None, description="Path to a kubeconfig; default: in-cluster config, else $KUBECONFIG/~/.kube/config"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level")
    log_format: Literal["json", "text"] = Field("json", description="Structured JSON logs or plain text")


class EndpointSettings(CommonSettings):
    host: str = Field("0.0.0.0", description="Address the SCIM endpoint listens on")  # noqa: S104
    port: int = Field(8080, description="Port of the SCIM API (/scim/v2) and of /healthz, /readyz")
    metrics_port: int = Field(9090, description="Port of the Prometheus /metrics endpoint (0 disables it)")
    token_secret: str = Field(
        "litellm-scim-tokens",
        description="Secret whose values are the accepted bearer tokens (several at once, for rotation)",
    )
    base_url: str | None = Field(
        None, description="Public base URL of the SCIM API for meta.location, e.g. https://scim.example.com/scim/v2"
    )
    max_body_bytes: int = Field(1_048_576, description="Largest request body accepted (413 above)")
    max_results: int = Field(1000, description="Largest page a list or search returns (ServiceProviderConfig)")
    max_filter_length: int = Field(4096, description="Longest filter accepted, in characters (400 invalidFilter above)")
    max_filter_terms: int = Field(100, description="Most comparisons in one filter (400 invalidFilter above)")
    max_attributes: int = Field(
        100, description="Most names in attributes or excludedAttributes (400 tooMany above)")
    max_patch_operations: int = Field(1000, description="Most operations in one PATCH (400 tooMany above)")
    max_json_depth: int = Field(32, description="Deepest nesting of a request body (400 invalidSyntax above)")
    unique_group_external_id: bool = Field(
        False,
        description="Refuse a group whose externalId another group holds (409); for --team-id-strategy externalId")
    max_object_bytes: int = Field(
        1_000_000,
        description="Largest serialized user or group (400 invalidValue above; etcd stores at most 1.5 MiB)")
    audit_events: bool = Field(
        True,
        description="Record every SCIM write as a Kubernetes Event on its ScimUser/ScimGroup (always logged)")


class OperatorSettings(CommonSettings):
    litellm_url: str = Field("http://127.0.0.1:4000", description="Base URL of the LiteLLM proxy")
    litellm_master_key: SecretStr | None = Field(
        None,
        description="LiteLLM master key; prefer --litellm-master-key-secret or the LITELLM_MASTER_KEY variable",
        validation_alias="LITELLM_MASTER_KEY",
    )
    litellm_master_key_secret: str | None = Field(
        None, description="NAME/KEY of a Secret in --namespace holding the LiteLLM master key"
    )
    litellm_timeout: float = Field(30.0, description="Timeout of one LiteLLM admin API call, in seconds")
    litellm_concurrency: int = Field(8, description="LiteLLM admin API calls in flight at once")
    drift_interval: float = Field(300.0, description="Seconds between drift checks of one resource")
    drift_policy: Literal["correct", "report"] = Field(
        "correct", description="On drift: correct LiteLLM, or only report it"
    )
    team_id_strategy: Literal["name", "externalId"] = Field(
        "name",
        description="LiteLLM team_id from the ScimGroup name, or from its externalId (same team as LiteLLM SSO sync)",
    )
    user_id_strategy: Literal["name", "externalId", "userName"] = Field(
        "name",
        description="LiteLLM user_id from the ScimUser name (the SCIM id), its externalId or its userName: the id "
        "LiteLLM's SSO login resolves the person by (kept per user once created; a change is refused)",
    )
    deletion_policy: Literal["delete", "keep"] = Field(
        "delete", description="What happens to a LiteLLM team when its ScimGroup is deleted"
    )
    adopt: bool = Field(False, description="Take over LiteLLM objects with the right id but no ownership tag")
    owner_tag: str = Field(
        "litellm-scim-operator", description="Ownership tag written into the metadata of LiteLLM objects"
    )
    probe_port: int = Field(8081, description="Port of the liveness/readiness probe (/healthz)")
    metrics_port: int = Field(9090, description="Port of the Prometheus /metrics endpoint (0 disables it)")
    peering: str = Field("litellm-scim-operator", description="Kopf peering name (one active replica)")
    standalone: bool = Field(False, description="Run without peering (no standby replica)")
    peering_priority: int = Field(
        0, description="Kopf peering priority; the highest-priority replica works, others stand by (0: random)"
    )
    peering_lifetime: int = Field(
        60, description="Seconds after its last heartbeat before a silent replica is considered dead"
    )
