"""Build the image with Docker or buildah on the base, and save it as an OCI archive in dist/."""

import json
import re
import shutil
import subprocess

from hack.image.base import base_image
from hack.image.steps import CONTAINERFILE, CONTEXT, DIST, IMAGE, ROOT, log, output, run


def git(*args):
    out = subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


def build_args(version):
    args = {"VERSION": version, "REVISION": git("rev-parse", "HEAD")}
    source = git("remote", "get-url", "origin")
    if source:
        args["SOURCE"] = source
    return [a for k, v in args.items() for a in ("--build-arg", f"{k}={v}")]


def docker_available():
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def base_layers(engine, base):
    """How many layers the base image has (the size table names them)."""
    if engine == "docker":
        return int(output("base: docker image inspect", ["docker", "image", "inspect", "--format",
                                                         "{{len .RootFS.Layers}}", base]))
    config = json.loads(output("base: buildah inspect", ["buildah", "inspect", "--type", "image", base]))
    return len(config["OCIv1"]["rootfs"]["diff_ids"])


def build(version, engine, refresh_base):
    """Build the image; return the OCI archive, the base image and how many layers it has."""
    tag = f"{IMAGE}:{version}"
    archive = DIST / f"{IMAGE}-{version}.oci.tar"
    DIST.mkdir(exist_ok=True)
    archive.unlink(missing_ok=True)
    if engine == "docker":
        log(f"build: docker build -t {tag}")
        run("build: docker build", ["docker", "build", "-f", CONTAINERFILE, *build_args(version), "-t", tag, CONTEXT])
        base = re.search(r"^ARG BASE=(\S+)", CONTAINERFILE.read_text(), re.M).group(1)
        log(f"save: {archive}")
        run("save: skopeo copy", ["skopeo", "copy", "--quiet", f"docker-daemon:{tag}",
                                  f"oci-archive:{archive}:{tag}"])
    else:
        base = base_image(refresh_base)
        previous = subprocess.run(["buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}",
                                   f"localhost/{tag}"], capture_output=True, text=True).stdout.strip()
        log(f"build: buildah build --isolation chroot -t {tag} (BASE={base})")
        run("build: buildah build", ["buildah", "build", "--isolation", "chroot", "--pull-never", "--layers=false",
                                     "--build-arg", f"BASE={base}", *build_args(version), "-f", CONTAINERFILE,
                                     "-t", f"localhost/{tag}", CONTEXT])
        log(f"save: {archive}")
        run("save: buildah push", ["buildah", "push", "--quiet", "--compression-format", "gzip",
                                   f"localhost/{tag}", f"oci-archive:{archive}:{tag}"], quiet=True)
        current = output("save: buildah inspect", ["buildah", "inspect", "--type", "image", "--format",
                                                   "{{.FromImageID}}", f"localhost/{tag}"])
        if previous and previous != current:  # the image the tag named before, now untagged
            subprocess.run(["buildah", "rmi", previous], capture_output=True)
    return archive, base, base_layers(engine, base)
