"""SCIM errors (RFC 7644 section 3.12): every failure the endpoint reports has this shape."""

from __future__ import annotations

from typing import Any

ERROR_URN = "urn:ietf:params:scim:api:messages:2.0:Error"


class ScimError(Exception):
    """An error answered as a SCIM Error body; ``scim_type`` is one of RFC 7644 table 9
    (invalidFilter, tooMany, uniqueness, mutability, invalidSyntax, invalidPath, noTarget,
    invalidValue, invalidVers, sensitive) or None."""

    def __init__(self, status: int, detail: str, scim_type: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.scim_type = scim_type

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemas": [ERROR_URN], "status": str(self.status), "detail": self.detail}
        if self.scim_type:
            out["scimType"] = self.scim_type
        return out


def not_found(detail: str) -> ScimError:
    return ScimError(404, detail)


def conflict(detail: str) -> ScimError:
    return ScimError(409, detail, "uniqueness")
