"""LiteLLM's own SSO sign-in lookup, run once per identity against a proxy's database, without an IdP.

Run with the Python of the proxy's installation (the tests' environment has no litellm), with
``DATABASE_URL`` and the kit's environment (``litellm-peer/env.sh``):

    python litellm_sso_login.py '[["<IdP user id>", "<email>"], ...]'

For each identity it calls ``ui_sso.get_user_info_from_db`` with the arguments LiteLLM's SSO
callback passes after the IdP answered: it looks the person up (user_id, then sso_user_id, then email) and
creates a user when that finds nobody. Prints one JSON list: the user_id each sign-in resolved to."""

from __future__ import annotations

import asyncio
import json
import os
import sys


async def main(identities: list[list[str]]) -> list[str | None]:
    from litellm.proxy import proxy_server
    from litellm.proxy._types import SSOUserDefinedValues
    from litellm.proxy.common_utils.user_api_key_cache import UserApiKeyCache
    from litellm.proxy.management_endpoints.types import CustomOpenID
    from litellm.proxy.management_endpoints.ui_sso import get_user_info_from_db
    from litellm.proxy.utils import PrismaClient, ProxyLogging

    cache = UserApiKeyCache()
    logging_obj = ProxyLogging(user_api_key_cache=cache)
    prisma = PrismaClient(database_url=os.environ["DATABASE_URL"], proxy_logging_obj=logging_obj)
    await prisma.connect()
    # Creating a user goes through the proxy's management code, which reads the process's client.
    proxy_server.prisma_client = prisma
    resolved: list[str | None] = []
    try:
        for sso_id, email in identities:
            result = CustomOpenID(id=sso_id, email=email, display_name=None, provider="microsoft", team_ids=[])
            # What the callback (ui_sso.auth_callback) builds from the IdP's answer and passes on.
            defaults = SSOUserDefinedValues(models=[], user_id=sso_id, user_email=email, max_budget=None,
                                            user_role=None, budget_duration=None)
            user = await get_user_info_from_db(
                result=result, prisma_client=prisma, user_api_key_cache=cache, proxy_logging_obj=logging_obj,
                user_email=email, user_defined_values=defaults, alternate_user_id=sso_id,
            )
            resolved.append(None if user is None else str(user.user_id))
    finally:
        await prisma.disconnect()
    return resolved


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
