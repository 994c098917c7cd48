"""Two replicas with Kopf peering: one works, the other stands by and takes over when it dies."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from operator_helpers import Admin, Kube, OperatorProcess, eventually, metric_sum
from product_access import ChartAccess

import scim_contract as c

pytestmark = [pytest.mark.litellm, pytest.mark.slow]

CALLS = "litellm_scim_operator_litellm_calls_total"


async def test_standby_replica_does_nothing_until_the_active_one_dies(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    chart_access: ChartAccess,
) -> None:
    # The chart's KopfPeering object: its Role may heartbeat into that one only.
    # A drift check every second: the standby must not make one (its indexes are not kept).
    peering = {"no-standalone": "", "peering": chart_access.peering, "peering_lifetime": "6",
               "drift_interval": "1"}
    active = start_operator(peering_priority="200", **peering)
    standby = start_operator(peering_priority="100", **peering)

    # Kopf starts peered replicas paused and resumes the one no higher-priority peer outranks.
    async def resumed(proc: OperatorProcess) -> bool:
        return "Resuming operations" in proc.log_text()

    await eventually(lambda: resumed(active), what="the active replica works")
    first = ids("pia")
    await kube_rw.create(c.USER, first, {"userName": f"{first}@example.com"})
    await eventually(lambda: admin.user(first), what="user created by the active replica")
    assert "user-create" in active.log_text()
    assert "user-create" not in standby.log_text()
    assert not await resumed(standby)

    async def drift_read() -> bool:
        return metric_sum(active.metrics(), CALLS, endpoint="/user/list") > 0

    await eventually(drift_read, within=20, what="the active replica checks drift")
    assert metric_sum(standby.metrics(), CALLS) == 0, "the standby called LiteLLM"

    active.kill()
    second = ids("quinn")
    await kube_rw.create(c.USER, second, {"userName": f"{second}@example.com"})
    await eventually(lambda: admin.user(second), within=60, what="standby took over")
    assert "user-create" in standby.log_text()
