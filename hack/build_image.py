#!/usr/bin/env python3
"""Build the dynamo-offloading-hooks image from hooks/Containerfile and save it as an OCI archive.

    hack/build_image.py --version 0.1.0        (what `make image` runs)

1. Wheels: the hooks package and its dependency closure, pinned to the versions installed in the
   running interpreter's environment (.venv, made from requirements.txt), are built into the build
   context (build/image/context/wheels) with pip; the image installs them with --no-index.
2. Build: with a Docker engine (`docker info` succeeds), `docker build` on the default base
   (python:3.11-slim-bookworm). Without one, the base is made from Debian packages: debootstrap
   --variant=minbase with python3, every package outside python3's dependency closure (and a short
   keep list) purged, docs/man/locales/apt lists/pycache stripped; cached under build/image/base-<key>
   (key = the recipe and its inputs), imported with buildah and used as BASE for `buildah build
   --isolation chroot`.
3. Output: dist/dynamo-offloading-hooks-<version>.oci.tar (gzip'ed layers), and a size table.

Every step fails loudly with the step's name. Re-running is safe; a second run reuses the cached
base rootfs, the base image in buildah's storage and the cached wheels.
"""

import argparse
import gzip
import hashlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "dynamo-offloading-hooks"
CONTAINERFILE = ROOT / "hooks" / "Containerfile"
WORK = ROOT / "build" / "image"
CONTEXT = WORK / "context"
WHEEL_CACHE = WORK / "wheel-cache"
DIST = ROOT / "dist"

SUITE = "bookworm"
# What debootstrap adds to minbase: the Python runtime, CA certificates (ssl.create_default_context()
# uses the system store) and /etc/services, /etc/protocols.
INCLUDE = ["python3", "ca-certificates", "netbase"]
# Packages kept besides python3's dependency closure: a shell for RUN steps and `kubectl exec`,
# coreutils, the CA store, time zones, dpkg and its status file (image scanners read it).
KEEP = ["python3", "ca-certificates", "netbase", "tzdata", "base-files", "base-passwd", "dash",
        "coreutils", "libc-bin", "dpkg"]
# Dependencies only their maintainer scripts need; not followed when computing what to keep.
NOT_FOLLOWED = {"debconf", "debconf-2.0", "perl-base", "apt", "adduser", "init-system-helpers"}


class StepError(Exception):
    pass


def log(message):
    print(f"==> {message}", flush=True)


def run(step, cmd, quiet=False, **kwargs):
    """Run cmd; on failure raise StepError naming the step. quiet: show the output only on failure."""
    kwargs.setdefault("check", True)
    if quiet:
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        return subprocess.run([str(c) for c in cmd], **kwargs)
    except subprocess.CalledProcessError as e:
        if quiet and e.stdout:
            print(e.stdout[-8000:], file=sys.stderr)
        raise StepError(f"{step}: `{' '.join(map(str, cmd))}` exited with {e.returncode}") from None
    except FileNotFoundError as e:
        raise StepError(f"{step}: {e.filename} not found (make deps installs the Debian tools)") from None


def output(step, cmd, **kwargs):
    return run(step, cmd, capture_output=True, text=True, **kwargs).stdout.strip()


# --- wheels ------------------------------------------------------------------------------------------

