"""What the API server adds to rendering: lookups at install, a server-side dry run, and releases side by side."""

import json
import time

import pyhelm3
import pytest

from testbed import cluster
from tests.helm import ENVIRONMENTS, environment_values


@pytest.mark.parametrize("level", ["baseline", "restricted"])
def test_a_namespace_that_is_not_privileged_fails_at_once_naming_the_label(helm_major, level, seed_services,
                                                                             tmp_path):
    namespace = cluster.create_namespace(cluster.unique("e2e-pss"), {"pod-security.kubernetes.io/enforce": level})
    try:
        started = time.monotonic()
        done = cluster.helm(helm_major, "install", "dynamo", str(cluster.CHART), "-n", namespace, "--wait",
                            "--timeout", "5m", "-f", cluster.values_file(tmp_path, environment_values("ipoib"),
                                                                         cluster.CLUSTER_VALUES), check=False)
        elapsed = time.monotonic() - started
        assert done.returncode != 0
        assert (f"namespace {namespace}: its label pod-security.kubernetes.io/enforce={level} rejects the worker pods "
                "(host paths, host network, a privileged FUSE sidecar); kubectl label namespace "
                f"{namespace} pod-security.kubernetes.io/enforce=privileged --overwrite") in done.stderr
        assert elapsed < 60  # at rendering, not after a hook Job's timeout
        # Nothing was created: not even the release record.
        assert cluster.objects_of("dynamo", namespace) == []
    finally:
        cluster.delete_namespace(namespace)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_server_side_dry_run(env, helm_major, namespace, seed_services, tmp_path):
    """The API server validates and admits every object (PodSecurity included) without creating any."""
    done = cluster.helm(helm_major, "install", "dynamo", str(cluster.CHART), "-n", namespace, "--dry-run=server",
                        "-f", cluster.values_file(tmp_path, environment_values(env), cluster.CLUSTER_VALUES),
                        check=False)
    assert done.returncode == 0, done.stderr
    assert "STATUS: pending-install" in done.stdout
    assert cluster.objects_of("dynamo", namespace) == []


# Objects whose names a controller makes unique per creation.
GENERATED_NAMES = {"ControllerRevision", "ReplicaSet", "Pod", "EndpointSlice"}


def named(release, namespace):
    """The release's objects in `namespace` whose names the chart chooses."""
    return {o for o in cluster.objects_of(release, namespace) if o.split("/")[0] not in GENERATED_NAMES}


def test_two_releases_in_one_namespace_and_one_in_another(helm_major, namespace, seed_services):
    """No name collides and no object is shared: each release's uninstall leaves the other whole."""
    other = cluster.create_namespace(cluster.unique("e2e-other"))
    values = environment_values("standalone")
    try:
        cluster.install(helm_major, "alpha", namespace, values, cluster.CLUSTER_VALUES)
        cluster.install(helm_major, "beta", namespace, values, cluster.CLUSTER_VALUES)
        cluster.install(helm_major, "alpha", other, values, cluster.CLUSTER_VALUES)
        alpha, beta = named("alpha", namespace), named("beta", namespace)
        assert alpha and beta and not alpha & beta
        assert named("alpha", other) == alpha
        cluster.uninstall(helm_major, "alpha", namespace)
        cluster.wait_until(lambda: cluster.objects_of("alpha", namespace) == [], "alpha gone", within=60)
        assert named("beta", namespace) == beta and named("alpha", other) == alpha
    finally:
        cluster.delete_namespace(other)


def test_an_upgrade_that_would_change_the_embedded_claims_is_refused(helm_major, namespace):
    """A StatefulSet's volumeClaimTemplates are immutable: refused at rendering, naming the value and the fix,
    and the release stays as it was. The same size written another way, and other changes, go through."""
    values = environment_values("standalone")
    cluster.install(helm_major, "dynamo", namespace, values, cluster.CLUSTER_VALUES)
    for change in ({"size": "2Gi"}, {"storageClass": "fast"}, {"enabled": False}):
        with pytest.raises(pyhelm3.errors.Error) as caught:
            cluster.install(helm_major, "dynamo", namespace, values, cluster.CLUSTER_VALUES,
                            {"etcd": {"embedded": {"persistence": change}}})
        assert (f"etcd.embedded.persistence: the StatefulSet dynamo-dynamo-offloading-etcd has a data claim of 1Gi, "
                "and a StatefulSet's volumeClaimTemplates cannot change; keep the values that made it, or delete "
                f"it but not its pods and claims (kubectl -n {namespace} delete statefulset "
                "dynamo-dynamo-offloading-etcd --cascade=orphan) and upgrade again") in str(caught.value)
    status = json.loads(cluster.helm(helm_major, "status", "dynamo", "-n", namespace, "-o", "json").stdout)
    assert (status["version"], status["info"]["status"]) == (1, "deployed")
    second = cluster.install(helm_major, "dynamo", namespace, values, cluster.CLUSTER_VALUES,
                             {"etcd": {"embedded": {"persistence": {"size": "1024Mi", "keepOnUninstall": True}}},
                              "kvbm": {"cpuCacheGB": 10}})
    assert second.revision == 2
