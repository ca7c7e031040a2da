"""The hooks' Kubernetes calls against the real API server: resolve_service over Services and
EndpointSlices as the server stores them, patch_record on a real ConfigMap, and real 403s for a
ServiceAccount whose Role lacks a verb. (What a real server cannot easily be made to do, an HTTP 500 or
no answer, stays on the fake API in tests/hooks.)

The slices carry addresses from 10.0.0.0/8 as data only: resolving connects nowhere."""

import pytest
from kubernetes import client

from dynamo_hooks import api_resources
from dynamo_hooks.endpoints import resolve_service
from dynamo_hooks.kube import KubeError
from dynamo_hooks.record import patch_record
from testbed import cluster
from testbed.cluster import endpoint

SVC = "etcd-headless"
RECORD = "dynamo-dynamo-offloading-endpoints"


@pytest.fixture
def ns(namespace):
    """The namespace, with the Service (no selector: no controller writes its slices but the test)."""
    cluster.core().create_namespaced_service(namespace, client.V1Service(
        metadata=client.V1ObjectMeta(name=SVC), spec=client.V1ServiceSpec(
            cluster_ip="None", publish_not_ready_addresses=True,
            ports=[client.V1ServicePort(name="client", port=2379), client.V1ServicePort(name="peer", port=2380)])))
    return namespace


def add_slice(namespace, endpoints, ports=(("client", 2379), ("peer", 2380)), address_type="IPv4"):
    cluster.add_endpoint_slice(namespace, SVC, endpoints, ports, address_type)


def resolve(namespace, port_name="client", name=SVC, port_number=None, note="", api=None):
    """The addresses, after checking the note says how the port was chosen (or nothing)."""
    resolved = resolve_service(api or cluster.api(), namespace, name, port_name, 5.0, port_number=port_number)
    assert resolved.note == note
    return resolved.addresses


def error_of(namespace, **kwargs):
    with pytest.raises(KubeError) as caught:
        resolve(namespace, **kwargs)
    return caught.value


def api_as(namespace, name, rules):
    """An ApiClient with the token of a new ServiceAccount `name` whose Role grants `rules`
    ((resource, group, verbs) triples) in `namespace`."""
    core, rbac = cluster.core(), client.RbacAuthorizationV1Api(cluster.api())
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name)))
    rbac.create_namespaced_role(namespace, client.V1Role(metadata=client.V1ObjectMeta(name=name), rules=[
        client.V1PolicyRule(api_groups=[group], resources=[resource], verbs=list(verbs))
        for resource, group, verbs in rules]))
    rbac.create_namespaced_role_binding(namespace, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name=name),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name=name),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name=name, namespace=namespace)]))
    token = core.create_namespaced_service_account_token(name, namespace, client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))).status.token
    configuration = client.Configuration()
    admin = cluster.api().configuration
    configuration.host, configuration.ssl_ca_cert = admin.host, admin.ssl_ca_cert
    configuration.api_key = {"authorization": f"Bearer {token}"}
    api = client.ApiClient(configuration)
    # RBAC is read from an informer: wait until the grant is in effect.
    cluster.wait_until(lambda: rbac_in_effect(api, namespace, rules), f"the Role of {name}", within=30)
    return api


def rbac_in_effect(api, namespace, rules):
    review = client.AuthorizationV1Api(api).create_self_subject_rules_review(client.V1SelfSubjectRulesReview(
        spec=client.V1SelfSubjectRulesReviewSpec(namespace=namespace)))
    granted = {(r, v) for rule in review.status.resource_rules for r in rule.resources or [] for v in rule.verbs}
    return all((resource, verb) in granted for resource, _, verbs in rules for verb in verbs)


# --- resolve_service ---------------------------------------------------------------------------------------------

def test_ready_endpoints(ns):
    add_slice(ns, [endpoint("10.0.1.7"), endpoint("10.0.1.5")])
    assert resolve(ns) == ["10.0.1.5:2379", "10.0.1.7:2379"]
    assert resolve(ns, port_name="peer") == ["10.0.1.5:2380", "10.0.1.7:2380"]


def test_only_the_services_slices(ns):
    add_slice(ns, [endpoint("10.0.1.5")])
    cluster.add_endpoint_slice(ns, "nats", [endpoint("10.0.9.9")], [("client", 4222)])
    assert resolve(ns) == ["10.0.1.5:2379"]


