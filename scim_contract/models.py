"""Typed views of the custom resources' spec and status, field for field as in ``crds/``.

``tests/test_contract.py`` checks that these models and the CRD schemas name the same fields, so the
manifests and the code cannot drift apart."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    # Unknown fields are an error: the CRD schema would prune them silently.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Name(_Model):
    formatted: str | None = None
    familyName: str | None = None
    givenName: str | None = None
    middleName: str | None = None
    honorificPrefix: str | None = None
    honorificSuffix: str | None = None


class MultiValued(_Model):
    value: str | None = None
    display: str | None = None
    type: str | None = None
    primary: bool | None = None


class Address(_Model):
    formatted: str | None = None
    streetAddress: str | None = None
    locality: str | None = None
    region: str | None = None
    postalCode: str | None = None
    country: str | None = None
    type: str | None = None
    primary: bool | None = None


class Manager(_Model):
    value: str | None = None
    displayName: str | None = None


class Enterprise(_Model):
    employeeNumber: str | None = None
    costCenter: str | None = None
    organization: str | None = None
    division: str | None = None
    department: str | None = None
    manager: Manager | None = None


class ScimUserSpec(_Model):
    userName: str = Field(min_length=1)
    externalId: str | None = None
    active: bool = True
    displayName: str | None = None
    nickName: str | None = None
    profileUrl: str | None = None
    title: str | None = None
    userType: str | None = None
    preferredLanguage: str | None = None
    locale: str | None = None
    timezone: str | None = None
    name: Name | None = None
    emails: list[MultiValued] | None = None
    phoneNumbers: list[MultiValued] | None = None
    ims: list[MultiValued] | None = None
    photos: list[MultiValued] | None = None
    entitlements: list[MultiValued] | None = None
    roles: list[MultiValued] | None = None
    x509Certificates: list[MultiValued] | None = None
    addresses: list[Address] | None = None
    enterprise: Enterprise | None = None

    def primary_email(self) -> str | None:
        """The primary email, else the first one, else userName when it looks like an address."""
        emails = [e for e in self.emails or [] if e.value]
        for email in emails:
            if email.primary:
                return email.value
        if emails:
            return emails[0].value
        return self.userName if "@" in self.userName else None


class ScimGroupSpec(_Model):
    displayName: str = Field(min_length=1)
    externalId: str | None = None


class ScimMemberShardSpec(_Model):
    group: str
    shard: int
    users: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)


class ScimNameClaimSpec(_Model):
    resourceKind: Literal["User", "Group"]
    value: str
    owner: str
    attribute: Literal["externalId"] | None = None


class Condition(_Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    lastTransitionTime: str | None = None
    observedGeneration: int | None = None


class LiteLLMUserRef(_Model):
    userId: str | None = None
    blockedKeys: list[str] | None = None


class LiteLLMTeamRef(_Model):
    teamId: str | None = None
    members: int | None = None


class ScimUserStatus(_Model):
    observedGeneration: int | None = None
    lastSyncTime: str | None = None
    groups: int | None = None
    policy: str | None = None
    policyGeneration: int | None = None
    role: str | None = None
    handledConfiguration: str | None = None
    litellm: LiteLLMUserRef | None = None
    conditions: list[Condition] | None = None


class GroupKeys(_Model):
    issued: int | None = None
    namespaces: list[str] | None = None


class ScimGroupStatus(_Model):
    observedGeneration: int | None = None
    lastSyncTime: str | None = None
    members: int | None = None
    policy: str | None = None
    handledConfiguration: str | None = None
    keys: GroupKeys | None = None
    litellm: LiteLLMTeamRef | None = None
    conditions: list[Condition] | None = None


# ---- ScimTeamPolicy ---------------------------------------------------------------------------
_DURATION = r"^[0-9]+(s|m|h|d|mo)$"
_GO_DURATION = r"^([0-9]+(\.[0-9]+)?(s|m|h))+$"


class LabelRequirement(_Model):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] | None = None


class LabelSelector(_Model):
    matchLabels: dict[str, str] | None = None
    matchExpressions: list[LabelRequirement] | None = None


class PolicySelector(_Model):
    displayNamePattern: str | None = Field(None, min_length=1, max_length=1024)
    externalIds: list[str] | None = None
    labelSelector: LabelSelector | None = None


class ObjectPermission(_Model):
    """What the team's keys may reach besides models (LiteLLM ``object_permission``)."""

    mcpServers: list[str] | None = None
    mcpAccessGroups: list[str] | None = None
    vectorStores: list[str] | None = None
    agents: list[str] | None = None
    agentAccessGroups: list[str] | None = None


