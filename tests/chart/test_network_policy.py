"""NetworkPolicies behind networkPolicy.enabled: the frontend reachable only on its port, from the peers the
values name; the embedded etcd and NATS only from the release's pods and the worker nodes."""

from tests.helm import environment_values, find, render

STANDALONE = environment_values("standalone")
ON = {"networkPolicy": {"enabled": True}}
RELEASE_PODS = {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "dynamo"}}}


def policies(*values):
    return {o["metadata"]["labels"]["app.kubernetes.io/component"]: o["spec"]
            for o in find(render(*values), "NetworkPolicy")}


def test_off_by_default():
    assert not find(render(STANDALONE), "NetworkPolicy")


def test_the_frontend_is_reachable_only_on_its_port_from_the_named_peers():
    spec = policies(STANDALONE, ON)["frontend"]
    assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "frontend"
    assert spec["policyTypes"] == ["Ingress"], "its egress cannot be stated: workers on kernel-chosen ports"
    http, responses = spec["ingress"]
    assert http == {"ports": [{"port": 8000, "protocol": "TCP"}]}
    gateway = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}}
    http, _ = policies(STANDALONE, ON, {"networkPolicy": {"frontend": {"from": [gateway]}}})["frontend"]["ingress"]
    test_pod = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "dynamo-offloading",
                                                "app.kubernetes.io/instance": "dynamo",
                                                "app.kubernetes.io/component": "test-chat-completion"}}}
    assert http == {"ports": [{"port": 8000, "protocol": "TCP"}], "from": [gateway, test_pod]}, "helm test too"


def test_the_workers_reach_the_frontend_for_their_response_streams():
    """Dynamo's workers connect back to the frontend to stream each response (the TCP request plane's
    call-home), on a port the kernel picks: any port, from the worker pods and, on the host network, nodes."""
    worker_pods = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "dynamo-offloading",
                                                   "app.kubernetes.io/instance": "dynamo",
                                                   "app.kubernetes.io/component": "worker"}}}
    _, responses = policies(STANDALONE, ON)["frontend"]["ingress"]
    assert responses == {"from": [worker_pods]}
    values = {"networkPolicy": {"enabled": True, "nodeCIDRs": ["10.0.0.0/16"]}}
    _, responses = policies(environment_values("ipoib"), values)["frontend"]["ingress"]
    assert responses == {"from": [worker_pods, {"ipBlock": {"cidr": "10.0.0.0/16"}}]}


def test_embedded_etcd_and_nats_admit_the_release_and_the_worker_nodes():
    found = policies(STANDALONE, ON, {"networkPolicy": {"nodeCIDRs": ["10.0.0.0/16"]}})
    etcd, nats = found["etcd"], found["nats"]
    nodes = {"ipBlock": {"cidr": "10.0.0.0/16"}}
    assert etcd["ingress"][0] == {"ports": [{"port": 2379, "protocol": "TCP"}], "from": [RELEASE_PODS, nodes]}
    assert nats["ingress"] == [{"ports": [{"port": 4222, "protocol": "TCP"}], "from": [RELEASE_PODS, nodes]}]
    peers = [{"podSelector": etcd["podSelector"]}]  # its own pods
    assert etcd["ingress"][1] == {"ports": [{"port": 2380, "protocol": "TCP"}], "from": peers}
    assert etcd["egress"][0] == {"ports": [{"port": 2380, "protocol": "TCP"}], "to": peers}
    assert {p["port"] for p in etcd["egress"][1]["ports"]} == {53}, "and cluster DNS, to find its peers by name"
    assert nats["policyTypes"] == ["Ingress", "Egress"] and nats["egress"] == [], "NATS alone opens no connection"


def test_external_etcd_and_nats_get_no_policy():
    assert set(policies(environment_values("ipoib"), ON, {"networkPolicy": {"nodeCIDRs": ["10.0.0.0/16"]}})) == \
        {"frontend"}
