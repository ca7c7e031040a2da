#!/usr/bin/env python3
"""What the GPU run of KVBM (make kvbm-gpu) needs on a GPU machine that has PyTorch and nothing else, and no
package index: KVBM with its NIXL, and a FUSE library for the tests' filesystem, packed here.

  hack/kvbm_bundle.py [VERSION ...]   write build/kvbm-gpu/kvbm-<VERSION>.tar.xz (every pinned version by
                                      default) and build/kvbm-gpu/fuse.tar.xz

Each version's pins are hack/kvbm/<VERSION>.txt; the wheels (CPython 3.12, x86-64, as the GPU machine runs)
are unpacked into one tree and packed without what KVBM never loads, which would not travel otherwise (the
NIXL wheels hold 200 MB of plugins and libraries for other transports). What stays: the Python packages, the
NIXL plugins KVBM creates (POSIX, GDS_MT, UCX), UCX's own transport modules, and every shared library these
link, found by following each ELF file's DT_NEEDED entries within the tree. fuse.tar.xz holds fusepy and
Debian's libfuse2 (libfuse.so.2), which fusepy loads.
"""

import argparse
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PINS = ROOT / "hack" / "kvbm"
OUT = ROOT / "build" / "kvbm-gpu"
WHEEL_PLATFORM = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312",
                  "--abi", "abi3", "--abi", "none",
                  *[arg for n in (17, 24, 27, 28, 31, 34) for arg in ("--platform", f"manylinux_2_{n}_x86_64")],
                  "--platform", "manylinux2014_x86_64", "--platform", "manylinux1_x86_64"]
PLUGINS = ("POSIX", "GDS_MT", "UCX")  # what KVBM's worker creates (lib/llm/src/block_manager/distributed/worker.rs)
FUSEPY = "fusepy==3.0.1"
DROPPED = ("/sboms/", "THIRD-PARTY", ".data/headers/", ".data/data/", ".scripts/", "/nixl_ep")


def versions():
    return sorted(p.stem for p in PINS.glob("*.txt"))


def cache_dir(pins):
    digest = hashlib.sha256(pins.read_bytes()).hexdigest()[:12]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "dynamo-offloading" / "kvbm" / f"{pins.stem}-{digest}"


def download(pins):
    """The pinned wheels, downloaded once per machine into a cache named by the pins."""
    wheels = cache_dir(pins)
    if not (wheels / ".done").exists():
        shutil.rmtree(wheels, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        "--no-deps", *WHEEL_PLATFORM, "-d", wheels, "-r", pins], check=True)
        (wheels / ".done").touch()
    return sorted(wheels.glob("*.whl"))


def is_elf(path):
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def needed(path):
    """The DT_NEEDED names of an ELF file."""
    out = subprocess.run(["readelf", "-d", "-W", path], capture_output=True, text=True, check=True).stdout
    return [line.split("[", 1)[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]


def is_root(relative):
    """Whether an ELF file is loaded by name rather than as another's dependency: Python extensions, the
    kept NIXL plugins, UCX's transport modules, the CUDA libraries."""
    parts = relative.parts
    name = relative.name
    if name.startswith("libplugin_"):
        return name.split(".")[0].removeprefix("libplugin_") in PLUGINS
    if "ucx" in parts:
        return "perftest" not in name
    return parts[0] == "nvidia" or name.endswith((".abi3.so", "-linux-gnu.so"))


def prune(tree):
    """Delete what KVBM never loads: dropped paths, and ELF files no root needs."""
    files = [p for p in tree.rglob("*") if p.is_file() or p.is_symlink()]
    for path in files:
        if any(part in str(path.relative_to(tree)) for part in DROPPED) or path.suffix == ".la":
            path.unlink()
    elves = {p: p.relative_to(tree) for p in tree.rglob("*") if p.is_file() and not p.is_symlink() and is_elf(p)}
    by_name = {}
    for path in elves:
        by_name.setdefault(path.name, []).append(path)
    keep = {p for p, relative in elves.items() if is_root(relative)}
    todo = list(keep)
    while todo:
        for name in needed(todo.pop()):
            for dependency in by_name.get(name, []):
                if dependency not in keep:
                    keep.add(dependency)
                    todo.append(dependency)
    for path in elves:
        if path not in keep:
            path.unlink()
    for link in [p for p in tree.rglob("*") if p.is_symlink() and not p.exists()]:
        link.unlink()


def pack(tree, archive):
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_suffix(".partial")
    with tarfile.open(partial, "w:xz", preset=6) as tar:
        for path in sorted(tree.iterdir()):
            tar.add(path, arcname=path.name)
    partial.replace(archive)
    print(f"kvbm-bundle: {archive.relative_to(ROOT)} ({archive.stat().st_size / 1e6:.1f} MB)")


def bundle_kvbm(version):
    pins = PINS / f"{version}.txt"
    if not pins.exists():
        sys.exit(f"kvbm-bundle: no pins for KVBM {version} (hack/kvbm/{version}.txt); known: {versions()}")
    archive = OUT / f"kvbm-{version}.tar.xz"
    with tempfile.TemporaryDirectory() as scratch:
        tree = pathlib.Path(scratch) / "site"
        for wheel in download(pins):
            shutil.unpack_archive(wheel, tree, "zip")
        prune(tree)
        pack(tree, archive)


def bundle_fuse():
    archive = OUT / "fuse.tar.xz"
    with tempfile.TemporaryDirectory() as scratch:
        scratch = pathlib.Path(scratch)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--no-binary=:all:", "-d", scratch, FUSEPY], check=True)
        sdist = next(scratch.glob("fusepy-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("/fuse.py"))
            (scratch / "site").mkdir()
            (scratch / "site" / "fuse.py").write_bytes(tar.extractfile(member).read())
        subprocess.run(["apt-get", "download", "-qq", "libfuse2"], cwd=scratch, check=True)
        subprocess.run(["dpkg-deb", "-x", next(scratch.glob("libfuse2_*.deb")), scratch / "deb"], check=True)
        lib = scratch / "site" / "lib"
        lib.mkdir()
        for so in (scratch / "deb").rglob("libfuse.so.2*"):
            shutil.copy(so, lib / so.name, follow_symlinks=False)
        pack(scratch / "site", archive)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version", nargs="*")
    args = parser.parse_args()
    for version in args.version or versions():
        bundle_kvbm(version)
    bundle_fuse()


if __name__ == "__main__":
    main()
