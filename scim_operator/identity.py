"""A person's identity and account state in LiteLLM (pure): which ``user_id`` a ScimUser becomes,
the ``sso_user_id`` that lets LiteLLM's SSO login find that user, and the account-level
deactivation mark the proxy honours.

LiteLLM's SSO login (``ui_sso.get_user_info_from_db``) resolves a person by the IdP's user id (Entra:
the object id; a generic OIDC provider: ``GENERIC_USER_ID_ATTRIBUTE``) as ``user_id``, then as
``sso_user_id``, then by email, and creates a new user only when all three miss. So the user SCIM
creates is the one SSO finds when its ``user_id`` or ``sso_user_id`` is that id, or its email matches."""

from __future__ import annotations

from typing import Any, Literal

from scim_contract import ScimUserSpec

Strategy = Literal["name", "externalId", "userName"]

# The key LiteLLM's own SCIM writes into a user's metadata; ``False`` makes the proxy refuse every
# key of that user (user_api_key_auth: "has been deactivated via SCIM"), including the session key a
# UI login issues. Absent means active, as LiteLLM's own SCIM reads it.
ACTIVE_MARK = "scim_active"


class NoUserId(Exception):
    """The strategy names an attribute this ScimUser does not have (no externalId)."""


def user_id_of(name: str, spec: ScimUserSpec, strategy: str) -> str | None:
    """The LiteLLM ``user_id`` the strategy gives: the resource name (the SCIM ``id``, never changes),
    the IdP's ``externalId``, or the ``userName``. None when the attribute is missing."""
    if strategy == "externalId":
        return spec.externalId or None
    if strategy == "userName":
        return spec.userName
    return name


def resolve(name: str, spec: ScimUserSpec, strategy: str, recorded: str | None) -> tuple[str, str | None]:
    """(the user_id to manage, a note when the strategy now gives another one).

    A user keeps the id it was created under (``recorded``, from its status): LiteLLM cannot rename
    a user, and its keys, spend and team memberships hang on that id. So a strategy or externalId
    change is refused per user (the note), not migrated; the person stays managed under the old id,
    deactivation included."""
    wanted = user_id_of(name, spec, strategy)
    if recorded:
        if wanted == recorded:
            return recorded, None
        now = f"would now be {wanted!r}" if wanted else f"has no {strategy} now"
        return recorded, (
            f"LiteLLM user {recorded} was created under another user id strategy or attribute value; "
            f"its id under --user-id-strategy {strategy} {now}. The user is kept under {recorded} "
            "(LiteLLM cannot rename a user); delete and re-provision it to move it"
        )
    if wanted is None:
        raise NoUserId(
            f"--user-id-strategy {strategy} needs the user's externalId, and this user has none; "
            "no LiteLLM user is created until the IdP sends one"
        )
    return wanted, None


def sso_user_id_of(spec: ScimUserSpec) -> str | None:
    """The IdP's id of the person, what LiteLLM's own SCIM stores as ``sso_user_id`` too."""
    return spec.externalId or None


def marked(metadata: dict[str, Any], active: bool) -> dict[str, Any]:
    """``metadata`` with the deactivation mark set (inactive) or taken away (active)."""
    result = dict(metadata)
    if active:
        if result.get(ACTIVE_MARK) is False:
            del result[ACTIVE_MARK]
    else:
        result[ACTIVE_MARK] = False
    return result


def mark_differences(active: bool, info: dict[str, Any]) -> list[str]:
    """Drift of the deactivation mark: what a person should read when LiteLLM disagrees."""
    meta = info.get("metadata")
    value = meta.get(ACTIVE_MARK) if isinstance(meta, dict) else None
    if not active and value is not False:
        return [f"user is not marked inactive (metadata.{ACTIVE_MARK} is {value!r})"]
    if active and value is False:
        return [f"user is marked inactive in LiteLLM (metadata.{ACTIVE_MARK} is False)"]
    return []
