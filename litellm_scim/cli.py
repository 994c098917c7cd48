"""``litellm-scim`` — one console script, one subcommand per process.

Flags are generated from the pydantic settings classes, so every flag also has an environment
variable and the defaults live in one place (``settings.py``)."""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from scim_common.settings import EndpointSettings, OperatorSettings


def _flag(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _is_bool(annotation: Any) -> bool:
    if annotation is bool:
        return True
    args = typing.get_args(annotation)
    return isinstance(annotation, types.UnionType) and bool in args


def add_settings_flags(parser: argparse.ArgumentParser, settings_cls: type[BaseSettings]) -> None:
    prefix = settings_cls.model_config.get("env_prefix", "")
    for name, field in settings_cls.model_fields.items():
        env = field.validation_alias if isinstance(field.validation_alias, str) else f"{prefix}{name.upper()}"
        default = field.default
        shown = "unset" if default is None or "key" in name else default
        help_text = f"{field.description or ''} (env {env}; default {shown})"
        if _is_bool(field.annotation):
            parser.add_argument(
                _flag(name), dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            is_literal = typing.get_origin(field.annotation) is typing.Literal
            choices = typing.get_args(field.annotation) if is_literal else None
            parser.add_argument(
                _flag(name), dest=name, default=argparse.SUPPRESS, choices=choices, help=help_text,
                metavar=None if choices else name.upper(),
            )


S = TypeVar("S", bound=BaseSettings)


def settings_from_args(settings_cls: type[S], ns: argparse.Namespace) -> S:
    given = {k: v for k, v in vars(ns).items() if k in settings_cls.model_fields}
    try:
        return settings_cls(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_flag(str(err['loc'][0])) if err['loc'] else 'settings'}: {err['msg']}" for err in exc.errors()
        )
        raise SystemExit(f"litellm-scim: invalid configuration: {problems}") from None


def _run_endpoint(ns: argparse.Namespace) -> int:
    from scim_endpoint.server import run

    return int(run(settings_from_args(EndpointSettings, ns)))


def _run_operator(ns: argparse.Namespace) -> int:
    from scim_operator.main import run

    return int(run(settings_from_args(OperatorSettings, ns)))


def _run_dev(ns: argparse.Namespace) -> int:
    from litellm_scim.dev import run

    return int(run(ns))


def _run_token(ns: argparse.Namespace) -> int:
    from litellm_scim.token_command import run

    return int(run(ns))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="litellm-scim",
        description="Provision identity-provider users and groups into LiteLLM through SCIM and Kubernetes.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    endpoint = sub.add_parser("endpoint", help="Run the SCIM 2.0 endpoint (writes ScimUser/ScimGroup resources)")
    add_settings_flags(endpoint, EndpointSettings)
    endpoint.set_defaults(func=_run_endpoint)

    operator = sub.add_parser("operator", help="Run the operator (reconciles the resources into LiteLLM)")
    add_settings_flags(operator, OperatorSettings)
    operator.set_defaults(func=_run_operator)

    dev = sub.add_parser("dev", help="Run the whole system locally: API server, LiteLLM, endpoint and operator")
    dev.add_argument("--state-dir", default=".state/dev", help="Where local servers keep their data")
    dev.add_argument("--namespace", default="default", help="Namespace for the resources")
    dev.add_argument("--port", type=int, default=8080, help="Port of the SCIM endpoint")
    dev.set_defaults(func=_run_dev)

    token = sub.add_parser(
        "token", help="Create, list or revoke the SCIM bearer tokens the endpoint accepts",
        description="Manage the SCIM bearer tokens in the Secret the endpoint reads. `create` prints the new "
        "token once; `list` shows names and creation times only; `revoke` takes effect on the running endpoint.",
    )
    token.add_argument("action", choices=["create", "list", "revoke"])
    token.add_argument("name", nargs="?", help="Token name (create: optional, default token-<time>; revoke: required)")
    token.add_argument("--namespace", default=None,
                       help="Namespace of the endpoint (env LITELLM_SCIM_NAMESPACE; default default)")
    token.add_argument("--token-secret", default=None,
                       help="Secret holding the tokens (env LITELLM_SCIM_TOKEN_SECRET; default litellm-scim-tokens)")
    token.add_argument("--kubeconfig", default=None, help="Path to a kubeconfig (default $KUBECONFIG, ~/.kube/config)")
    token.add_argument("--base-url", default=None,
                       help="SCIM tenant URL printed with a new token, e.g. https://scim.example.com/scim/v2 "
                       "(env LITELLM_SCIM_BASE_URL)")
    token.set_defaults(func=_run_token)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = ns.func
    return func(ns)


if __name__ == "__main__":
    sys.exit(main())
