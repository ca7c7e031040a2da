"""The frontend reads the model's config and tokenizer at the absolute paths the worker registers: in Dynamo
0.9.0 the card of a worker started with a local --model-path keeps local paths (LocalModel::attach rewrites
them to hub URLs only when the path does not exist), and a frontend without the files asks the hub for the
local path as if it were a repo id (ModelDeploymentCard::download_config), which cannot work."""

import pytest

from tests.helm import CHART, ROOT, container, env_of, environment_values, helm, one, pod_spec, render

IPOIB = environment_values("ipoib")


def frontend(*values):
    return one(render(IPOIB, *values), "Deployment", "frontend")


def mount_path(c, name):
    return next(m for m in c["volumeMounts"] if m["name"] == name)


@pytest.mark.parametrize("model", [{}, {"snapshot": "0123abcd"}, {"revision": "v2", "cacheHostPath": "/hf/"}])
def test_download_puts_the_files_where_the_worker_points(model):
    objects = render(IPOIB, {"worker": {"model": model}})
    deployment = one(objects, "Deployment", "frontend")
    worker = one(objects, "StatefulSet", "worker")
    init, main = container(deployment, "model-files"), container(deployment, "frontend")
    # The worker's --model-path is <HF_HOME>/hub/models--<org>--<name>/snapshots/<hash>, from its sidecar.
    worker_args = container(worker, "resolve")["args"]
    hf_home = next(a.split("=", 1)[1] for a in worker_args if a.startswith("--hf-home="))
    revision = model.get("snapshot") or next(a.split("=", 1)[1] for a in worker_args
                                             if a.startswith("--model-revision="))
    env = env_of(init)
    assert env["HF_HOME"] == hf_home == mount_path(init, "hf-cache")["mountPath"] == \
        mount_path(main, "hf-cache")["mountPath"]
    assert env["MODEL_REPO_ID"] == "Qwen/Qwen3-8B" and env["MODEL_REVISION"] == revision
    # Only what the card names, not the weights.
    assert env["MODEL_FILES"] == "config.json,generation_config.json,tokenizer*,*.jinja"
    assert mount_path(main, "hf-cache")["readOnly"] is True
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == "hf-cache")
    assert volume == {"name": "hf-cache", "emptyDir": {"sizeLimit": "1Gi"}}


def test_host_path_reads_the_nodes_cache():
    deployment = frontend({"frontend": {"modelFiles": {"source": "hostPath"}}})
    assert "initContainers" not in pod_spec(deployment)
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == "hf-cache")
    assert volume["hostPath"] == {"path": "/data/huggingface", "type": "Directory"}
    assert mount_path(container(deployment, "frontend"), "hf-cache") == \
        {"name": "hf-cache", "mountPath": "/data/huggingface", "readOnly": True}


def test_the_download_gets_the_frontends_extra_env():
    """HF_ENDPOINT (a mirror) or HF_TOKEN (a gated model) reach the download too."""
    extra = [{"name": "HF_ENDPOINT", "value": "https://hf-mirror.example"}]
    init = container(frontend({"frontend": {"extraEnv": extra}}), "model-files")
    assert env_of(init)["HF_ENDPOINT"] == "https://hf-mirror.example"
    assert init["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("snapshot", ["", "0123abcd"])
def test_notes_ask_to_pin_the_snapshot_the_frontend_downloads(snapshot):
    """NOTES.txt is rendered by install; Helm 4's client dry run needs no cluster."""
    args = ["install", "dynamo", str(CHART), "--dry-run=client", "-f", str(ROOT / "values/ipoib.yaml"),
            "--set", f"worker.model.snapshot={snapshot}"]
    notes = helm(4, *args).stdout.split("NOTES:")[1]
    assert ("Pin worker.model.snapshot (Qwen/Qwen3-8B at main)." in notes) == (not snapshot)
    assert "logs deploy/dynamo-dynamo-offloading-frontend -c model-files" in notes
