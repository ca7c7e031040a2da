"""The PodMonitor and ServiceMonitor, validated by the API server against the Prometheus Operator's CRDs
(hack/cluster.py installs them), which kubernetes-validate cannot do offline."""

import copy

import yaml

from testbed import cluster
from tests.helm import environment_values

MONITORING = {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
                          "podMonitor": {"enabled": True}}}


def monitors(namespace, tmp_path):
    values = cluster.values_file(tmp_path, environment_values("ipoib"), cluster.CLUSTER_VALUES, MONITORING)
    out = cluster.helm(4, "template", "dynamo", str(cluster.CHART), "-n", namespace, "-f", values).stdout
    return [o for o in yaml.safe_load_all(out) if o and o["kind"] in ("PodMonitor", "ServiceMonitor")]


def server_validates(objects):
    return cluster.kubectl("create", "--dry-run=server", "--validate=strict", "-f", "-",
                           input=yaml.safe_dump_all(objects), check=False)


def test_monitors_are_valid_custom_resources(namespace, tmp_path):
    objects = monitors(namespace, tmp_path)
    assert sorted(o["kind"] for o in objects) == ["PodMonitor", "ServiceMonitor"]
    done = server_validates(objects)
    assert done.returncode == 0, done.stderr
    # Not vacuous: a field the CRD does not have is refused.
    bad = copy.deepcopy(objects[0])
    bad["spec"]["scrapeEverything"] = True
    done = server_validates([bad])
    assert done.returncode != 0 and "scrapeEverything" in done.stderr


def test_install_with_monitoring(helm_major, namespace, seed_services):
    values = environment_values("ipoib")
    cluster.prepare(namespace, values)
    cluster.install(helm_major, "dynamo", namespace, values, cluster.CLUSTER_VALUES, MONITORING)
    kinds = {o.split("/")[0] for o in cluster.objects_of("dynamo", namespace)}
    assert {"PodMonitor", "ServiceMonitor"} <= kinds
    cluster.uninstall(helm_major, "dynamo", namespace)
    cluster.wait_until(lambda: cluster.objects_of("dynamo", namespace) == [], "an empty namespace", within=60)