def constraints(python):
    """Pins for the wheel set: every distribution installed next to the hooks in the venv."""
    frozen = output("wheels: pip freeze", [python, "-m", "pip", "freeze", "--exclude-editable",
                                           "--disable-pip-version-check"])
    pins = [line for line in frozen.splitlines() if "==" in line and not line.startswith("-")]
    path = WORK / "constraints.txt"
    path.write_text("\n".join(pins) + "\n")
    return path, {canonical(name): version for name, version in (line.split("==", 1) for line in pins)}


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def build_wheels(python):
    """Fill CONTEXT/wheels with the hooks wheel, its dependency closure and pip (to install them)."""
    log("wheels: the hooks package and its dependencies, pinned to the venv's versions")
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    wheels = CONTEXT / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    constraint_file, pins = constraints(python)
    pip_version = output("wheels: pip version", [python, "-c", "import pip; print(pip.__version__)"])
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "hooks"
        shutil.copytree(ROOT / "hooks", src, ignore=shutil.ignore_patterns(
            "*.egg-info", "build", "__pycache__", "Containerfile"))
        pip = [python, "-m", "pip", "--disable-pip-version-check", "wheel", "--quiet",
               "--only-binary", ":all:", "--no-binary", "dynamo-offloading-hooks",
               "--find-links", WHEEL_CACHE, "--wheel-dir", WHEEL_CACHE, "-c", constraint_file]
        wanted = [src, f"pip=={pip_version}"]
        # Offline first (warm cache); online when something is missing.
        offline = subprocess.run([str(c) for c in pip + ["--no-index", *wanted]], capture_output=True)
        if offline.returncode != 0:
            run("wheels: download the build backend", [
                python, "-m", "pip", "--disable-pip-version-check", "download", "--quiet", "--only-binary",
                ":all:", "--dest", WHEEL_CACHE, "setuptools>=61", "wheel"])
            run("wheels: pip wheel (online)", pip + wanted)
        # The exact set the resolver picks for the hooks, from the cache only.
        report = Path(tmp) / "report.json"
        run("wheels: resolve the closure", [
            python, "-m", "pip", "--disable-pip-version-check", "install", "--quiet", "--dry-run",
            "--ignore-installed", "--no-index", "--only-binary", ":all:", "--no-binary",
            "dynamo-offloading-hooks", "--find-links", WHEEL_CACHE, "-c", constraint_file,
            "--report", report, src], capture_output=True)
        resolved = json.loads(report.read_text())["install"]
    names = []
    for item in resolved:
        url = item["download_info"]["url"]
        name = item["metadata"]["name"]
        if name == "dynamo-offloading-hooks":  # the local build, not a cached file
            hooks = sorted(WHEEL_CACHE.glob("dynamo_offloading_hooks-*.whl"), key=lambda p: p.stat().st_mtime)
            shutil.copy2(hooks[-1], wheels)
            names.append(hooks[-1].name)
            continue
        path = Path(url.removeprefix("file://"))
        shutil.copy2(path, wheels)
        names.append(path.name)
    pip_wheel = f"pip-{pip_version}-py3-none-any.whl"
    shutil.copy2(WHEEL_CACHE / pip_wheel, wheels)
    for name in sorted(names):
        print(f"    {name}")
    print(f"    {pip_wheel} (runs the install; not installed)")
    versions = {canonical(item["metadata"]["name"]): item["metadata"]["version"] for item in resolved}
    mismatched = [f"{name} {version} (venv {pins[name]})" for name, version in versions.items()
                  if pins.get(name, version) != version]
    if mismatched:
        raise StepError(f"wheels: versions differ from the venv: {', '.join(mismatched)}")
    return names


# --- base image from Debian packages -------------------------------------------------------------------

