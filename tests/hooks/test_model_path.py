"""The model's snapshot in a Hugging Face cache laid out as huggingface_hub writes it on a node."""

import pytest

from dynamo_hooks.model_path import ModelNotFound, resolve_snapshot

MAIN = "0123456789abcdef0123456789abcdef01234567"
OLD = "fedcba9876543210fedcba9876543210fedcba98"


def write_cache(hf_home, repo_id="Qwen/Qwen3-8B", refs=None, snapshots=(MAIN,), config=True):
    """refs/<name> files holding hashes, snapshots/<hash>/ with files symlinked into blobs/, as the Hub does."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / "aa11").write_text('{"model_type": "qwen3"}')
    for name, commit in (refs if refs is not None else {"main": MAIN}).items():
        (repo / "refs" / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / name).write_text(commit)
    for commit in snapshots:
        (repo / "snapshots" / commit).mkdir(parents=True)
        if config:
            (repo / "snapshots" / commit / "config.json").symlink_to("../../blobs/aa11")
    return repo


def test_main_resolves_to_its_snapshot(tmp_path):
    repo = write_cache(tmp_path)
    assert resolve_snapshot(tmp_path, "Qwen/Qwen3-8B") == repo / "snapshots" / MAIN


def test_a_named_ref_and_a_hash(tmp_path):
    repo = write_cache(tmp_path, refs={"main": MAIN, "v1": OLD, "refs/pr/3": OLD}, snapshots=(MAIN, OLD))
    assert resolve_snapshot(tmp_path, "Qwen/Qwen3-8B", "v1") == repo / "snapshots" / OLD
    assert resolve_snapshot(tmp_path, "Qwen/Qwen3-8B", "refs/pr/3") == repo / "snapshots" / OLD
    assert resolve_snapshot(tmp_path, "Qwen/Qwen3-8B", OLD) == repo / "snapshots" / OLD
    assert resolve_snapshot(tmp_path, "Qwen/Qwen3-8B", "main", snapshot=OLD) == repo / "snapshots" / OLD


def test_missing_model_says_how_to_download(tmp_path):
    write_cache(tmp_path, repo_id="Qwen/Qwen3-0.6B")
    with pytest.raises(ModelNotFound) as err:
        resolve_snapshot(tmp_path, "Qwen/Qwen3-8B")
    assert "models--Qwen--Qwen3-8B" in str(err.value)
    assert f"HF_HOME={tmp_path} huggingface-cli download Qwen/Qwen3-8B" in str(err.value)


def test_missing_ref_and_missing_snapshot(tmp_path):
    write_cache(tmp_path, refs={"main": OLD}, snapshots=(MAIN,))
    with pytest.raises(ModelNotFound, match="revision 'v2' is not in"):
        resolve_snapshot(tmp_path, "Qwen/Qwen3-8B", "v2")
    with pytest.raises(ModelNotFound, match=f"snapshot {OLD} is missing"):
        resolve_snapshot(tmp_path, "Qwen/Qwen3-8B")


def test_interrupted_download_is_not_a_model(tmp_path):
    write_cache(tmp_path, config=False)
    with pytest.raises(ModelNotFound, match="no config.json"):
        resolve_snapshot(tmp_path, "Qwen/Qwen3-8B")


def test_dangling_blob_link_is_not_a_model(tmp_path):
    repo = write_cache(tmp_path)
    (repo / "blobs" / "aa11").unlink()
    with pytest.raises(ModelNotFound, match="no config.json"):
        resolve_snapshot(tmp_path, "Qwen/Qwen3-8B")
