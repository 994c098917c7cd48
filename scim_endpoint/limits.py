"""Caps on what one request may cost (pure).

Within the body limit a client can still send work out of all proportion to any real IdP's: a
filter of tens of thousands of ``or`` terms, thousands of attribute names or PATCH operations, JSON
nested until the parser recurses out of stack, or values that add up to an object Kubernetes will not
store. Each is refused before any work is done, with the SCIM error an IdP can act on (RFC 7644
section 3.12): ``invalidFilter`` for a filter, ``tooMany`` for a count (attributes, operations),
``invalidSyntax`` for nesting and ``invalidValue`` for an object too large to store (a 503 would be
retried forever)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from scim_endpoint.errors import ScimError


@dataclass(frozen=True)
class Limits:
    """The caps; the defaults are far above what Entra ID, Okta and OneLogin send (see README)."""

    max_filter_length: int = 4096
    max_filter_terms: int = 100
    max_attributes: int = 100
    max_patch_operations: int = 1000
    max_json_depth: int = 32
    # The serialized spec of one ScimUser/ScimGroup. etcd refuses a write above 1.5 MiB, and the
    # stored object carries metadata and managedFields besides the spec.
    max_object_bytes: int = 1_000_000


def json_loads(raw: bytes, limits: Limits) -> Any:
    """Parse a request body; nesting deeper than the limit is 400 invalidSyntax, never a
    RecursionError (a 500)."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise _too_deep(limits) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ScimError(400, f"The request body is not valid JSON: {exc}", "invalidSyntax") from None
    if _depth_exceeds(value, limits.max_json_depth):
        raise _too_deep(limits)
    return value


def _too_deep(limits: Limits) -> ScimError:
    return ScimError(400, f"The request body nests deeper than {limits.max_json_depth} levels", "invalidSyntax")


def _depth_exceeds(value: Any, limit: int) -> bool:
    # Iterative: the point is not to recurse as deep as the client wants.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def check_filter_length(expr: str, limits: Limits) -> None:
    if len(expr) > limits.max_filter_length:
        raise ScimError(400, f"The filter is longer than {limits.max_filter_length} characters", "invalidFilter")


def check_filter_terms(terms: int, maximum: int) -> None:
    if terms > maximum:
        raise ScimError(400, f"The filter has more than {maximum} terms", "invalidFilter")


def check_attribute_count(names: list[str] | None, what: str, limits: Limits) -> None:
    if names is not None and len(names) > limits.max_attributes:
        raise ScimError(400, f"{what} names more than {limits.max_attributes} attributes", "tooMany")


def check_operation_count(count: int, maximum: int) -> None:
    if count > maximum:
        raise ScimError(400, f"A PATCH may carry at most {maximum} operations", "tooMany")


def check_object_size(spec: dict[str, Any], what: str, limits: Limits) -> None:
    """Refuse a spec Kubernetes would not store (or only up to the point where the next change fails)."""
    size = len(json.dumps(spec, separators=(",", ":"), ensure_ascii=False).encode())
    if size > limits.max_object_bytes:
        raise object_too_large(what, f"the {limits.max_object_bytes} bytes one stored object may hold")


def object_too_large(what: str, limit: str) -> ScimError:
    return ScimError(400, f"The {what} would be larger than {limit}", "invalidValue")