def test_not_serving_though_ready_on_publish_not_ready_service(ns):
    """publishNotReadyAddresses: the controller sets ready=true for every pod; serving tells readiness."""
    add_slice(ns, [endpoint("10.0.1.5"), endpoint("10.0.1.6", serving=False), endpoint("10.0.1.7", serving=False)])
    assert resolve(ns) == ["10.0.1.5:2379"]


def test_none_serving(ns):
    add_slice(ns, [endpoint(f"10.0.1.{i}", serving=False) for i in (5, 6, 7)])
    err = error_of(ns)
    assert (err.reason, err.peer) == ("no-ready-endpoints", f"{ns}/{SVC}")
    assert err.message == f"Service {ns}/{SVC} has no serving endpoints (3 not ready)"


def test_conditions_left_unset_count_as_ready(ns):
    """The server stores nil conditions as absent: serving unset falls back to ready, ready unset is ready."""
    add_slice(ns, [endpoint("10.0.1.5", serving=None), endpoint("10.0.1.6", ready=False, serving=None),
                   endpoint("10.0.1.7", ready=None, serving=None, terminating=None)])
    assert resolve(ns) == ["10.0.1.5:2379", "10.0.1.7:2379"]


def test_terminating_skipped_and_counted(ns):
    add_slice(ns, [endpoint("10.0.1.5"), endpoint("10.0.1.6", ready=False, serving=True, terminating=True)])
    assert resolve(ns) == ["10.0.1.5:2379"]
    cluster.delete_endpoint_slices(ns, SVC)
    add_slice(ns, [endpoint("10.0.1.6", ready=False, serving=True, terminating=True),
                   endpoint("10.0.1.7", ready=False, serving=False)])
    assert "(1 not ready, 1 terminating)" in error_of(ns).message


def test_slices_merged_and_deduplicated(ns):
    add_slice(ns, [endpoint("10.0.1.9"), endpoint("10.0.1.5")])
    add_slice(ns, [endpoint("10.0.1.5"), endpoint("10.0.2.3"), endpoint("10.0.2.4", serving=False)])
    add_slice(ns, [endpoint("fd00::5")], address_type="IPv6")
    assert resolve(ns) == ["10.0.1.5:2379", "10.0.1.9:2379", "10.0.2.3:2379"]


def test_slice_without_the_port_skipped(ns):
    add_slice(ns, [endpoint("10.0.1.5")])
    add_slice(ns, [endpoint("10.0.3.3")], ports=(("metrics", 9090),))
    assert resolve(ns) == ["10.0.1.5:2379"]
    assert resolve(ns, port_number=9090) == ["10.0.1.5:2379"]  # the name wins over the number


def test_port_taken_by_number_when_no_port_has_the_name(ns):
    """The NATS project's chart names its client port nats, Bitnami's tcp-client: a name that is not there
    falls back to the Service's port number, and the result says so."""
    add_slice(ns, [endpoint("10.0.1.5"), endpoint("10.0.1.6", serving=False)],
              ports=(("tcp-client", 4222), ("monitor", 8222)))
    assert resolve(ns, port_name="nats", port_number=4222,
                   note=f"Service {ns}/{SVC} has no port named 'nats'; used port 4222") == ["10.0.1.5:4222"]
    err = error_of(ns, port_name="nats", port_number=4223)
    assert err.reason == "no-port"
    assert err.message == (f"Service {ns}/{SVC} has no port named 'nats' or numbered 4223 in its EndpointSlices "
                           "(ports seen: 'monitor', 'tcp-client')")


def test_ipv6_only(ns):
    add_slice(ns, [endpoint("fd00::5")], address_type="IPv6")
    assert "1 not IPv4" in error_of(ns).message


def test_no_slices(ns):
    assert error_of(ns).message == f"Service {ns}/{SVC} has no serving endpoints (no EndpointSlices)"


def test_slice_without_endpoints_or_ports(ns):
    add_slice(ns, [], ports=None)
    err = error_of(ns)
    assert err.reason == "no-ready-endpoints"
    assert err.message == f"Service {ns}/{SVC} has no serving endpoints (no endpoints)"


def test_missing_service(ns):
    err = error_of(ns, name="etcd-missing")
    assert (err.reason, err.peer, err.message) == ("not-found", f"{ns}/etcd-missing",
                                                   f"Service {ns}/etcd-missing not found")


