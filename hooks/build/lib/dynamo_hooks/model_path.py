"""Find a model's snapshot directory in a node's Hugging Face cache (HF_HOME/hub), without the Hub.

Layout: <hf_home>/hub/models--<org>--<name>/refs/<revision> holds a commit hash, and
<hf_home>/hub/models--<org>--<name>/snapshots/<hash>/ holds the files of that commit.
"""

import pathlib
import re

COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")


class ModelNotFound(Exception):
    pass


def repo_dir(hf_home, repo_id):
    return pathlib.Path(hf_home) / "hub" / ("models--" + repo_id.replace("/", "--"))


def download_hint(hf_home, repo_id, revision):
    rev = "" if revision == "main" else f" --revision {revision}"
    return (f"download it on this node with `HF_HOME={hf_home} huggingface-cli download {repo_id}{rev}`, "
            "or enable modelDownloader")


def commit_of(repo, revision):
    """The commit hash `revision` names: itself when it is a hash, else the content of refs/<revision>."""
    if COMMIT_HASH.match(revision):
        return revision
    ref = repo / "refs" / revision
    if not ref.is_file():
        return None
    return ref.read_text().strip() or None


def resolve_snapshot(hf_home, repo_id, revision="main", snapshot=""):
    """The full snapshots/<hash> path of `repo_id` at `snapshot` (a hash) or at `revision` (a ref or a hash)."""
    repo = repo_dir(hf_home, repo_id)
    wanted = snapshot or revision
    if not repo.is_dir():
        raise ModelNotFound(f"model {repo_id} is not in the Hugging Face cache {repo.parent} (no {repo.name}); "
                            + download_hint(hf_home, repo_id, wanted))
    commit = snapshot or commit_of(repo, revision)
    if commit is None:
        raise ModelNotFound(f"model {repo_id}: revision {revision!r} is not in {repo / 'refs'}; "
                            + download_hint(hf_home, repo_id, revision))
    path = repo / "snapshots" / commit
    if not path.is_dir():
        raise ModelNotFound(f"model {repo_id}: snapshot {commit} is missing from {repo / 'snapshots'}; "
                            + download_hint(hf_home, repo_id, wanted))
    if not (path / "config.json").exists():
        raise ModelNotFound(f"model {repo_id}: snapshot {path} has no config.json (an interrupted download?); "
                            + download_hint(hf_home, repo_id, wanted))
    return path
