"""API group, resource names, labels and the deterministic naming rules both halves rely on."""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass

API_GROUP = "scim.litellm-operator.dev"
VERSION = "v1alpha1"
API_VERSION = f"{API_GROUP}/{VERSION}"


@dataclass(frozen=True)
class ResourceKind:
    kind: str
    plural: str

    @property
    def api_version(self) -> str:
        return API_VERSION


USER = ResourceKind("ScimUser", "scimusers")
GROUP = ResourceKind("ScimGroup", "scimgroups")
SHARD = ResourceKind("ScimMemberShard", "scimmembershards")
CLAIM = ResourceKind("ScimNameClaim", "scimnameclaims")
POLICY = ResourceKind("ScimTeamPolicy", "scimteampolicies")
USER_POLICY = ResourceKind("ScimUserPolicy", "scimuserpolicies")

# The operator's finalizer on ScimUsers and ScimGroups: LiteLLM access is removed before the
# resource goes. The endpoint creates both with it already set, which spares the operator a write
# and a processing cycle per new object; without an operator a deleted resource therefore stays
# Terminating (to SCIM clients it is gone at once).
FINALIZER = f"{API_GROUP}/litellm-cleanup"
# Label on every ScimMemberShard: the name of the ScimGroup it belongs to.
LABEL_GROUP = f"{API_GROUP}/group"
# RFC 3339 time of the last SCIM write to a resource (meta.lastModified); creation time is
# metadata.creationTimestamp.
ANNOTATION_LAST_MODIFIED = f"{API_GROUP}/last-modified"

# A group's members are spread over this many shards. With 50,000 members a shard holds ~6,250 ids
# (~250 KB), far below the API server's ~1.5 MiB object limit; changing the number re-homes members,
# so it is part of the contract.
SHARDS = 8


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def shard_of(member_id: str) -> int:
    """The shard a member id lives in; stable across processes and Python versions."""
    return int(_digest(member_id)[:8], 16) % SHARDS


def shard_name(group: str, shard: int) -> str:
    return f"{group}-m{shard}"


def fold(value: str) -> str:
    """The form in which two case-insensitive values (``caseExact: false``) are the same value: NFC,
    case-folded, NFC again (case folding can decompose: ``İ`` becomes ``i`` + U+0307). So ``é``
    composed or decomposed, ``ß``/``SS``/``ss`` and any case are one name. Not NFKC: compatibility
    folding would also merge distinct-looking names (``ﬁ``/``fi``, superscripts, full-width forms),
    which RFC 7643 does not ask. ASCII folds to its lower case, as ``str.casefold`` alone did."""
    if value.isascii():  # the common case, and a filter may fold every stored name once per term
        return value.lower()
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", value).casefold())


def claim_name(resource_kind: str, value: str, attribute: str | None = None) -> str:
    """Name of the ScimNameClaim that reserves ``value`` of ``attribute``: by default the type's
    unique attribute (userName or group displayName), otherwise e.g. a group's externalId.

    userName and displayName are case-insensitive in RFC 7643, so their claims are too (see ``fold``).
    A value typed in NFC whose case folding stays in NFC (every ASCII value, and most others) keeps the
    claim name it had before ``fold`` normalised, so existing claims stay valid. Other attributes
    (externalId) are case-exact and claimed as written."""
    prefix = {"User": "user", "Group": "group"}[resource_kind]
    if attribute is None:
        return f"{prefix}-{_digest(fold(value))[:40]}"
    return f"{prefix}-{attribute.lower()}-{_digest(value)[:40]}"
