"""The test suite's own guard: the product runs with the chart's ServiceAccounts, and a refused request
of theirs fails the test that caused it."""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from product_access import ChartAccess, apiserver_log, product_denials

from litellm_scim import peers
from scim_common import kube


@pytest.mark.denials("provokes a refusal to show that the guard sees it")
async def test_a_refused_request_of_the_product_is_seen(chart_access: ChartAccess, cluster: peers.KubeCluster,
                                                        namespace: str) -> None:
    log = apiserver_log(cluster)
    if log is None:
        pytest.skip("an existing cluster: its API server log is not readable from here")
    start = log.stat().st_size
    api = await kube.api_client(chart_access.operator_kubeconfig)
    async with api:
        with pytest.raises(ApiException) as refused:
            await client.CoreV1Api(api).list_namespaced_secret(namespace)
    assert refused.value.status == 403
    denied = product_denials(log, start)
    assert len(denied) == 1
    assert f'user="{chart_access.operator_user}"' in denied[0]
    assert 'verb="list"' in denied[0] and 'resource="secrets"' in denied[0]


async def test_each_process_is_its_own_service_account(chart_access: ChartAccess, namespace: str) -> None:
    for kubeconfig, user in [(chart_access.endpoint_kubeconfig, chart_access.endpoint_user),
                             (chart_access.operator_kubeconfig, chart_access.operator_user)]:
        api = await kube.api_client(kubeconfig)
        async with api:
            review = await client.AuthenticationV1Api(api).create_self_subject_review(
                {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})  # type: ignore[arg-type]
        assert review.status.user_info.username == user
        assert user.startswith(f"system:serviceaccount:{namespace}:")
