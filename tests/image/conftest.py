"""The built hooks image (`make image`), run the way this machine can: `docker run` when a Docker engine
answers, else `buildah run --isolation chroot` on a working container of the image in buildah's storage.

Not part of the default `make test` (pyproject's addopts ignore tests/image); `make image-test`
runs `pytest tests/image` after `make image`.
"""

import dataclasses
import json
import pathlib
import re
import shutil
import subprocess
import tarfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
IMAGE = "dynamo-offloading-hooks"
RUN_TIMEOUT = 120


def chart_version():
    return re.search(r"^version:\s*(\S+)", (ROOT / "chart" / "Chart.yaml").read_text(), re.M).group(1)


def docker_available():
    return bool(shutil.which("docker")) and subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@dataclasses.dataclass
class Runner:
    """Runs the image's entrypoint with arguments, as the image's user, on the host network."""

    engine: str
    image: str
    config: dict  # the OCI image config (User, Entrypoint, Env, Labels)
    container: str = ""

    def run(self, *args, volumes=(), timeout=RUN_TIMEOUT):
        """The completed process of `<entrypoint> args` in the image; volumes: (host, container) pairs,
        mounted read-only."""
        if self.engine == "docker":
            cmd = ["docker", "run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp"]
            for host, inside in volumes:
                cmd += ["--volume", f"{host}:{inside}:ro"]
            cmd += [self.image, *args]
        else:
            cmd = ["buildah", "run", "--isolation", "chroot", "--network", "host"]
            for host, inside in volumes:
                cmd += ["--volume", f"{host}:{inside}:ro"]
            cmd += [self.container, "--", *self.config["Entrypoint"], *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def exec(self, *argv, timeout=RUN_TIMEOUT):
        """The completed process of argv (not the entrypoint) in the image, as the image's user."""
        if self.engine == "docker":
            cmd = ["docker", "run", "--rm", "--read-only", "--entrypoint", argv[0], self.image, *argv[1:]]
        else:
            cmd = ["buildah", "run", "--isolation", "chroot", self.container, "--", *argv]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def archive_config(archive):
    """The image config in the OCI archive (what `make push` copies)."""
    with tarfile.open(archive) as oci:
        def blob(descriptor):
            algo, digest = descriptor["digest"].split(":")
            return json.load(oci.extractfile(f"blobs/{algo}/{digest}"))

        index = json.load(oci.extractfile("index.json"))
        return blob(blob(index["manifests"][0])["config"])


@pytest.fixture(scope="session")
def version():
    return chart_version()


@pytest.fixture(scope="session")
def archive(version):
    path = ROOT / "dist" / f"{IMAGE}-{version}.oci.tar"
    if not path.exists():
        pytest.fail(f"{path.relative_to(ROOT)} is missing: run `make image` first")
    return path


@pytest.fixture(scope="session")
def image(version, archive):
    """A Runner for the built image; with buildah, one working container for the session."""
    if docker_available():
        tag = f"{IMAGE}:{version}"
        inspected = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, text=True)
        if inspected.returncode != 0:
            pytest.fail(f"image {tag} is not in Docker: run `make image` first")
        config = json.loads(inspected.stdout)[0]["Config"]
        yield Runner("docker", tag, config)
        return
    if not shutil.which("buildah"):
        pytest.fail("neither a Docker engine nor buildah: run `make deps` (installs buildah)")
    tag = f"localhost/{IMAGE}:{version}"
    inspected = subprocess.run(["buildah", "inspect", "--type", "image", tag], capture_output=True, text=True)
    if inspected.returncode != 0:
        pytest.fail(f"image {tag} is not in buildah's storage: run `make image` first")
    config = json.loads(inspected.stdout)["OCIv1"]["config"]
    container = subprocess.run(["buildah", "from", "--pull-never", tag], capture_output=True, text=True,
                               check=True).stdout.strip()
    try:
        yield Runner("buildah", tag, config, container)
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True)
