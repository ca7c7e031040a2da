"""The NetworkPolicies are valid objects of the API server: an install with them on creates each as rendered."""

from kubernetes import client

from testbed import cluster
from tests.helm import environment_values, find, render

ON = {"networkPolicy": {"enabled": True, "nodeCIDRs": ["10.0.0.0/16"],
                        "frontend": {"from": [{"namespaceSelector": {"matchLabels": {"team": "gateway"}}}]}}}


def test_the_policies_are_created_as_rendered(helm_major, namespace):
    values = environment_values("standalone")
    cluster.install(helm_major, "dynamo", namespace, values, cluster.CLUSTER_VALUES, ON)
    api = client.NetworkingV1Api(cluster.api())
    for rendered in find(render(values, cluster.CLUSTER_VALUES, ON), "NetworkPolicy"):
        live = api.read_namespaced_network_policy(rendered["metadata"]["name"], namespace)
        spec = cluster.api().sanitize_for_serialization(live.spec)
        # The server omits an empty rule list (egress: [] with policyType Egress: no egress at all).
        assert spec == {k: v for k, v in rendered["spec"].items() if v != []}, rendered["metadata"]["name"]
