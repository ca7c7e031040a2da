"""The model downloader: a Job on each worker node that an upgrade never has to patch."""

import pytest

from tests.helm import container, env_of, environment_values, find, pod_spec, render, render_error

IPOIB = environment_values("ipoib")
ON = {"modelDownloader": {"enabled": True}}


def downloads(*values):
    """{node: (Job name, MODEL_REVISION)} of the rendered downloader Jobs."""
    jobs = find(render(IPOIB, ON, *values), "Job", "model-downloader")
    return {pod_spec(j)["nodeSelector"]["kubernetes.io/hostname"]:
            (j["metadata"]["name"], env_of(container(j, "downloader"))["MODEL_REVISION"]) for j in jobs}


def test_one_job_on_each_worker_node():
    assert set(downloads()) == {"p02-r02-cp17"}  # the node the seed pins the worker to
    nodes = ["gpu-a", "gpu-b", "gpu-c"]
    jobs = downloads({"worker": {"nodes": nodes}})
    assert sorted(jobs) == nodes
    assert len({name for name, _ in jobs.values()}) == 3


def test_the_worker_runs_only_on_its_listed_nodes():
    worker = find(render(IPOIB, {"worker": {"nodes": ["gpu-a", "gpu-b"]}}), "StatefulSet")[0]
    terms = pod_spec(worker)["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [{"matchExpressions": [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["gpu-a", "gpu-b"]}]}]


def test_downloads_the_revision_the_worker_serves():
    assert downloads({"worker": {"model": {"revision": "v2"}}})["p02-r02-cp17"][1] == "v2"
    assert downloads({"worker": {"model": {"snapshot": "0123abcd"}}})["p02-r02-cp17"][1] == "0123abcd"


@pytest.mark.parametrize("change", [
    {"image": {"tag": "0.9.1"}},
    {"worker": {"model": {"revision": "v2"}}},
    {"modelDownloader": {"resources": {"limits": {"memory": "32Gi"}}}},
    {"worker": {"tolerations": []}},
])
def test_a_changed_pod_template_is_a_new_job(change):
    """A Job's pod template is immutable: an upgrade that changed it in place would fail."""
    before, after = downloads()["p02-r02-cp17"][0], downloads(change)["p02-r02-cp17"][0]
    assert before != after


def test_an_unrelated_change_keeps_the_job():
    assert downloads()["p02-r02-cp17"][0] == downloads({"kvbm": {"cpuCacheGB": 30}})["p02-r02-cp17"][0]


def test_refused_when_no_worker_node_is_known():
    message = render_error(environment_values("standalone"), ON)  # the worker is not pinned there
    assert "modelDownloader.enabled, worker.nodes: the downloader fills the Hugging Face cache of each worker node" \
        in message
