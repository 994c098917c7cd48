"""The SCIM resource types the endpoint serves, each described once: its endpoint, schema, the
conversions of its canonical form, and its store collection. ``app`` routes and ``service`` handle
every type by one path keyed by these descriptions (the way scim2-server's backend keys its handling
by resource type); what is particular to a type is data or a hook here, not a parallel function."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from scim_endpoint import convert
from scim_endpoint.schema import ResourceSchema, resource_schema
from scim_endpoint.store import GROUPS, USERS, Collection, Record, Store

Resource = dict[str, Any]


@dataclass(frozen=True, eq=False)
class ResourceType:
    name: str  # "User": the schema, meta.resourceType, filters, PATCH
    endpoint: str  # "Users": the collection under the base path (matched in any case)
    collection: Collection  # where the store keeps it, and its unique attribute
    to_spec: Callable[[Mapping[str, Any]], Resource]  # canonical resource -> custom-resource spec
    # stored spec, id, meta and what ``related`` gives -> the full SCIM resource
    to_scim: Callable[[Mapping[str, Any], str, Resource, list[Resource]], Resource]
    # What a response shows besides the stored spec (a user's groups, a group's members), and a cheap
    # value that changes whenever that does (rendered resources are cached on it).
    related: Callable[[Store, Record], list[Resource]]
    related_version: Callable[[Store, Record], Hashable]
    # PATCH answers 204 without a body unless the client asks for attributes (Entra expects it for groups).
    patch_no_content: bool = False

    @property
    def schema(self) -> ResourceSchema:
        return resource_schema(self.name)

    @property
    def unique(self) -> str:
        """The attribute kept unique (case-insensitively) across resources of this type."""
        return self.collection.unique

    def from_request(self, body: Any, current: Mapping[str, Any] | None = None) -> Resource:
        return convert.from_request(body, self.name, current=current)


def _user_groups(store: Store, rec: Record) -> list[Resource]:
    return store.user_groups(rec.id)


def _user_groups_version(store: Store, rec: Record) -> Hashable:
    return tuple((g["value"], g["display"]) for g in store.user_groups(rec.id))


def _members(store: Store, rec: Record) -> list[Resource]:
    return rec.members()


def _members_version(store: Store, rec: Record) -> Hashable:
    # A group's version digests its member shards' generations.
    return str(rec.meta["version"])


USER = ResourceType("User", "Users", USERS, convert.user_to_spec, convert.user_to_scim,
                    _user_groups, _user_groups_version)
GROUP = ResourceType("Group", "Groups", GROUPS, convert.group_to_spec, convert.group_to_scim,
                     _members, _members_version, patch_no_content=True)
TYPES = (USER, GROUP)
_BY_ENDPOINT = {t.endpoint.lower(): t for t in TYPES}


def by_endpoint(endpoint: str) -> ResourceType | None:
    """The type served at ``/<endpoint>`` (in any case), or None."""
    return _BY_ENDPOINT.get(endpoint.lower())
