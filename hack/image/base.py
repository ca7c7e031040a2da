"""The base image from Debian packages, without a Docker engine: debootstrap minbase with python3, stripped
to python3's dependency closure, cached by its recipe and imported into buildah's storage."""

import hashlib
import inspect
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from hack.image.steps import IMAGE, WORK, StepError, log, output, run

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