def debian_mirror():
    """The Debian mirror (URIs of the main suite) from the host's apt sources."""
    texts = [p.read_text() for p in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
             if p.is_file() and p.suffix in ("", ".list", ".sources")]
    for text in texts:
        for m in re.finditer(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", text, re.M):  # one-line format
            if m.group(2) == SUITE:
                return m.group(1)
        for para in text.split("\n\n"):  # deb822 format
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", para, re.M))
            if SUITE in fields.get("Suites", "").split() and fields.get("URIs"):
                return fields["URIs"].split()[0]
    return "http://deb.debian.org/debian"


def dpkg_status(rootfs):
    """Installed packages of the rootfs: name -> (depends alternatives, provides)."""
    packages = {}
    for para in (rootfs / "var/lib/dpkg/status").read_text().split("\n\n"):
        fields = dict(re.findall(r"^(\w[\w-]*): ?(.*)$", para, re.M))
        if "install ok installed" not in fields.get("Status", ""):
            continue

        def names(value):
            return [[re.sub(r"[\s(:].*", "", alt.strip()) for alt in dep.split("|")]
                    for dep in value.split(",") if dep.strip()]

        deps = names(fields.get("Pre-Depends", "")) + names(fields.get("Depends", ""))
        provides = [p[0] for p in names(fields.get("Provides", ""))]
        packages[fields["Package"]] = (deps, provides)
    return packages


def kept_packages(packages):
    """KEEP and what it depends on (first installed alternative), without NOT_FOLLOWED."""
    providers = {}
    for name, (_, provides) in packages.items():
        for virtual in [name, *provides]:
            providers.setdefault(virtual, name)
    keep, todo = set(), [p for p in KEEP if p in packages]
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        for alternatives in packages[name][0]:
            if any(a in NOT_FOLLOWED for a in alternatives):
                continue
            found = next((providers[a] for a in alternatives if a in providers), None)
            if found:
                todo.append(found)
    return keep


def strip_rootfs(rootfs):
    """Purge the packages a Python runtime does not need, then docs, caches, locales and bytecode."""
    packages = dpkg_status(rootfs)
    keep = kept_packages(packages)
    purge = sorted(set(packages) - keep)
    # Their maintainer scripts would need the shell tools, perl and debconf purged alongside: skip them
    # (dpkg still removes the files, the conffiles and the status entries).
    for name in purge:
        for script in rootfs.glob(f"var/lib/dpkg/info/{name}[.:]*"):
            if script.name.endswith((".prerm", ".postrm")):
                script.unlink()
    log(f"base: keep {len(keep)} packages, purge {len(purge)}: {' '.join(purge)}")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive"}
    run("base: dpkg --purge", ["chroot", rootfs, "dpkg", "--purge", "--force-remove-essential",
                               "--force-depends", *purge], env=env, quiet=True)
    for pattern in [
        "var/cache/apt", "var/lib/apt", "var/cache/debconf", "var/log/*", "var/lib/dpkg/*-old",
        "usr/share/man", "usr/share/info", "usr/share/lintian", "usr/share/linda", "usr/share/bash-completion",
        "usr/share/locale", "usr/share/i18n", "usr/lib/locale/[!C]*", "usr/share/common-licenses",
        # glibc's iconv modules: Python has its own codecs.
        "usr/lib/x86_64-linux-gnu/gconv", "usr/lib/aarch64-linux-gnu/gconv",
        "etc/apt", "etc/cron.daily", "etc/logrotate.d", "etc/pam.d", "etc/security", "var/lib/pam",
        "root/.*", "tmp/*", "var/tmp/*",
    ]:
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    # Documentation, except the copyright files.
    for path in sorted((rootfs / "usr/share/doc").rglob("*"), reverse=True):
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                path.rmdir()
        elif path.name != "copyright":
            path.unlink()
    for cache in list(rootfs.glob("usr/lib/python3*/**/__pycache__")):
        shutil.rmtree(cache)
    (rootfs / "var/lib/apt/lists").mkdir(parents=True)  # empty, as after apt-get clean


def debootstrap_rootfs(rootfs, mirror):
    """debootstrap minbase with INCLUDE, upgraded from the -updates and -security suites."""
    run("base: debootstrap", ["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}",
                              SUITE, rootfs, mirror], quiet=True)
    security = re.sub(r"/debian/?$", "/debian-security", mirror)
    (rootfs / "etc/apt/sources.list").write_text(
        f"deb {mirror} {SUITE} main\ndeb {mirror} {SUITE}-updates main\ndeb {security} {SUITE}-security main\n")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive"}
    shutil.copy2("/etc/resolv.conf", rootfs / "etc/resolv.conf")
    run("base: apt-get update (updates, security)", ["chroot", rootfs, "apt-get", "update"], env=env, quiet=True)
    run("base: apt-get upgrade", ["chroot", rootfs, "apt-get", "-y", "-qq", "-o", "Dpkg::Use-Pty=0",
                                  "upgrade"], env=env, quiet=True)
    (rootfs / "etc/resolv.conf").write_text("")
    run("base: apt-get clean", ["chroot", rootfs, "apt-get", "clean"], env=env)


def base_key(mirror):
    recipe = json.dumps({"suite": SUITE, "mirror": mirror, "include": INCLUDE, "keep": KEEP,
                         "not_followed": sorted(NOT_FOLLOWED), "arch": os.uname().machine,
                         "code": [inspect.getsource(f) for f in (debootstrap_rootfs, strip_rootfs,
                                                                 kept_packages, dpkg_status)]})
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def base_image(refresh):
    """The Debian base as an image in buildah's storage, built (or reused) from the cached rootfs."""
    mirror = debian_mirror()
    key = base_key(mirror)
    ref = f"localhost/{IMAGE}-base:{key}"
    rootfs = WORK / f"base-{key}" / "rootfs"
    done = rootfs.parent / ".done"
    if refresh:
        shutil.rmtree(rootfs.parent, ignore_errors=True)
        subprocess.run(["buildah", "rmi", ref], capture_output=True)
    if not done.exists():
        log(f"base: debootstrap {SUITE} from {mirror} into {rootfs}")
        shutil.rmtree(rootfs.parent, ignore_errors=True)
        rootfs.mkdir(parents=True)
        started = time.monotonic()
        debootstrap_rootfs(rootfs, mirror)
        strip_rootfs(rootfs)
        check_libraries(rootfs)
        for old in WORK.glob("base-*"):
            if old != rootfs.parent:
                shutil.rmtree(old, ignore_errors=True)
        done.write_text(f"{time.monotonic() - started:.0f}s\n")
    else:
        log(f"base: cached rootfs {rootfs}")
    if subprocess.run(["buildah", "inspect", "--type", "image", ref], capture_output=True).returncode == 0:
        log(f"base: image {ref} exists")
        return ref
    log(f"base: import {rootfs} as {ref}")
    container = output("base: buildah from scratch", ["buildah", "from", "--name", f"{IMAGE}-base-{key}",
                                                      "scratch"])
    try:
        mount = output("base: buildah mount", ["buildah", "mount", container])
        run("base: copy the rootfs", ["cp", "-a", f"{rootfs}/.", mount])
        run("base: buildah config", ["buildah", "config", "--env", "LANG=C.UTF-8", "--cmd", "/bin/sh",
                                     "--label", f"org.opencontainers.image.description=Debian {SUITE} "
                                     "minbase with python3, stripped", container])
        run("base: buildah commit", ["buildah", "commit", "--quiet", "--rm", container, ref],
            stdout=subprocess.DEVNULL)
    except BaseException:
        subprocess.run(["buildah", "rm", container], capture_output=True)
        raise
    # Bases of earlier recipes (their images are gone: each build drops the one it replaces).
    names = output("base: buildah images", ["buildah", "images", "--format", "{{.Name}}:{{.Tag}}"]).split()
    for old in names:
        if old.startswith(f"localhost/{IMAGE}-base:") and old != ref:
            subprocess.run(["buildah", "rmi", old], capture_output=True)
    return ref


def check_libraries(rootfs):
    """Every shared library Python's extension modules and the kept binaries need is still there."""
    elves = [p for d in ("usr/lib/python3.11/lib-dynload", "usr/bin") for p in (rootfs / d).glob("*")
             if p.is_file() and not p.is_symlink() and p.read_bytes()[:4] == b"\x7fELF"]
    missing = set()
    for elf in elves:
        out = subprocess.run(["chroot", rootfs, "/usr/bin/ldd", "/" + str(elf.relative_to(rootfs))],
                             capture_output=True, text=True)
        missing |= {f"{elf.name}: {line.strip()}" for line in out.stdout.splitlines() if "not found" in line}
    if missing:
        raise StepError("base: libraries missing after the purge:\n  " + "\n  ".join(sorted(missing)))


# --- build and save ------------------------------------------------------------------------------------

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


# --- size report ---------------------------------------------------------------------------------------

def human(n):
    return f"{n / 1e6:7.1f} MB"


def size_report(archive, base, n_base):
    """Per layer: compressed (as pushed) and uncompressed size; the largest paths."""
    with tarfile.open(archive) as oci:
        def blob(descriptor):
            algo, digest = descriptor["digest"].split(":")
            return oci.extractfile(f"blobs/{algo}/{digest}")

        index = json.load(oci.extractfile("index.json"))
        manifest = json.load(blob(index["manifests"][0]))
        rows, paths = [], {}
        for i, layer in enumerate(manifest["layers"]):
            raw = blob(layer)
            stream = gzip.GzipFile(fileobj=raw) if "gzip" in layer["mediaType"] else raw
            size = 0
            with tarfile.open(fileobj=stream, mode="r|") as t:
                for member in t:
                    if member.isfile():
                        size += member.size
                        parts = member.name.lstrip("./").split("/")
                        key = "/".join(parts[:6]) if parts[0] == "opt" else "/".join(parts[:3])
                        paths[key] = paths.get(key, 0) + member.size
            made = f"base {base}" if i < n_base else "hooks: /opt/dynamo-hooks, user, bytecode"
            rows.append((layer["size"], size, made[:60]))
    print()
    print(f"{'layer':<62} {'compressed':>11} {'uncompressed':>13}")
    for compressed, size, made in rows:
        print(f"{made:<62} {human(compressed):>11} {human(size):>13}")
    print(f"{'total (' + str(len(rows)) + ' layers)':<62} {human(sum(r[0] for r in rows)):>11} "
          f"{human(sum(r[1] for r in rows)):>13}")
    print("\nlargest paths (uncompressed):")
    for path, size in sorted(paths.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  {human(size)}  /{path}")
    return sum(r[0] for r in rows), sum(r[1] for r in rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True, help="the image tag: version in chart/Chart.yaml")
    parser.add_argument("--engine", choices=["auto", "docker", "buildah"], default="auto",
                        help="auto: docker when `docker info` succeeds, else buildah")
    parser.add_argument("--refresh-base", action="store_true",
                        help="rebuild the Debian base (newer packages) even when its cache is there")
    args = parser.parse_args(argv)
    engine = args.engine if args.engine != "auto" else ("docker" if docker_available() else "buildah")
    if engine == "buildah" and os.geteuid() != 0:
        print("build_image: the buildah path (debootstrap, chroot) needs root", file=sys.stderr)
        return 1
    started = time.monotonic()
    try:
        build_wheels(sys.executable)
        archive, base, n_base = build(args.version, engine, args.refresh_base)
        size_report(archive, base, n_base)
    except StepError as e:
        print(f"\nbuild_image: FAILED at {e}", file=sys.stderr)
        return 1
    print(f"\n{archive.relative_to(ROOT)} ({engine}) in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
