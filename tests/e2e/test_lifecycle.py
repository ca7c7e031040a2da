"""A release's whole life on a real API server, for every environment and both Helm majors: install --wait,
upgrade, helm test, rollback and uninstall, as chart-testing's `ct install` does it."""

import json

import pyhelm3
import pytest
import yaml
from kubernetes import client

from testbed import cluster
from tests.helm import ENVIRONMENTS, environment_values

RELEASE = "dynamo"


def release_pods(namespace):
    return cluster.release_pods(namespace, RELEASE)


def last_run(major, namespace, hook, release=RELEASE):
    """(phase, start time) of a hook's last run, as Helm recorded it in the release."""
    status = json.loads(cluster.helm(major, "status", release, "-n", namespace, "-o", "json").stdout)
    run = next(h.get("last_run") or {} for h in status.get("hooks") or [] if h["name"] == hook)
    return run.get("phase"), run.get("started_at")


def manifest_objects(major, namespace, release=RELEASE):
    out = cluster.helm(major, "get", "manifest", release, "-n", namespace).stdout
    return [o for o in yaml.safe_load_all(out) if o]


def worker_sets(namespace):
    """The release's worker StatefulSets (one per group) by name, each with its worker container's env."""
    sets = client.AppsV1Api(cluster.api()).list_namespaced_stateful_set(
        namespace, label_selector=cluster.component_selector(RELEASE, "worker")).items
    assert sets
    return {s.metadata.name: ({e.name: e.value for e in next(c for c in s.spec.template.spec.containers
                                                              if c.name == "worker").env}, s) for s in sets}


def cpu_tier(values, sts, default):
    """The CPU tier a StatefulSet's group should have: its group's own, else the release's."""
    group = sts.spec.selector.match_labels.get("dynamo-offloading/worker-group")
    own = values["worker"].get("groups", {}).get(group, {}).get("kvbm", {}).get("cpuCacheGB") if group else None
    return str(own if own is not None else default)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_install_upgrade_test_rollback_uninstall(env, helm_major, namespace, seed_services):
    values = environment_values(env)
    cluster.prepare(namespace, values)

    # install --wait: deployed, every object on the server, every pod of the release Ready.
    first = cluster.install(helm_major, RELEASE, namespace, values, cluster.CLUSTER_VALUES)
    assert (first.revision, str(first.status.value if hasattr(first.status, "value") else first.status)) == \
        (1, "deployed")
    for obj in manifest_objects(helm_major, namespace):
        where = ["-n", obj["metadata"].get("namespace", namespace)]
        assert cluster.kubectl("get", obj["kind"], obj["metadata"]["name"], *where, check=False).returncode == 0, obj
    pods = release_pods(namespace)
    assert pods and all(cluster.pod_ready(p) for p in pods if p.status.phase != "Succeeded"), \
        [(p.metadata.name, p.status.phase) for p in pods]
    pre_install = f"{RELEASE}-dynamo-offloading-pre-install"
    phase, installed_at = last_run(helm_major, namespace, pre_install)
    assert phase == "Succeeded"

    # upgrade: the pre-upgrade hook runs again, the worker rolls, recorded data survives.
    record = f"{RELEASE}-dynamo-offloading-endpoints"
    recorded = {"ETCD_ENDPOINTS": "http://10.1.2.3:2379"}
    records = any(o["kind"] == "ConfigMap" and o["metadata"]["name"] == record
                  for o in manifest_objects(helm_major, namespace))
    if records:
        cluster.core().patch_namespaced_config_map(record, namespace, {"data": recorded})
    sets_before = worker_sets(namespace)
    upgrade = {"kvbm": {"cpuCacheGB": 30, "diskCacheGB": 60}, "worker": {"engine": {"max_batch_size": 32}}}
    second = cluster.install(helm_major, RELEASE, namespace, values, cluster.CLUSTER_VALUES, upgrade)
    assert second.revision == 2
    sets_after = worker_sets(namespace)
    assert sets_after.keys() == sets_before.keys()
    workers = cluster.release_pods(namespace, RELEASE, "worker")
    for name, (env_after, sts_after) in sets_after.items():
        env_before, sts_before = sets_before[name]
        assert (env_before["DYN_KVBM_CPU_CACHE_GB"], env_after["DYN_KVBM_CPU_CACHE_GB"]) == \
            (cpu_tier(values, sts_after, 20), cpu_tier(values, sts_after, 30))
        # The engine config changed, and only its checksum moved.
        before, after = (s.spec.template.metadata.annotations for s in (sts_before, sts_after))
        assert {k for k in after if before.get(k) != after[k]} == {"checksum/engine-config"}
        assert sts_after.status.update_revision != sts_before.status.current_revision
        assert sts_after.status.updated_replicas == sts_after.spec.replicas
        pods = [p for p in workers if p.metadata.name.rsplit("-", 1)[0] == name]
        assert len(pods) == sts_after.spec.replicas
        assert {p.metadata.labels["controller-revision-hash"] for p in pods} == {sts_after.status.update_revision}
    phase, upgraded_at = last_run(helm_major, namespace, pre_install)
    assert phase == "Succeeded" and upgraded_at != installed_at  # it ran again, as pre-upgrade
    if records:
        assert cluster.core().read_namespaced_config_map(record, namespace).data == recorded

    # helm test: passes, and leaves no Pod behind.
    done = cluster.helm(helm_major, "test", RELEASE, "-n", namespace, "--timeout", "2m")
    assert "Phase:          Succeeded" in done.stdout or "Phase: Succeeded" in " ".join(done.stdout.split())
    cluster.wait_until(lambda: not cluster.release_pods(namespace, RELEASE, "test-chat-completion"),
                       "the test Pod's deletion")

    # rollback to the first revision: the first values again.
    cluster.helm(helm_major, "rollback", RELEASE, "1", "-n", namespace, "--wait", "--timeout", "5m")
    assert {env["DYN_KVBM_CPU_CACHE_GB"] for env, sts in worker_sets(namespace).values()
            if cpu_tier(values, sts, None) == "None"} == {"20"}

    # uninstall: nothing of the release is left, post-delete hook objects included once finished.
    cluster.uninstall(helm_major, RELEASE, namespace)
    cluster.wait_until(lambda: cluster.objects_of(RELEASE, namespace) == [], "an empty namespace", within=60)


