"""Pure rules of key delivery: names, aliases, labels and bodies of the Secrets that carry virtual keys.

One Secret holds one key. The key's plaintext is only ever in the Secret's ``data``; everything the
operator must remember about a key (its hash, its alias, when it was issued, which retired keys
still await deletion) is in the Secret's annotations, so the operator keeps no state of its own and a
restart picks up exactly where it stopped. Those annotations are hints, never authority: whoever may
write Secrets in the namespace can change them, so the operator confirms every hash in LiteLLM
before acting on it (see keys.py), and a Secret whose annotations name another key than its own name
does is not read as a key Secret at all."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scim_common import clock
from scim_contract import API_GROUP

MANAGED_BY = ("app.kubernetes.io/managed-by", "litellm-scim-operator")
LABEL_GROUP = f"{API_GROUP}/group"
LABEL_USER = f"{API_GROUP}/user"
# Namespace of the ScimGroup: key Secrets may live in other namespaces.
LABEL_SOURCE = f"{API_GROUP}/source-namespace"
LABEL_KIND = f"{API_GROUP}/key"

_A = f"keys.{API_GROUP}"
ANN_HASH = f"{_A}/hash"
ANN_ALIAS = f"{_A}/alias"
ANN_ISSUED = f"{_A}/issued-at"
ANN_ROTATION = f"{_A}/rotation-request"
ANN_RETIRING = f"{_A}/retiring"
ANN_GROUP = f"{_A}/group"
ANN_USER = f"{_A}/user"

# On a ScimGroup: any new value rotates every key of the group now.
ANNOTATION_ROTATE = f"{API_GROUP}/rotate-keys"

TEAM = "team"
MEMBER = "member"


@dataclass(frozen=True, order=True)
class KeyRef:
    """One key: of a group's member (``user`` set) or of the group itself, in one target namespace."""

    source_namespace: str
    group: str
    user: str | None
    namespace: str

    @property
    def kind(self) -> str:
        return MEMBER if self.user else TEAM


def _short(value: str, limit: int) -> str:
    if len(value) <= limit:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:10]
    return f"{value[: limit - 11]}-{digest}"


def key_alias(ref: KeyRef) -> str:
    """Deterministic LiteLLM key_alias: ``scim:<namespace>:<group>:<user or @team>@<secret namespace>``."""
    return f"scim:{ref.source_namespace}:{ref.group}:{ref.user or '@team'}@{ref.namespace}"


def secret_name(ref: KeyRef) -> str:
    base = f"litellm-key-{ref.group}-{ref.user}" if ref.user else f"litellm-team-key-{ref.group}"
    name = re.sub(r"[^a-z0-9.-]", "-", base.lower()).strip("-.")
    return _short(name, 253)


_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def label_value(value: str) -> str:
    """Label values are at most 63 characters of a restricted alphabet; others become a digest."""
    if len(value) <= 63 and _LABEL_VALUE.match(value):
        return value
    return "h-" + hashlib.sha256(value.encode()).hexdigest()[:40]


def group_selector(source_namespace: str, group: str) -> str:
    return f"{LABEL_SOURCE}={label_value(source_namespace)},{LABEL_GROUP}={label_value(group)}"


def labels(ref: KeyRef) -> dict[str, str]:
    result = {
        MANAGED_BY[0]: MANAGED_BY[1],
        LABEL_SOURCE: label_value(ref.source_namespace),
        LABEL_GROUP: label_value(ref.group),
        LABEL_KIND: ref.kind,
    }
    if ref.user:
        result[LABEL_USER] = label_value(ref.user)
    return result




@dataclass(frozen=True)
class Retiring:
    """A replaced key that stays valid until ``delete_at`` (epoch seconds), then is deleted. Stored
    as its hash and an RFC 3339 deadline: enough to delete it, useless to anyone reading the Secret's
    annotations."""

    key_hash: str
    delete_at: float


def retiring(annotations: Mapping[str, str] | None) -> list[Retiring]:
    raw = (annotations or {}).get(ANN_RETIRING)
    if not raw:
        return []
    try:
        items = json.loads(raw)
        return [Retiring(str(i["hash"]), clock.epoch(str(i["deleteAt"]))) for i in items]
    except (ValueError, KeyError, TypeError):
        return []


def retiring_value(items: list[Retiring]) -> str | None:
    if not items:
        return None
    listed = [{"hash": r.key_hash, "deleteAt": clock.rfc3339(r.delete_at, millis=True)} for r in items]
    return json.dumps(listed, separators=(",", ":"))


@dataclass(frozen=True)
class Delivered:
    """A key Secret as read back: which key it names (never its plaintext)."""

    ref: KeyRef
    name: str
    key_hash: str | None
    alias: str | None
    issued_at: float
    rotation_request: str
    retiring: list[Retiring]


def read(secret: Mapping[str, Any]) -> Delivered | None:
    """The key facts of a Secret this operator wrote; None for anything else."""
    meta = secret.get("metadata") or {}
    ann = meta.get("annotations") or {}
    lab = meta.get("labels") or {}
    if lab.get(MANAGED_BY[0]) != MANAGED_BY[1] or ANN_GROUP not in ann:
        return None
    group_ns, _, group = str(ann[ANN_GROUP]).partition("/")
    ref = KeyRef(group_ns, group, ann.get(ANN_USER) or None, str(meta.get("namespace")))
    if secret_name(ref) != meta.get("name"):
        return None  # annotations re-pointed at another member's or group's key
    try:
        issued = clock.epoch(str(ann.get(ANN_ISSUED) or ""))
    except ValueError:
        issued = 0.0
    return Delivered(
        ref=ref,
        name=str(meta.get("name")),
        key_hash=ann.get(ANN_HASH) or None,
        alias=ann.get(ANN_ALIAS) or None,
        issued_at=issued,
        rotation_request=str(ann.get(ANN_ROTATION) or ""),
        retiring=retiring(ann),
    )


def secret_body(
    ref: KeyRef,
    *,
    plaintext: str,
    base_url: str,
    key_hash: str,
    issued_at: float,
    rotation_request: str,
    retiring_keys: list[Retiring],
    owner: Mapping[str, str] | None,
) -> dict[str, Any]:
    """The Secret delivering one key. ``owner``: the ScimGroup (apiVersion, kind, name, uid) when the
    Secret is in the group's namespace, so Kubernetes garbage-collects it with the group."""
    annotations = {
        ANN_GROUP: f"{ref.source_namespace}/{ref.group}",
        ANN_HASH: key_hash,
        ANN_ALIAS: key_alias(ref),
        ANN_ISSUED: clock.rfc3339(issued_at, millis=True),
        ANN_ROTATION: rotation_request,
    }
    if ref.user:
        annotations[ANN_USER] = ref.user
    value = retiring_value(retiring_keys)
    if value:
        annotations[ANN_RETIRING] = value
    metadata: dict[str, Any] = {
        "name": secret_name(ref),
        "namespace": ref.namespace,
        "labels": labels(ref),
        "annotations": annotations,
    }
    if owner is not None:
        metadata["ownerReferences"] = [{**owner, "controller": True, "blockOwnerDeletion": False}]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata,
        "data": {
            "api-key": base64.b64encode(plaintext.encode()).decode(),
            "base-url": base64.b64encode(base_url.encode()).decode(),
        },
    }