class TeamSettings(_Model):
    models: list[str] | None = None
    maxBudget: float | None = Field(None, ge=0)
    budgetDuration: str | None = Field(None, pattern=_DURATION)
    tpmLimit: int | None = Field(None, ge=0)
    rpmLimit: int | None = Field(None, ge=0)
    maxBudgetPerMember: float | None = Field(None, ge=0)
    memberBudgetDuration: str | None = Field(None, pattern=_DURATION)
    tags: list[str] | None = None
    guardrails: list[str] | None = None
    blocked: bool | None = None
    objectPermission: ObjectPermission | None = None
    adminGroups: PolicySelector | None = None
    metadata: dict[str, str] | None = None


class KeyRotation(_Model):
    every: str | None = Field(None, pattern=_GO_DURATION)
    overlap: str | None = Field(None, pattern=_GO_DURATION)


class KeySpec(_Model):
    enabled: bool = False
    models: list[str] | None = None
    maxBudget: float | None = Field(None, ge=0)
    duration: str | None = Field(None, pattern=_DURATION)
    secretNamespaces: list[str] | None = None
    rotation: KeyRotation | None = None


class PolicyKeys(_Model):
    perMember: KeySpec | None = None
    perTeam: KeySpec | None = None


class ScimTeamPolicySpec(_Model):
    selector: PolicySelector | None = None
    default: bool = False
    priority: int = 0
    team: TeamSettings | None = None
    teamIdStrategy: Literal["name", "externalId"] | None = None
    deletionPolicy: Literal["delete", "keep"] | None = None
    driftPolicy: Literal["correct", "report"] | None = None
    keys: PolicyKeys | None = None


class ScimTeamPolicyStatus(_Model):
    observedGeneration: int | None = None
    selectedGroups: int | None = None
    syncedGroups: int | None = None
    conditions: list[Condition] | None = None


# ---- ScimUserPolicy ---------------------------------------------------------------------------
# The user attributes a userSelector may name: stored SCIM attributes, the enterprise extension's
# included (``manager`` is the manager's id, ``manager.value``).
UserSelectorAttribute = Literal[
    "department", "employeeNumber", "costCenter", "organization", "division", "manager", "userType", "title",
]
USER_SELECTOR_ATTRIBUTES: tuple[str, ...] = get_args(UserSelectorAttribute)
UserRole = Literal["proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer"]


class UserSelector(_Model):
    matchAttributes: dict[UserSelectorAttribute, str] | None = None


class UserSettings(_Model):
    role: UserRole | None = None
    maxBudget: float | None = Field(None, ge=0)
    budgetDuration: str | None = Field(None, pattern=_DURATION)
    models: list[str] | None = None
    tpmLimit: int | None = Field(None, ge=0)
    rpmLimit: int | None = Field(None, ge=0)


class ScimUserPolicySpec(_Model):
    selector: PolicySelector | None = None
    userSelector: UserSelector | None = None
    default: bool = False
    priority: int = 0
    user: UserSettings | None = None


class ScimUserPolicyStatus(_Model):
    observedGeneration: int | None = None
    selectedUsers: int | None = None
    conditions: list[Condition] | None = None