def test_wrong_port_name(ns):
    add_slice(ns, [endpoint("10.0.1.5")])
    err = error_of(ns, port_name="etcd-client")
    assert err.reason == "no-port"
    assert "'etcd-client'" in err.message and "ports seen: 'client', 'peer'" in err.message


def test_a_role_without_list_on_endpointslices_is_a_403_naming_the_grant(ns):
    add_slice(ns, [endpoint("10.0.1.5")])
    api = api_as(ns, "hooks", [("services", "", ["get"]), ("endpointslices", "discovery.k8s.io", ["get"])])
    err = error_of(ns, api=api)
    assert (err.reason, err.peer) == ("forbidden", f"{ns}/{SVC}")
    assert err.message == (f"forbidden: cannot list endpointslices in namespace {ns} (ServiceAccount {ns}/hooks "
                           "needs a Role there granting list on endpointslices)")


def test_a_role_without_get_on_services_is_a_403(ns):
    api = api_as(ns, "hooks", [("endpointslices", "discovery.k8s.io", ["list"])])
    err = error_of(ns, api=api)
    assert (err.reason, err.peer) == ("forbidden", f"{ns}/{SVC}")
    assert f"cannot get services in namespace {ns}" in err.message


# --- patch_record --------------------------------------------------------------------------------------------------

def test_patch_record_writes_only_its_keys(namespace):
    cluster.core().create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=RECORD, labels={"app.kubernetes.io/managed-by": "Helm"}),
        data={"OTHER": "kept"}))
    assert patch_record(cluster.api(), namespace, RECORD, {"ETCD_ENDPOINTS": "http://10.0.1.5:2379"}, 5.0) is True
    assert patch_record(cluster.api(), namespace, RECORD, {"ETCD_ENDPOINTS": "http://10.0.1.6:2379",
                                                           "NATS_SERVER": "nats://10.0.2.3:4222"}, 5.0) is True
    stored = cluster.core().read_namespaced_config_map(RECORD, namespace)
    assert stored.data == {"OTHER": "kept", "ETCD_ENDPOINTS": "http://10.0.1.6:2379",
                           "NATS_SERVER": "nats://10.0.2.3:4222"}
    assert stored.metadata.labels == {"app.kubernetes.io/managed-by": "Helm"}


def test_patch_record_never_creates_the_config_map(namespace):
    """A first install runs its pre-install hook before Helm creates the release's objects."""
    assert patch_record(cluster.api(), namespace, RECORD, {"ETCD_ENDPOINTS": "http://10.0.1.5:2379"}, 5.0) is False
    assert RECORD not in {c.metadata.name for c in cluster.core().list_namespaced_config_map(namespace).items}


def test_patch_record_without_the_verb_is_a_403(namespace):
    cluster.core().create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=RECORD), data={}))
    api = api_as(namespace, "hooks", [("configmaps", "", ["get"])])
    with pytest.raises(KubeError) as caught:
        patch_record(api, namespace, RECORD, {"ETCD_ENDPOINTS": "http://10.0.1.5:2379"}, 5.0)
    assert (caught.value.reason, caught.value.peer) == ("forbidden", f"{namespace}/{RECORD}")
    assert f"cannot patch configmaps in namespace {namespace}" in caught.value.message


DYNAMO_WORKER_METADATA = api_resources.Required("nvidia.com/v1alpha1/dynamoworkermetadatas", "DynamoWorkerMetadata",
                                               "Dynamo's platform chart")


def test_a_missing_crd_is_named_with_where_it_comes_from_and_an_installed_one_passes(namespace):
    """Read through API discovery, which any ServiceAccount may read: no Role is needed."""
    api = api_as(namespace, "no-rules", [])
    cluster.remove_dynamo_crd()
    try:
        [missing] = api_resources.check(api, [DYNAMO_WORKER_METADATA], 5.0)
        assert not missing.ok
        assert missing.summary() == (
            "api-resources nvidia.com/v1alpha1/dynamoworkermetadatas: the API server serves no dynamoworkermetadatas "
            "in nvidia.com/v1alpha1: the DynamoWorkerMetadata CustomResourceDefinition is not installed; it comes "
            "with Dynamo's platform chart")
    finally:
        cluster.install_dynamo_crd()
    [served] = api_resources.check(api, [DYNAMO_WORKER_METADATA], 5.0)
    assert served.ok and served.summary() == "api-resources: ok (nvidia.com/v1alpha1/dynamoworkermetadatas)"
