"""The chart's model-files init container against testbed.hub: the script the chart renders, run with the
huggingface_hub of the Dynamo runtime its image holds, fetches the config and tokenizer of the worker's
revision from the hub frontend.extraEnv names (HF_ENDPOINT), and nothing else; a repository or revision the
hub lacks fails the container with huggingface_hub's error naming it."""

import os
import subprocess

import pytest

from hack import dynamo_runtime
from testbed.hub import hub_server
from tests.helm import container, env_of, environment_values, one, render

REPO = "Qwen/Qwen3-8B"
STORAGE = "hub/models--Qwen--Qwen3-8B"
WEIGHTS = "model-00001-of-00002.safetensors"
FILES = {
    "config.json": b'{"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3"}\n',
    "generation_config.json": b'{"do_sample": true, "temperature": 0.6}\n',
    "tokenizer.json": b'{"version": "1.0", "model": {"type": "BPE"}}\n',
    "tokenizer_config.json": b'{"model_max_length": 131072}\n',
    "chat_template.jinja": b"{% for message in messages %}{{ message.content }}{% endfor %}\n",
    WEIGHTS: bytes(range(256)) * 64,
}
MODEL_FILES = sorted(set(FILES) - {WEIGHTS})  # what MODEL_FILES' patterns match
TIMEOUT = 120


@pytest.fixture(scope="module")
def dynamo_python():
    """The Python of the Dynamo runtime whose version the chart's image carries (`make dynamo-runtime`)."""
    image = container(one(render(environment_values("ipoib")), "Deployment", "frontend"), "model-files")["image"]
    return str(dynamo_runtime.for_image(image.rsplit(":", 1)[1]) / "bin" / "python")


@pytest.fixture
def files_dir(tmp_path):
    directory = tmp_path / "repo"
    directory.mkdir()
    for name, data in FILES.items():
        (directory / name).write_bytes(data)
    return directory


def run_model_files(python, hub, tmp_path, model=None):
    """Run the frontend's model-files init container as the chart renders it for `model` (worker.model values),
    with HF_ENDPOINT in frontend.extraEnv and the container's directories (HF_HOME, HOME) made test directories."""
    values = {"frontend": {"extraEnv": [{"name": "HF_ENDPOINT", "value": hub.url}]},
              "worker": {"model": model or {}}}
    init = container(one(render(environment_values("ipoib"), values), "Deployment", "frontend"), "model-files")
    env = env_of(init)
    assert env["HF_ENDPOINT"] == hub.url and env["HF_HOME"] == "/data/huggingface"
    assert init["command"][0] == "python3"
    hf_home, home = tmp_path / "hf-cache", tmp_path / "home"
    home.mkdir()
    env |= {"HF_HOME": str(hf_home), "HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1"}
    result = subprocess.run([python, *init["command"][1:], *init.get("args", [])], env=env, capture_output=True,
                            text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    return result, hf_home


def files_under(directory):
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_fetches_the_config_and_tokenizer_of_the_revision(dynamo_python, files_dir, tmp_path):
    with hub_server(files_dir, repo_ids=(REPO,), revision="main") as hub:
        result, hf_home = run_model_files(dynamo_python, hub, tmp_path)
    assert result.returncode == 0, result.stderr
    snapshot = hf_home / STORAGE / "snapshots" / hub.commit
    assert f"downloaded to {snapshot}" in result.stdout
    assert files_under(snapshot) == {name: FILES[name] for name in MODEL_FILES}
    assert (hf_home / STORAGE / "refs" / "main").read_text() == hub.commit
    # The branch is resolved once, then every file is asked for at its commit; the weights are never fetched.
    assert hub.requests[0] == f"/api/models/{REPO}/revision/main"
    assert sorted(hub.downloaded) == MODEL_FILES
    assert not [path for path in hub.requests if WEIGHTS in path]
    assert set(hub.requests[1:]) == {f"/{REPO}/resolve/{hub.commit}/{name}" for name in MODEL_FILES}


def test_a_pinned_snapshot_fetches_that_commit(dynamo_python, files_dir, tmp_path):
    with hub_server(files_dir, repo_ids=(REPO,), revision="main") as hub:
        result, hf_home = run_model_files(dynamo_python, hub, tmp_path, {"snapshot": hub.commit})
    assert result.returncode == 0, result.stderr
    assert files_under(hf_home / STORAGE / "snapshots" / hub.commit) == {name: FILES[name] for name in MODEL_FILES}
    assert hub.requests[0] == f"/api/models/{REPO}/revision/{hub.commit}"
    assert not (hf_home / STORAGE / "refs").exists()  # no branch was asked for


@pytest.mark.parametrize("model, error, named", [
    ({"repoId": "Qwen/Qwen3-9B"}, "RepositoryNotFoundError", "Qwen/Qwen3-9B"),
    ({"revision": "v9"}, "RevisionNotFoundError", "Invalid rev id: v9"),
    ({"snapshot": "0" * 40}, "RevisionNotFoundError", "Invalid rev id: " + "0" * 40),
], ids=["repository", "revision", "snapshot"])
def test_what_the_hub_lacks_fails_the_container_with_its_name(dynamo_python, files_dir, tmp_path, model, error,
                                                                named):
    with hub_server(files_dir, repo_ids=(REPO,), revision="main") as hub:
        result, hf_home = run_model_files(dynamo_python, hub, tmp_path, model)
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert f"huggingface_hub.errors.{error}: 404 Client Error." in lines, result.stderr
    assert named in result.stderr
    assert hub.downloaded == []
    assert not (hf_home / STORAGE / "snapshots").exists()


WHOLE_REPOSITORY = """
import sys
from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.errors import RemoteEntryNotFoundError
print(snapshot_download(sys.argv[1]))
print(hf_hub_download(sys.argv[1], "config.json"))
try:
    hf_hub_download(sys.argv[1], "missing.json")
except RemoteEntryNotFoundError as e:
    print("missing:", type(e).__name__)
"""


def test_serves_the_whole_repository_and_single_files(dynamo_python, files_dir, tmp_path):
    """snapshot_download without patterns, and hf_hub_download of a file and of one the commit lacks."""
    hf_home = tmp_path / "hf-cache"
    env = {"HF_HOME": str(hf_home), "HOME": str(tmp_path), "HF_HUB_DISABLE_TELEMETRY": "1",
           "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    with hub_server(files_dir, repo_ids=(REPO,), revision="main") as hub:
        result = subprocess.run([dynamo_python, "-c", WHOLE_REPOSITORY, REPO], env={**env, "HF_ENDPOINT": hub.url},
                                capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    snapshot = hf_home / STORAGE / "snapshots" / hub.commit
    assert result.stdout.splitlines() == [str(snapshot), str(snapshot / "config.json"),
                                          "missing: RemoteEntryNotFoundError"]
    assert files_under(snapshot) == FILES
    assert sorted(hub.downloaded) == sorted(FILES)  # config.json only once: hf_hub_download found it cached
    assert f"/{REPO}/resolve/main/missing.json" in hub.requests
