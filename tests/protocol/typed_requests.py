"""``convert.from_request`` for one resource type each: the calls these tests make most."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scim_endpoint.convert import from_request


def user_from_request(body: Any, *, current: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return from_request(body, "User", current=current)


def group_from_request(body: Any, *, current: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return from_request(body, "Group", current=current)
