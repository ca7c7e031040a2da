#!/usr/bin/env python3
"""The real Dynamo runtime the cluster tests run the chart's frontend and workers with, CPU only.

  hack/dynamo_runtime.py install [VERSION ...]   create the venv of each version (all by default), once
  hack/dynamo_runtime.py path VERSION            print the venv of VERSION

Each version's pinned requirements are hack/dynamo/<VERSION>.txt. Its venv lives in
${XDG_CACHE_HOME:-~/.cache}/dynamo-offloading/dynamo/<VERSION>-<hash of the requirements>/, like the control
plane's binaries: made once per machine, shared by every checkout, replaced when the pins change.
"""

import argparse
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PINS = ROOT / "hack" / "dynamo"
DONE = ".installed"
# The Dynamo runtime image's tag -> the release from the package index that runs in its place here (the newest
# tensorrtllm-runtime image of the 1.6 line is 1.6.0; its runtime's newest release is 1.6.1).
IMAGE_RELEASES = {"0.9.0": "0.9.0", "1.6.0": "1.6.1"}


def versions():
    return sorted(p.stem for p in PINS.glob("*.txt"))


def venv(version):
    requirements = PINS / f"{version}.txt"
    if not requirements.exists():
        sys.exit(f"dynamo-runtime: no pins for Dynamo {version} (hack/dynamo/{version}.txt); known: {versions()}")
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "dynamo-offloading" / "dynamo" / f"{version}-{digest}"


def for_image(tag):
    """The installed venv that stands for the Dynamo runtime image of this tag."""
    if tag not in IMAGE_RELEASES:
        raise LookupError(f"no Dynamo release stands for the runtime image tag {tag!r}: {sorted(IMAGE_RELEASES)}")
    target = venv(IMAGE_RELEASES[tag])
    if not (target / DONE).exists():
        raise LookupError(f"Dynamo {IMAGE_RELEASES[tag]} is not installed in {target}: run `make dynamo-runtime`")
    return target


def install(version):
    target = venv(version)
    if (target / DONE).exists():
        print(f"dynamo-runtime: Dynamo {version} cached in {target}")
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A venv's scripts name their interpreter by path, so it is built where it stays; the stamp written last
    # tells a finished install from an interrupted one.
    subprocess.run([sys.executable, "-m", "venv", target], check=True)
    subprocess.run([target / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--no-deps", "-r", PINS / f"{version}.txt"], check=True)
    (target / DONE).write_text(version + "\n")
    print(f"dynamo-runtime: Dynamo {version} installed in {target}")
    return target


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install").add_argument("version", nargs="*")
    sub.add_parser("path").add_argument("version")
    args = parser.parse_args()
    if args.command == "install":
        for version in args.version or versions():
            install(version)
    else:
        print(venv(args.version))


if __name__ == "__main__":
    main()