def test_an_upgrade_to_another_release_line_is_refused_and_a_reinstall_replaces_it_whole(namespace, seed_services):
    """Dynamo 1.4 changed its event subjects with no fallback: a rolling upgrade from 0.9 to 1.6 would leave a
    mixed fleet failing requests. Helm refuses it before touching anything, saying how to replace the release."""
    values = [environment_values("ipoib"), cluster.CLUSTER_VALUES]
    cluster.prepare(namespace, values[0])
    cluster.install(4, RELEASE, namespace, *values)
    before = {p.metadata.uid for p in release_pods(namespace)}
    line_16 = {"dynamo": {"release": "1.6"}}
    with pytest.raises(pyhelm3.errors.Error) as refused:
        cluster.install(4, RELEASE, namespace, *values, line_16)
    assert ("dynamo.release: the release runs Dynamo 0.9, and a rolling upgrade to 1.6 would mix the lines" in
            str(refused.value)) and f"helm uninstall {RELEASE} -n {namespace}" in str(refused.value)
    assert {p.metadata.uid for p in release_pods(namespace)} == before
    assert json.loads(cluster.helm(4, "status", RELEASE, "-n", namespace, "-o", "json").stdout)["version"] == 1

    cluster.uninstall(4, RELEASE, namespace)
    cluster.install(4, RELEASE, namespace, *values, line_16)
    images = {c.image for p in release_pods(namespace) for c in p.spec.containers if c.name in ("frontend", "worker")}
    assert images == {"nvcr.io/nvidia/ai-dynamo/tensorrtllm-runtime:1.6.0"}
    cluster.uninstall(4, RELEASE, namespace)
