"""Every container the chart runs has CPU and memory requests and limits, except the CPU limit of the GPU worker,
its FUSE client and the frontend, where throttling would slow inference and the KV transfers."""

import pytest

from tests.helm import ENVIRONMENTS, containers, environment_values, render, with_embedded

# Every optional workload on, so that its containers are checked too.
ALL_ON = {"modelDownloader": {"enabled": True}, "worker": {"nodes": ["gpu-a"]}}
NO_CPU_LIMIT = {"worker", "fuse-sidecar", "fuse", "frontend"}
WORKLOADS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "Job"}


def every_container(env):
    for mode in ("sidecar", "daemonset"):
        for obj in with_embedded(render(environment_values(env), ALL_ON, {"threefs": {"mode": mode}})):
            if obj["kind"] in WORKLOADS:
                for c in containers(obj):
                    yield f"{obj['kind']}/{obj['metadata']['name']}/{c['name']}", c


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_container_is_bounded(env):
    seen = set()
    for where, c in every_container(env):
        resources = c.get("resources", {})
        requests, limits = resources.get("requests", {}), resources.get("limits", {})
        assert {"cpu", "memory"} <= requests.keys(), where
        assert "memory" in limits, where
        assert ("cpu" in limits) is (c["name"] not in NO_CPU_LIMIT), where
        seen.add(c["name"])
    assert {"worker", "frontend", "resolve", "pre-install"} <= seen
