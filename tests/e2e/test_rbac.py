"""RBAC measured on the API server, not read from the templates: for every ServiceAccount the chart creates,
what it may do (SelfSubjectRulesReview with its own token) is exactly what its commands call."""

import pytest
import yaml
from kubernetes import client

from testbed import cluster
from tests.helm import environment_values

RELEASE = "dynamo"
FULLNAME = f"{RELEASE}-dynamo-offloading"
RECORD = f"{FULLNAME}-endpoints"
# What the hooks' code calls (dynamo_hooks: endpoints.resolve_service, record.patch_record, node_cleanup), as
# (namespace, api group, resource, verb, resource names); "release" is the release's namespace.
DISCOVERY = {("baseten", "", "services", "get", ()), ("baseten", "discovery.k8s.io", "endpointslices", "list", ())}
RECORDS = {("release", "", "configmaps", "patch", (RECORD,))}
CLEANUP = {("release", "", "pods", "list", ()), ("release", "", "pods/log", "get", ()),
           ("release", "batch", "jobs", "create", ()), ("release", "batch", "jobs", "get", ()),
           ("release", "batch", "jobs", "delete", ())}
EXPECTED = {f"{FULLNAME}-pre-install": DISCOVERY | RECORDS, f"{FULLNAME}-worker": DISCOVERY | RECORDS,
            f"{FULLNAME}-cleanup": CLEANUP, FULLNAME: set()}


@pytest.fixture(scope="module")
def applied(seed_services, tmp_path_factory):
    """The chart's ServiceAccounts, Roles and RoleBindings (hooks included, which Helm deletes once they ran)
    for the seed's environment, created in a fresh namespace as the chart renders them."""
    namespace = cluster.create_namespace(cluster.unique("e2e-rbac"))
    values = cluster.values_file(tmp_path_factory.mktemp("rbac"), environment_values("ipoib"), cluster.CLUSTER_VALUES)
    out = cluster.helm(4, "template", RELEASE, str(cluster.CHART), "-n", namespace, "-f", values).stdout
    kinds = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
    objects = [o for o in yaml.safe_load_all(out) if o and o["kind"] in kinds]
    assert {o["kind"] for o in objects} == {"ServiceAccount", "Role", "RoleBinding"}  # nothing cluster-scoped
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    yield namespace, objects
    cluster.kubectl("delete", "-f", "-", "--ignore-not-found", input=yaml.safe_dump_all(objects), check=False)
    cluster.delete_namespace(namespace)


def test_every_service_account_may_do_what_its_commands_call_and_nothing_more(applied):
    namespace, objects = applied
    accounts = {o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"}
    assert accounts == set(EXPECTED)
    for account, expected in EXPECTED.items():
        api = cluster.as_service_account(namespace, account)
        where = {"release": namespace, "baseten": "baseten", "default": "default"}
        for label, ns in where.items():
            granted = cluster.granted_rules(api, ns)
            wanted = {(g, r, v, names) for n, g, r, v, names in expected if n == label}
            assert granted == wanted, (account, ns)
            assert not any("*" in (g, r, v) for g, r, v, _ in granted)
            assert not any(r == "secrets" and not names for _, r, _, names in granted)
        # Nothing cluster-scoped: not even reading nodes (no feature of the chart needs it yet).
        review = client.AuthorizationV1Api(api).create_self_subject_access_review(client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=client.V1ResourceAttributes(
                verb="list", resource="nodes"))))
        assert review.status.allowed is False, account


def test_a_removed_verb_is_a_real_403(applied):
    """The worker's token may patch its record, and only that ConfigMap: another is refused by the server."""
    namespace, _ = applied
    api = cluster.as_service_account(namespace, f"{FULLNAME}-worker")
    cluster.core().create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="not-the-record")))
    with pytest.raises(client.exceptions.ApiException) as caught:
        client.CoreV1Api(api).patch_namespaced_config_map("not-the-record", namespace, {"data": {"a": "b"}})
    assert caught.value.status == 403
